"""Datasets: the Extreme Classification Repository text format, the Dataset record, and a synthetic generator.

File format (``train.txt`` / ``test.txt``), 0-based ids::

    N D L                      <- header: points, features, labels
    3,17 0:0.5 12:1            <- labels, then feature:value pairs
     4:1 9:0.25                <- a point without labels starts with a space
    5,8                        <- a point without features

A dataset directory holds ``train.txt``, ``test.txt`` and optionally ``labels.txt`` and
``features.txt`` (the name of label / feature j on line j+1).

Readers validate everything and raise ``DatasetFormatError`` naming the file, the line and
the problem; nothing is half-loaded. ``generate`` makes a seeded synthetic dataset with the
structure real XMC data has (power-law label frequencies, latent label clusters, tf-idf
features), so every demo and test can run without downloads::

    ds = generate(**SAMPLE_PRESET)
    save_dataset(ds, "sample_data")
    ds = load_dataset("sample_data")
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.errors import ConfigError, DatasetFormatError

# ----------------------------------------------------------------------------
# XC sparse text format

_MAX_DIM = 2**31 - 1                    # ids must fit int32 indices
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ID = r"[0-9]{1,18}"                    # longer ids are out of range anyway; fit int64
_VAL = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"  # unambiguous: no backtracking blow-up
_LINE_RE = re.compile(rf"(?:{_ID}(?:,{_ID})*)?(?: +{_ID}:{_VAL})* *")
_ID_RE = re.compile(r"[0-9]+")
_VAL_RE = re.compile(_VAL)


def _read_lines(path):
    """Read a text file as a list of lines (no line ends); reject binary and non-UTF-8 data."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(name, None, "no such file") from None
    except IsADirectoryError:
        raise DatasetFormatError(name, None, "is a directory, expected a file") from None
    if not data:
        raise DatasetFormatError(name, None, "empty file")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DatasetFormatError(name, data.count(b"\n", 0, nul) + 1, "binary data (NUL byte), not a text file")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")         # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetFormatError(name, line, f"not UTF-8 text (byte 0x{data[e.start]:02x})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()                     # the final line end
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def _parse_header(name, line):
    """'N D L' -> (N, D, L), each a positive int."""
    tokens = line.split()
    if len(tokens) != 3:
        raise DatasetFormatError(name, 1, f"header must be 'num_points num_features num_labels', got {line!r}")
    for what, tok in zip(("num_points", "num_features", "num_labels"), tokens):
        if not _ID_RE.fullmatch(tok):
            raise DatasetFormatError(name, 1, f"{what} must be a positive integer, got {tok!r}")
        if not 1 <= int(tok) <= _MAX_DIM:
            raise DatasetFormatError(name, 1, f"{what} must be in [1, {_MAX_DIM}], got {tok}")
    return tuple(int(t) for t in tokens)


def _split_point(line):
    """'l1,l2 f:v f:v' -> ('l1,l2', 'f:v f:v'); a line starting with a space has no labels."""
    if line[:1] == " " or not line:
        return "", line
    labels, _, features = line.partition(" ")
    return labels, features


def _line_problem(line, num_features, num_labels):
    """The first thing wrong with one point line, as a message, or None if it is valid.

    The slow path: runs only once the fast path has found that something is wrong.
    """
    labels, features = _split_point(line)
    seen = set()
    for tok in labels.split(",") if labels else ():
        if not _ID_RE.fullmatch(tok):
            hint = " (a point without labels starts with a space)" if ":" in tok else ""
            return f"bad label id {tok!r}, expected a non-negative integer{hint}"
        lab = int(tok)
        if lab >= num_labels:
            return f"label id {lab} >= num_labels {num_labels}"
        if lab in seen:
            return f"duplicate label id {lab}"
        seen.add(lab)
    seen = set()
    for tok in features.split(" "):
        if not tok:
            continue
        fid, colon, val = tok.partition(":")
        if not colon:
            return f"bad feature {tok!r}, expected id:value"
        if not _ID_RE.fullmatch(fid):
            return f"bad feature id {fid!r} in {tok!r}, expected a non-negative integer"
        if not _VAL_RE.fullmatch(val):
            if val.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                return f"value {val!r} in {tok!r} is not finite"
            return f"bad value {val!r} in {tok!r}"
        if abs(float(val)) > _FLOAT32_MAX:
            return f"value {val} in {tok!r} is out of float32 range"
        f = int(fid)
        if f >= num_features:
            return f"feature id {f} >= num_features {num_features}"
        if f in seen:
            return f"duplicate feature id {f}"
        seen.add(f)
    return None


def _raise_first_problem(name, points, num_features, num_labels):
    """Scan the point lines in order and raise on the first bad one."""
    for i, line in enumerate(points):
        problem = _line_problem(line, num_features, num_labels)
        if problem is not None:
            raise DatasetFormatError(name, i + 2, problem)
    raise AssertionError(f"{name}: fast and slow parsers disagree")  # a bug in this module


def _has_duplicates(M):
    """Whether some row of a csr matrix with sorted indices repeats a column."""
    rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    return bool(np.any((np.diff(M.indices) == 0) & (np.diff(rows) == 0)))


def _parse_points(name, points, D, L):
    """The N point lines -> (X, Y), as read_xc returns them.

    Fast path: a regex per line, then bulk numpy conversion and range/duplicate checks. On
    any doubt the slow path rescans line by line and raises on the first problem.
    """
    N = len(points)
    for line in points:
        if not _LINE_RE.fullmatch(line):
            _raise_first_problem(name, points, D, L)
    split = [_split_point(line) for line in points]
    label_fields = [lab for lab, _ in split if lab]
    n_labels = np.array([lab.count(",") + 1 if lab else 0 for lab, _ in split], dtype=np.int64)
    n_features = np.array([feat.count(":") for _, feat in split], dtype=np.int64)
    labels = np.array(",".join(label_fields).split(",") if label_fields else [], dtype=np.int64)
    pairs = " ".join(feat for _, feat in split).replace(":", " ").split()
    fids = np.array(pairs[0::2], dtype=np.int64)
    vals = np.array(pairs[1::2], dtype=np.float64)
    if (labels.size and labels.max() >= L) or (fids.size and fids.max() >= D) \
            or not np.all(np.abs(vals) <= _FLOAT32_MAX):
        _raise_first_problem(name, points, D, L)

    X = sp.csr_matrix((vals.astype(np.float32), fids, np.concatenate([[0], np.cumsum(n_features)])), shape=(N, D))
    Y = sp.csr_matrix((np.ones(labels.size, np.float32), labels, np.concatenate([[0], np.cumsum(n_labels)])),
                      shape=(N, L))
    X.sort_indices()
    Y.sort_indices()
    if _has_duplicates(X) or _has_duplicates(Y):
        _raise_first_problem(name, points, D, L)
    return X, Y


def read_xc(path):
    """Read a file in the Extreme Classification Repository sparse format.

    Parameters
    ----------
    path : str or Path
        The file; it is named as given in error messages.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (N, D), float32
        Feature values, sorted indices.
    Y : scipy.sparse.csr_matrix of shape (N, L), float32
        Ones where a point has a label, sorted indices.

    Raises
    ------
    DatasetFormatError
        On any malformation, naming the file, the 1-based line and the problem.
    """
    name = str(path)
    lines = _read_lines(path)
    N, D, L = _parse_header(name, lines[0])
    points = lines[1:N + 1]
    if len(points) < N:
        raise DatasetFormatError(name, None, f"expected {N} points, found {len(points)}")
    X, Y = _parse_points(name, points, D, L)
    for i, line in enumerate(lines[N + 1:], start=N + 2):
        if line.strip():
            raise DatasetFormatError(name, i, f"extra line after the {N} points the header announces")
    return X, Y


def _format_values(values):
    """Shortest '%.{6..9}g' strings that read back as the same float32 values."""
    values = np.asarray(values, dtype=np.float32)
    wide = values.astype(np.float64).tolist()
    out = ["%.6g" % v for v in wide]
    for digits in (7, 8, 9):            # 9 significant digits always round-trip a float32
        bad = np.flatnonzero(np.array(out, dtype=np.float64).astype(np.float32) != values)
        for i in bad.tolist():
            out[i] = f"%.{digits}g" % wide[i]
    return out


def _as_csr(M, what):
    """A canonical float32 csr copy of a 2-D matrix (sparse or dense), explicit zeros dropped."""
    M = sp.csr_matrix(M, dtype=np.float32, copy=True)
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    if not np.all(np.isfinite(M.data)):
        raise ValueError(f"{what} has non-finite values")
    return M


def write_xc(path, X, Y):
    """Write features and labels in the XC sparse format, byte-for-byte deterministic.

    Values are written with the fewest significant digits (6 to 9) that read back as the
    same float32, so ``read_xc(write_xc(X, Y))`` gives X and Y back exactly (explicit zeros
    dropped); 1.0 is written ``1``.

    Parameters
    ----------
    path : str or Path
    X : sparse or dense matrix of shape (N, D)
        Feature values; N >= 1.
    Y : sparse or dense matrix of shape (N, L)
        Nonzero entries are the labels.
    """
    X, Y = _as_csr(X, "X"), _as_csr(Y, "Y")
    N, D = X.shape
    if Y.shape[0] != N:
        raise ValueError(f"X has {N} rows but Y has {Y.shape[0]}")
    if N < 1 or D < 1 or Y.shape[1] < 1:
        raise ValueError(f"cannot write empty matrices: X {X.shape}, Y {Y.shape}")
    values = _format_values(X.data)
    tokens = [f"{f}:{v}" for f, v in zip(X.indices.tolist(), values)]
    label_ids = [str(lab) for lab in Y.indices.tolist()]
    xp, yp = X.indptr.tolist(), Y.indptr.tolist()
    out = [f"{N} {D} {Y.shape[1]}"]
    for i in range(N):
        labels = ",".join(label_ids[yp[i]:yp[i + 1]])
        features = " ".join(tokens[xp[i]:xp[i + 1]])
        out.append(f"{labels} {features}" if features else labels)
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def read_names(path, expected_count, kind):
    """Read one name per line (UTF-8; names may contain spaces).

    Parameters
    ----------
    path : str or Path
    expected_count : int
        The number of names the dataset needs (its number of labels or features).
    kind : str
        What the names are, for messages: "label" or "feature".

    Returns
    -------
    names : list of str of length expected_count
    """
    names = _read_lines(path)
    if len(names) != expected_count:
        raise DatasetFormatError(str(path), None, f"expected {expected_count} {kind} names, found {len(names)}")
    return names


def write_names(path, names):
    """Write one name per line; names must not contain line breaks."""
    names = [str(n) for n in names]
    for i, n in enumerate(names):
        if "\n" in n or "\r" in n:
            raise ValueError(f"name {i} contains a line break: {n!r}")
    Path(path).write_text("".join(n + "\n" for n in names), encoding="utf-8")


# ----------------------------------------------------------------------------
# Dataset

@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of an XMC dataset. Matrices are float32 csr with sorted indices."""
    name: str
    X_train: sp.csr_matrix              # (n_train, n_features)
    Y_train: sp.csr_matrix              # (n_train, n_labels), ones
    X_test: sp.csr_matrix               # (n_test, n_features)
    Y_test: sp.csr_matrix               # (n_test, n_labels), ones
    label_names: list[str] | None = None     # n_labels names, or None
    feature_names: list[str] | None = None   # n_features names, or None

    def __post_init__(self):
        shapes = [M.shape for M in (self.X_train, self.Y_train, self.X_test, self.Y_test)]
        (n, d), (n2, l), (m, d2), (m2, l2) = shapes
        if n != n2 or m != m2 or d != d2 or l != l2:
            raise ValueError(f"inconsistent shapes X_train, Y_train, X_test, Y_test: {shapes}")
        for names, count, kind in ((self.label_names, l, "label"), (self.feature_names, d, "feature")):
            if names is not None and len(names) != count:
                raise ValueError(f"{len(names)} {kind} names for {count} {kind}s")

    @property
    def n_features(self):
        return self.X_train.shape[1]

    @property
    def n_labels(self):
        return self.Y_train.shape[1]

    @property
    def n_train(self):
        return self.X_train.shape[0]

    @property
    def n_test(self):
        return self.X_test.shape[0]

    def summary(self):
        """Counts and densities, for a first look (averages over the training points)."""
        positives = np.diff(self.Y_train.tocsc().indptr)
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "n_labels": self.n_labels,
            "avg_labels_per_point": self.Y_train.nnz / self.n_train,
            "avg_features_per_point": self.X_train.nnz / self.n_train,
            "labels_without_train_positives": int(np.sum(positives == 0)),
        }


def load_dataset(path):
    """Load a dataset directory: train.txt, test.txt, optional labels.txt and features.txt.

    Returns
    -------
    Dataset
        Named after the directory.

    Raises
    ------
    DatasetFormatError
        If the directory or a required file is missing, a file is malformed, or the
        headers of train.txt and test.txt disagree on features or labels.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetFormatError(str(path), None, "no such dataset directory")
    for required in ("train.txt", "test.txt"):
        if not (root / required).is_file():
            raise DatasetFormatError(str(root / required), None, "missing file (a dataset needs train.txt, test.txt)")
    X_train, Y_train = read_xc(root / "train.txt")
    X_test, Y_test = read_xc(root / "test.txt")
    (_, D), (_, L) = X_train.shape, Y_train.shape
    if X_test.shape[1] != D or Y_test.shape[1] != L:
        raise DatasetFormatError(str(root / "test.txt"), 1, f"header has {X_test.shape[1]} features and "
                                 f"{Y_test.shape[1]} labels but train.txt has {D} and {L}")
    label_names = read_names(root / "labels.txt", L, "label") if (root / "labels.txt").exists() else None
    feature_names = read_names(root / "features.txt", D, "feature") if (root / "features.txt").exists() else None
    return Dataset(root.resolve().name, X_train, Y_train, X_test, Y_test, label_names, feature_names)


def save_dataset(dataset, path):
    """Write a dataset in the layout load_dataset reads (creating the directory)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    write_xc(root / "train.txt", dataset.X_train, dataset.Y_train)
    write_xc(root / "test.txt", dataset.X_test, dataset.Y_test)
    if dataset.label_names is not None:
        write_names(root / "labels.txt", dataset.label_names)
    if dataset.feature_names is not None:
        write_names(root / "features.txt", dataset.feature_names)


def normalize_rows(X):
    """Scale each row of X to unit l2 norm (zero rows stay zero).

    Parameters
    ----------
    X : sparse matrix of shape (N, D)

    Returns
    -------
    scipy.sparse.csr_matrix of shape (N, D), float32, a new matrix.
    """
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.sum_duplicates()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    norms = np.sqrt(np.bincount(rows, weights=X.data.astype(np.float64) ** 2, minlength=X.shape[0]))
    norms[norms == 0] = 1.0
    X.data = (X.data / norms[rows]).astype(np.float32)
    return X


# ----------------------------------------------------------------------------
# Synthetic generator

SAMPLE_PRESET = dict(n_points=4000, n_features=1000, n_labels=2000, n_clusters=50, alpha=1.0, mean_labels=4.0,
                     mean_features=30.0, test_fraction=0.25, noise=0.1, seed=0, name="sample")

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
    """Raise ConfigError naming the first parameter of generate() that is out of range."""
    rules = [
        ("n_points", _is_int(p["n_points"]) and 2 <= p["n_points"] <= _MAX_DIM, "an integer >= 2"),
        ("n_features", _is_int(p["n_features"]) and 1 <= p["n_features"] <= _MAX_DIM, "an integer >= 1"),
        ("n_labels", _is_int(p["n_labels"]) and 1 <= p["n_labels"] <= _MAX_DIM, "an integer >= 1"),
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


def generate(n_points=4000, n_features=1000, n_labels=2000, n_clusters=50, alpha=1.0, mean_labels=4.0,
             mean_features=30.0, test_fraction=0.25, noise=0.1, seed=0, name="synthetic"):
    """Make a synthetic XMC dataset with the structure of real ones, fully determined by its arguments.

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
    n_points : int, default=4000
        Train plus test points, >= 2.
    n_features : int, default=1000
    n_labels : int, default=2000
    n_clusters : int, default=50
        In [1, n_labels]. A point cannot get more labels than its clusters hold.
    alpha : float, default=1.0
        Power-law exponent of label popularity, >= 0; 0 makes labels equally popular.
    mean_labels : float, default=4.0
    mean_features : float, default=30.0
    test_fraction : float, default=0.25
    noise : float, default=0.1
        Share of feature draws from the background, in [0, 1].
    seed : int, default=0
    name : str, default="synthetic"

    Returns
    -------
    Dataset
        Label names like ``c07_label_0123`` (cluster 7, label 123), feature names like ``f0042``.

    Raises
    ------
    ConfigError
        If a parameter is out of range, naming it and its value.
    """
    _check_params(locals())
    N, D, L, C = n_points, n_features, n_labels, n_clusters
    rng = np.random.default_rng(seed)

    # labels: popularity and cluster
    popularity = (np.arange(1, L + 1, dtype=np.float64) ** -float(alpha))[rng.permutation(L)]  # (L,)
    cluster_of = rng.permutation(np.arange(L) % C)                                          # (L,)
    cluster_size = np.bincount(cluster_of, minlength=C)                                     # (C,)
    cluster_weight = np.bincount(cluster_of, weights=popularity, minlength=C)               # (C,)

    # features: cluster vocabularies (C, V), label signatures (L, S), Zipfian background
    home = max(1, D // C)                                        # own block; blocks are disjoint when D >= C
    V = min(D, max(home + math.ceil(home / 4), math.ceil(mean_features)))
    blocks = (np.arange(C)[:, None] * home + np.arange(home)) % D
    vocab = np.concatenate([rng.permutation(D)[blocks], rng.integers(0, D, (C, V - home))], axis=1)
    S = int(np.clip(round(mean_features / 5), 2, V))
    signature = vocab[cluster_of[:, None], rng.integers(0, V, (L, S))]
    background = rng.permutation(D)                              # background[r]: the feature of rank r
    background_cum = np.cumsum(np.arange(1, D + 1, dtype=np.float64) ** -1.0)

    # points: clusters and labels
    n_clusters_of = 1 + (rng.random(N) < _TWO_CLUSTERS)                                      # (N,)
    clusters = rng.choice(C, size=(N, 2), p=cluster_weight / cluster_weight.sum())           # (N, 2)
    second = (n_clusters_of == 2) & (clusters[:, 0] != clusters[:, 1])
    available = cluster_size[clusters[:, 0]] + np.where(second, cluster_size[clusters[:, 1]], 0)
    if mean_labels >= 1 - _NO_LABELS:
        n_labels_of = 1 + rng.poisson(mean_labels / (1 - _NO_LABELS) - 1, N)
        n_labels_of[rng.random(N) < _NO_LABELS] = 0
    else:                                                        # too few labels for "1 + Poisson"
        n_labels_of = rng.poisson(mean_labels, N)
    want = np.minimum(n_labels_of, available).astype(np.int64)
    y_indptr, y_indices = _draw_labels(rng, clusters, n_clusters_of, want, popularity, cluster_of, cluster_size)
    n_labels_of = np.diff(y_indptr)

    # points: features, drawn with replacement from a mixture, then the first distinct ones kept
    n_features_of = np.clip(rng.poisson(rng.gamma(4.0, mean_features / 4.0, N)), 1, D)     # (N,)
    owner = np.repeat(np.arange(N), _OVERDRAW * n_features_of + 2)                          # (T,)
    T = owner.size
    source = rng.random(T)
    from_noise = source < noise
    from_signature = ~from_noise & (source < noise + (1 - noise) * _SIGNATURE_SHARE) & (n_labels_of[owner] > 0)
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

    n_train = N - min(max(round(N * test_fraction), 1), N - 1)
    wc, wl, wf = max(2, len(str(C - 1))), max(4, len(str(L - 1))), max(4, len(str(D - 1)))
    label_names = [f"c{c:0{wc}d}_label_{lab:0{wl}d}" for lab, c in enumerate(cluster_of.tolist())]
    feature_names = [f"f{f:0{wf}d}" for f in range(D)]
    return Dataset(name, X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], label_names, feature_names)
