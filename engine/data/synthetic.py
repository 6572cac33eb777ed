"""A seeded synthetic XMC dataset with the structure real ones have (power-law label frequencies,
latent label clusters, tf-idf features), so every demo and test runs without downloads.

The generator's parameters are declared once, in GeneratorConfig (defaults, help, checks); a
preset is a named set of overrides of those defaults, shared by the CLI and the app::

    ds = generate(**GENERATOR_PRESETS["sample"])      # python -m engine generate --preset sample
    save_dataset(ds, "sample_data")                    # ... --out sample_data: the bundled dataset
"""

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

from engine.config import setting
from engine.errors import ConfigError

from .dataset import Dataset, normalize_rows
from .xc import MAX_DIM

_TWO_CLUSTERS = 0.3     # share of points drawn from two clusters rather than one
_NO_LABELS = 0.01       # share of points without labels (when mean_labels allows)
_SIGNATURE_SHARE = 0.5  # share of a point's non-noise feature draws taken from its labels' signatures
_OVERDRAW = 3           # feature draws per wanted distinct feature; repeats become term frequencies
_LABEL_ROUNDS = 12      # rounds of label draws for points still short of distinct labels


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _check_params(p):
    """Raise ConfigError naming the first parameter that is out of range."""
    rules = [
        ("n_points", _is_int(p["n_points"]) and 2 <= p["n_points"] <= MAX_DIM, "an integer >= 2"),
        ("n_features", _is_int(p["n_features"]) and 1 <= p["n_features"] <= MAX_DIM, "an integer >= 1"),
        ("n_labels", _is_int(p["n_labels"]) and 1 <= p["n_labels"] <= MAX_DIM, "an integer >= 1"),
        ("n_clusters", _is_int(p["n_clusters"]) and _is_int(p["n_labels"]) and 1 <= p["n_clusters"] <= p["n_labels"],
         f"an integer in [1, n_labels={p['n_labels']!r}]"),
        ("alpha", _is_real(p["alpha"]) and p["alpha"] >= 0, "a number >= 0"),
        ("mean_labels", _is_real(p["mean_labels"]) and p["mean_labels"] > 0, "a number > 0"),
        ("mean_features", _is_real(p["mean_features"]) and p["mean_features"] >= 1, "a number >= 1"),
        ("test_fraction", _is_real(p["test_fraction"]) and 0 < p["test_fraction"] < 1, "a number in (0, 1)"),
        ("noise", _is_real(p["noise"]) and 0 <= p["noise"] <= 1, "a number in [0, 1]"),
        ("seed", _is_int(p["seed"]) and p["seed"] >= 0, "an integer >= 0"),
        ("name", isinstance(p["name"], str) and p["name"].strip() != "", "a non-empty string"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise ConfigError(f"{name} must be {rule}, got {p[name]!r}")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """The parameters of generate(), checked on construction (ConfigError naming the first bad one)."""
    n_points: int = setting(4000, "train plus test points")
    n_features: int = setting(1000, "features D")
    n_labels: int = setting(2000, "labels L")
    n_clusters: int = setting(50, "latent label clusters; a point draws its labels from 1 or 2 of them")
    alpha: float = setting(1.0, "power-law exponent of label popularity", zero="0 = all labels equally popular")
    mean_labels: float = setting(4.0, "average labels per point")
    mean_features: float = setting(30.0, "average distinct features per point")
    test_fraction: float = setting(0.25, "share of the points in the test split")
    noise: float = setting(0.1, "share of feature draws from the background (Zipfian) rather than the clusters")
    seed: int = setting(0, "seeds every draw")
    name: str = setting("synthetic", "the dataset's name")

    def __post_init__(self):
        _check_params(vars(self))


# named overrides of GeneratorConfig's defaults (python -m engine generate --preset NAME, the app);
# "sample" made the bundled sample_data/
GENERATOR_PRESETS = {"sample": dict(name="sample")}


def _first_distinct(owner, value, want, n_values):
    """Per owner, the first want[owner] distinct values in draw order, and how often each was drawn.

    owner, value : (T,) int64 draws; want : (n_owners,) int64.
    Returns (owner, value, count) of the kept pairs, sorted by owner, then by first draw.
    """
    key, first, count = np.unique(owner * n_values + value, return_index=True, return_counts=True)
    order = np.lexsort((first, key // n_values))
    key, count = key[order], count[order]
    own = key // n_values
    rank = np.arange(key.size) - np.searchsorted(own, own)   # position among the owner's values
    keep = rank < want[own]
    return own[keep], key[keep] % n_values, count[keep]


def _draw_labels(rng, clusters, n_clusters_of, want, popularity, cluster_of, cluster_size):
    """Draw want[i] distinct labels for point i from its clusters, weighted by popularity.

    Draws with replacement and keeps the first distinct labels; points still short draw
    again, for a few rounds (a cluster dominated by one label may leave a point short).
    Returns (indptr, indices), the labels of each point in csr layout.
    """
    N, L = want.size, popularity.size
    by_cluster = np.argsort(cluster_of, kind="stable")                    # labels grouped by cluster
    cum = np.cumsum(popularity[by_cluster])
    end = np.cumsum(cluster_size)
    start = end - cluster_size
    lo, hi = np.where(start > 0, cum[start - 1], 0.0), cum[end - 1]      # popularity range of each cluster
    owners = values = own = labels = np.zeros(0, np.int64)
    for _ in range(_LABEL_ROUNDS):
        short = want - np.bincount(own, minlength=N)
        active = np.flatnonzero(short > 0)
        if active.size == 0:
            break
        draw = np.repeat(active, 2 * short[active] + 2)                  # (T,) point of each draw
        c = clusters[draw, (rng.random(draw.size) * n_clusters_of[draw]).astype(np.int64)]
        pos = np.searchsorted(cum, lo[c] + rng.random(draw.size) * (hi[c] - lo[c]), side="right")
        owners = np.concatenate([owners, draw])
        values = np.concatenate([values, by_cluster[np.clip(pos, start[c], end[c] - 1)]])
        own, labels, _ = _first_distinct(owners, values, want, L)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(own, minlength=N))])
    return indptr, labels




def generate(**params):
    """Make a synthetic XMC dataset with the structure of real ones, fully determined by its parameters.

    - Label popularity follows a power law, rank^-alpha, the ranks shuffled over labels.
    - Each label belongs to one of n_clusters latent clusters (of equal size, up to one).
      A cluster has a feature vocabulary (its own block of features plus a few shared
      ones); a label has a small signature of features inside its cluster's vocabulary.
    - A point picks 1 or 2 clusters (by popularity), then about mean_labels distinct labels
      from them (1 + Poisson, by popularity; 1% of points have none), then about
      mean_features distinct features: draws from its labels' signatures and its clusters'
      vocabularies, and a share `noise` of background (Zipfian) draws. Repeated draws are
      term frequencies; values are tf-idf, each row l2-normalised.
    - Train and test points are drawn alike: the last round(n_points * test_fraction) are the test set.

    Parameters
    ----------
    **params
        Fields of GeneratorConfig (its defaults for the others). A point cannot get more
        labels than its clusters hold.

    Returns
    -------
    Dataset
        Label names like ``c07_label_0123`` (cluster 7, label 123), feature names like ``f0042``.

    Raises
    ------
    ConfigError
        If a parameter is out of range, naming it and its value.
    """
    cfg = GeneratorConfig(**params)
    N, D, L, C = cfg.n_points, cfg.n_features, cfg.n_labels, cfg.n_clusters
    rng = np.random.default_rng(cfg.seed)

    # labels: popularity and cluster
    popularity = (np.arange(1, L + 1, dtype=np.float64) ** -float(cfg.alpha))[rng.permutation(L)]  # (L,)
    cluster_of = rng.permutation(np.arange(L) % C)                                          # (L,)
    cluster_size = np.bincount(cluster_of, minlength=C)                                     # (C,)
    cluster_weight = np.bincount(cluster_of, weights=popularity, minlength=C)               # (C,)

    # features: cluster vocabularies (C, V), label signatures (L, S), Zipfian background
    home = max(1, D // C)                                        # own block; blocks are disjoint when D >= C
    V = min(D, max(home + math.ceil(home / 4), math.ceil(cfg.mean_features)))
    blocks = (np.arange(C)[:, None] * home + np.arange(home)) % D
    vocab = np.concatenate([rng.permutation(D)[blocks], rng.integers(0, D, (C, V - home))], axis=1)
    S = int(np.clip(round(cfg.mean_features / 5), 2, V))
    signature = vocab[cluster_of[:, None], rng.integers(0, V, (L, S))]
    background = rng.permutation(D)                              # background[r]: the feature of rank r
    background_cum = np.cumsum(np.arange(1, D + 1, dtype=np.float64) ** -1.0)

    # points: clusters and labels
    n_clusters_of = 1 + (rng.random(N) < _TWO_CLUSTERS)                                      # (N,)
    clusters = rng.choice(C, size=(N, 2), p=cluster_weight / cluster_weight.sum())           # (N, 2)
    second = (n_clusters_of == 2) & (clusters[:, 0] != clusters[:, 1])
    available = cluster_size[clusters[:, 0]] + np.where(second, cluster_size[clusters[:, 1]], 0)
    if cfg.mean_labels >= 1 - _NO_LABELS:
        n_labels_of = 1 + rng.poisson(cfg.mean_labels / (1 - _NO_LABELS) - 1, N)
        n_labels_of[rng.random(N) < _NO_LABELS] = 0
    else:                                                        # too few labels for "1 + Poisson"
        n_labels_of = rng.poisson(cfg.mean_labels, N)
    want = np.minimum(n_labels_of, available).astype(np.int64)
    y_indptr, y_indices = _draw_labels(rng, clusters, n_clusters_of, want, popularity, cluster_of, cluster_size)
    n_labels_of = np.diff(y_indptr)

    # points: features, drawn with replacement from a mixture, then the first distinct ones kept
    n_features_of = np.clip(rng.poisson(rng.gamma(4.0, cfg.mean_features / 4.0, N)), 1, D)   # (N,)
    owner = np.repeat(np.arange(N), _OVERDRAW * n_features_of + 2)                          # (T,)
    T = owner.size
    source = rng.random(T)
    from_noise = source < cfg.noise
    from_signature = ~from_noise & (source < cfg.noise + (1 - cfg.noise) * _SIGNATURE_SHARE) & (n_labels_of[owner] > 0)
    cluster = clusters[owner, (rng.random(T) * n_clusters_of[owner]).astype(np.int64)]
    feature = vocab[cluster, rng.integers(0, V, T)]
    if y_indices.size:
        pick = np.minimum(y_indptr[owner] + (rng.random(T) * n_labels_of[owner]).astype(np.int64), y_indices.size - 1)
        feature = np.where(from_signature, signature[y_indices[pick], rng.integers(0, S, T)], feature)
    rank = np.searchsorted(background_cum, rng.random(T) * background_cum[-1], side="right").clip(0, D - 1)
    feature = np.where(from_noise, background[rank], feature)
    own, fid, tf = _first_distinct(owner, feature, n_features_of, D)

    # tf-idf values, rows l2-normalised
    idf = np.log((1 + N) / (1 + np.bincount(fid, minlength=D))) + 1.0
    x_indptr = np.concatenate([[0], np.cumsum(np.bincount(own, minlength=N))])
    X = normalize_rows(sp.csr_matrix(((1 + np.log(tf)) * idf[fid], fid, x_indptr), shape=(N, D)))
    X.sort_indices()
    Y = sp.csr_matrix((np.ones(y_indices.size, np.float32), y_indices, y_indptr), shape=(N, L))
    Y.sort_indices()

    n_train = N - min(max(round(N * cfg.test_fraction), 1), N - 1)
    wc, wl, wf = max(2, len(str(C - 1))), max(4, len(str(L - 1))), max(4, len(str(D - 1)))
    label_names = [f"c{c:0{wc}d}_label_{lab:0{wl}d}" for lab, c in enumerate(cluster_of.tolist())]
    feature_names = [f"f{f:0{wf}d}" for f in range(D)]
    return Dataset(cfg.name, X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], label_names, feature_names)
