"""The tail measured: a run's correct predictions and recall per label-frequency bin, as XMC papers
draw them, and the propensity constants PSP@k weights the tail with.

Labels are sorted by training frequency N_l (most frequent first, ties by label id) and cut into
n_bins bins of (nearly) equal label counts: bin 1 holds the most frequent tenth of the labels,
bin 10 the rarest (with 10 bins). With hits(i) = top_k(i) ∩ y_i the correct top-k predictions of
test point i, and b(l) the bin of label l, each bin gets

    hit_share_b  = |{(i, l) : l in hits(i), b(l) = b}|  /  Σ_i |hits(i)|
    recall_b     = |{(i, l) : l in hits(i), b(l) = b}|  /  |{(i, l) : y_il = 1, b(l) = b}|
    pair_share_b = |{(i, l) : y_il = 1, b(l) = b}|      /  |{(i, l) : y_il = 1}|

hit_share says where a run's correct answers come from, pair_share where the test's answers are
(a run that found every bin equally well would match it), recall_b how much of each bin it finds.
A share or recall with nothing to divide by is NaN.

    top = predict_run(run, k=5)                                # (N_test, 5), the run's checkpoint
    rows = tail_by_frequency(ds.Y_train, ds.Y_test, top, k=5)  # one dict per bin
    A, B = PROPENSITY_CONSTANTS["Amazon"]                      # for engine.inv_propensity(Y, A, B)
"""

import numbers

import numpy as np

from .errors import ConfigError, RunNotFoundError
from .metrics import _canonical, _check, _hits      # the metrics' own validation and hit test
from .train import Trainer

# the (A, B) of the propensity model p_l = 1 / (1 + C·exp(-A·log(N_l + B))) used with each kind of
# dataset (Jain, Prabhu and Varma 2016; engine.metrics.propensity)
PROPENSITY_CONSTANTS = {"Amazon": (0.6, 2.6), "Wikipedia": (0.5, 0.4), "others": (0.55, 1.5)}


def frequency_bins(Y_train, n_bins=10):
    """The bin of each label, shape (L,) int64 in [0, n_bins): labels sorted by training frequency
    (descending, ties by id) and cut into n_bins runs of nearly equal length (the first L mod n_bins
    bins one label longer). Y_train: scipy.sparse (N, L), nonzero = relevant; 1 <= n_bins <= L."""
    Y = _canonical(Y_train, "Y_train")
    L = Y.shape[1]
    if not isinstance(n_bins, numbers.Integral) or isinstance(n_bins, bool) or not 1 <= n_bins <= L:
        raise ConfigError(f"n_bins must be an integer in [1, L={L}], got {n_bins!r}")
    counts = np.bincount(Y.indices, minlength=L)                        # (L,) N_l
    order = np.lexsort((np.arange(L), -counts))                         # most frequent first
    bins = np.empty(L, dtype=np.int64)
    bins[order] = np.repeat(np.arange(n_bins), [len(c) for c in np.array_split(order, n_bins)])
    return bins


def tail_by_frequency(Y_train, Y_test, top, k=5, n_bins=10):
    """Per frequency bin (frequency_bins of Y_train), the measures of the module docstring at k.

    Y_train: sparse (N_train, L); Y_test: sparse (N_test, L); top: int (N_test, K), K >= k, ranked
    best first, -1 = no prediction. Returns n_bins dicts, bin 1 (most frequent) first: "bin" (1-based),
    "labels", "min_count" and "max_count" (the training frequencies it spans), "test_pairs",
    "hits", "hit_share", "recall", "pair_share" (floats, NaN where undefined)."""
    Y_train = _canonical(Y_train, "Y_train")
    Y_test, top = _check(Y_test, top, k)
    if Y_train.shape[1] != Y_test.shape[1]:
        raise ConfigError(f"Y_train has {Y_train.shape[1]} labels but Y_test has {Y_test.shape[1]}")
    bins = frequency_bins(Y_train, n_bins)                             # (L,)
    counts = np.bincount(Y_train.indices, minlength=Y_train.shape[1])  # (L,)
    hit_labels = top[_hits(Y_test, top)]                               # (n_hits,) correct predictions
    hits = np.bincount(bins[hit_labels], minlength=n_bins)             # (n_bins,)
    pairs = np.bincount(bins[Y_test.indices], minlength=n_bins)        # (n_bins,)
    return [_bin_row(b, counts[bins == b], hits, pairs) for b in range(n_bins)]


def predict_run(run, k=5, dataset=None):
    """The top-k label ids (N_test, k) a stored run's latest checkpoint predicts on the test split of
    `dataset` (default: the run's own data), as its evaluation does. RunNotFoundError without a
    checkpoint."""
    if not run.checkpoint_path.exists():
        raise RunNotFoundError(f"{run.path}: no checkpoint (model.safetensors) yet")
    trainer = Trainer(run.config.here(), dataset=dataset)
    run.load_checkpoint(trainer.model)
    return trainer.predict(trainer.X_test, k)


def _ratio(a, b):
    return float(a / b) if b else float("nan")


def _bin_row(b, counts, hits, pairs):
    """The row of bin b: counts (its labels' training frequencies), hits and pairs (n_bins,)."""
    return {"bin": b + 1, "labels": int(counts.size), "min_count": int(counts.min()), "max_count": int(counts.max()),
            "test_pairs": int(pairs[b]), "hits": int(hits[b]), "hit_share": _ratio(hits[b], hits.sum()),
            "recall": _ratio(hits[b], pairs[b]), "pair_share": _ratio(pairs[b], pairs.sum())}
