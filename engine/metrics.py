"""Ranking metrics for extreme multi-label classification: P@k, nDCG@k, PSP@k, coverage@k.

Inputs everywhere: `Y_true`, a scipy.sparse matrix (N, L) whose nonzero entries are the
relevant labels (any dtype; stored zeros are not relevant), and `top`, an int array (N, K)
of predicted label ids ranked best first, K >= k; an id of -1 means "no prediction" and
is never a hit. Write y_il = 1 if label l is relevant to point i, top_r(i) for the r-th
prediction of point i, and w_r = 1 / log2(r + 1). Results are fractions in [0, 1].

    P@k     = 1/N Σ_i  1/k Σ_{r<=k} y_{i,top_r(i)}
    nDCG@k  = 1/N Σ_i  DCG_i@k / IDCG_i@k
              DCG_i@k  = Σ_{r<=k} y_{i,top_r(i)} · w_r
              IDCG_i@k = Σ_{r<=min(k, |y_i|)} w_r
    PSP@k   = Σ_i Σ_{r<=k} y_{i,top_r(i)} / p_{top_r(i)}
              / Σ_i (sum of the k largest 1/p_l over l in y_i)
    cov@k   = |{l : y_il = 1 and l in top_k(i), for some i}|  /  |{l : y_il = 1 for some i}|
    p_l     = 1 / (1 + C · exp(-A · log(N_l + B))),   C = (log N - 1) · (B + 1)^A

Points with no relevant label stay in the averages and contribute 0 (the convention of the
Extreme Classification Repository). PSP@k is normalised as there and in pyxclib: a ratio of
sums over the dataset, its denominator being the best any ranking could score. The
propensity model is Jain, Prabhu and Varma (KDD 2016), with N training points and N_l of
them positive for label l.

Usage:
    top = top_k(scores, 5)                                   # (N, 5) ids, best first
    m = evaluate(Y_test, top, ks=(1, 3, 5), inv_propensity=inv_propensity(Y_train))
    m["P@1"], m["nDCG@3"], m["PSP@5"], m["cov@5"]
"""

import numbers

import numpy as np
import scipy.sparse as sp

from engine.errors import ConfigError

# -----------------------------------------------------------------------------
# public API


def precision_at_k(Y_true, top, k):
    """Precision at k: the mean over points of |top_k(i) ∩ y_i| / k.

    Y_true: sparse (N, L), nonzero = relevant. top: int (N, K), K >= k, ranked best first,
    -1 = no prediction. Points without labels count, with precision 0. Returns a float.
    """
    Y, top = _check(Y_true, top, k)
    return _precision(_hits(Y, top[:, :k]), k)


def ndcg_at_k(Y_true, top, k):
    """Normalised DCG at k, averaged over points (0 for a point without labels).

    DCG_i@k = Σ_{r=1..k} y_{i,top_r(i)} / log2(r+1), IDCG_i@k = Σ_{r=1..min(k,|y_i|)} 1/log2(r+1).
    Y_true: sparse (N, L). top: int (N, K), K >= k, -1 = no prediction. Returns a float.
    """
    Y, top = _check(Y_true, top, k)
    return _ndcg(_hits(Y, top[:, :k]), _row_counts(Y), k)


def propensity(Y_train, A=0.55, B=1.5):
    """Label propensities of Jain, Prabhu and Varma (2016), shape (L,) float64.

    p_l = 1 / (1 + C · exp(-A · log(N_l + B))), C = (log N - 1) · (B + 1)^A, with N the
    number of training points (rows of Y_train, N >= 3 so that log N > 1) and N_l the number
    of them for which label l is nonzero. Common (A, B): 0.55, 1.5 (default); 0.6, 2.6
    (Amazon); 0.5, 0.4 (Wikipedia). PSP@k scores with 1/p, see `inv_propensity`.
    """
    Y = _canonical(Y_train, "Y_train")
    N, L = Y.shape
    if N < 3:
        raise ConfigError(f"propensity needs at least 3 training points (log N > 1), got N={N}")
    if not (np.isfinite(A) and np.isfinite(B) and B > 0):
        raise ConfigError(f"propensity needs finite A and B > 0, got A={A}, B={B}")
    N_l = np.bincount(Y.indices, minlength=L).astype(np.float64)  # (L,)
    C = (np.log(N) - 1.0) * (B + 1.0) ** A
    return 1.0 / (1.0 + C * np.exp(-A * np.log(N_l + B)))


def inv_propensity(Y_train, A=0.55, B=1.5):
    """1 / propensity(Y_train, A, B), shape (L,) float64: the label weights PSP@k uses."""
    return 1.0 / propensity(Y_train, A, B)


def psp_at_k(Y_true, top, k, inv_propensity):
    """Propensity-scored precision at k, normalised as in the XC repository and pyxclib.

    PSP@k = Σ_i Σ_{r<=k} y_{i,top_r(i)} · inv_propensity[top_r(i)]
            / Σ_i (sum of the k largest inv_propensity[l] over the labels l of point i),
    a ratio of sums over the dataset whose denominator is the best achievable score, so
    PSP@k = 1 for a perfect ranking. Y_true: sparse (N, L). top: int (N, K), K >= k.
    inv_propensity: (L,) 1/p_l, e.g. from `inv_propensity(Y_train)`. Returns a float
    (0 if no point has a label).
    """
    Y, top = _check(Y_true, top, k)
    w = _check_weights(inv_propensity, Y.shape[1])
    hits = _hits(Y, top[:, :k])
    return _psp(hits, top, w, _ranked_row_weights(Y, w), k)


def coverage_at_k(Y_true, top, k):
    """Label coverage at k: the fraction of the labels relevant to at least one point that
    are predicted correctly in at least one point's top k.

    Y_true: sparse (N, L). top: int (N, K), K >= k. Returns a float (0 if Y_true is empty).
    """
    Y, top = _check(Y_true, top, k)
    return _coverage(_hits(Y, top[:, :k]), top, _num_relevant_labels(Y), Y.shape[1], k)


def evaluate(Y_true, top, ks=(1, 3, 5), inv_propensity=None):
    """All metrics at every k in ks, as a dict of floats in [0, 1], in the order
    "P@k" for each k, "nDCG@k", "PSP@k" (only if inv_propensity, shape (L,), is given), "cov@k".

    Y_true: sparse (N, L), nonzero = relevant. top: int (N, K), K >= max(ks), ranked best
    first, -1 = no prediction. Points without labels count in every average, with 0.
    """
    ks = _check_ks(ks)
    Y, top = _check(Y_true, top, max(ks))
    hits = _hits(Y, top[:, :max(ks)])  # (N, kmax)
    counts = _row_counts(Y)
    out = {f"P@{k}": _precision(hits, k) for k in ks}
    out.update({f"nDCG@{k}": _ndcg(hits, counts, k) for k in ks})
    if inv_propensity is not None:
        w = _check_weights(inv_propensity, Y.shape[1])
        ranked = _ranked_row_weights(Y, w)
        out.update({f"PSP@{k}": _psp(hits, top, w, ranked, k) for k in ks})
    n_rel = _num_relevant_labels(Y)
    out.update({f"cov@{k}": _coverage(hits, top, n_rel, Y.shape[1], k) for k in ks})
    return out


def top_k(scores, k):
    """The ids of the k largest scores of each row, ranked best first.

    scores: numpy array or torch tensor (N, L). Returns (N, k) int64 of the same kind
    (a torch tensor stays on its device; torch.topk). Ties are broken arbitrarily.
    """
    if getattr(scores, "ndim", None) != 2:
        shape = tuple(getattr(scores, "shape", ()))
        raise ConfigError(f"scores must be 2-D (N, L), got shape {shape}")
    L = scores.shape[1]
    if not _is_int(k) or not 1 <= k <= L:
        raise ConfigError(f"k must be an integer in [1, L={L}], got k={k!r}")
    k = int(k)
    if hasattr(scores, "topk"):  # torch.Tensor, without importing torch here
        return scores.topk(k, dim=1).indices
    scores = np.asarray(scores)
    part = np.argpartition(scores, L - k, axis=1)[:, L - k:]  # (N, k), unordered
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)


# -----------------------------------------------------------------------------
# validation (once, at the public edge)


def _is_int(k):
    return isinstance(k, numbers.Integral) and not isinstance(k, bool)


def _canonical(Y, name):
    """CSR with sorted, unique indices and no stored zeros; copies only if needed."""
    if not sp.issparse(Y):
        raise ConfigError(f"{name} must be a scipy.sparse matrix (N, L), got {type(Y).__name__}")
    if Y.ndim != 2:
        raise ConfigError(f"{name} must be 2-D (N, L), got shape {Y.shape}")
    Y = Y.tocsr()
    if not Y.has_canonical_format or not Y.data.all():
        Y = Y.copy()
        Y.sum_duplicates()
        Y.eliminate_zeros()
    return Y


def _check(Y_true, top, k):
    Y = _canonical(Y_true, "Y_true")
    N, L = Y.shape
    if N == 0:
        raise ConfigError("Y_true has no rows (N=0): nothing to average")
    if hasattr(top, "detach"):  # torch.Tensor
        top = top.detach().cpu().numpy()
    top = np.asarray(top)
    if top.ndim != 2 or top.shape[0] != N:
        raise ConfigError(f"top must have shape (N={N}, K), got {top.shape}")
    if not np.issubdtype(top.dtype, np.integer):
        raise ConfigError(f"top must hold integer label ids, got dtype {top.dtype}")
    K = top.shape[1]
    if not _is_int(k) or not 1 <= k <= K:
        raise ConfigError(f"k must be an integer in [1, K={K}] (K = columns of top), got k={k!r}")
    t = top[:, :k].astype(np.int64, copy=False)
    if t.size and (t.min() < -1 or t.max() >= L):
        bad = t[(t < -1) | (t >= L)][0]
        raise ConfigError(f"top holds label id {bad}, outside [-1, L={L})")
    s = np.sort(t, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)  # (N, k-1)
    if dup.any():
        i, r = np.argwhere(dup)[0]
        raise ConfigError(f"top row {i} predicts label {s[i, r + 1]} more than once in its top {k}")
    return Y, t


def _check_ks(ks):
    ks = (ks,) if _is_int(ks) else tuple(ks)
    if not ks or not all(_is_int(k) and k >= 1 for k in ks):
        raise ConfigError(f"ks must be a non-empty list of integers >= 1, got {ks!r}")
    return tuple(dict.fromkeys(int(k) for k in ks))  # unique, order kept


def _check_weights(w, L):
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (L,):
        raise ConfigError(f"inv_propensity must have shape (L={L},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ConfigError("inv_propensity holds a non-finite value")
    return w


# -----------------------------------------------------------------------------
# kernels: prior validation is assumed (Y canonical CSR, top int64 ids in [-1, L))


def _hits(Y, top):
    """hits[i, r] = (top[i, r] is a label of point i), shape (N, K) bool."""
    N, L = Y.shape
    rows = np.repeat(np.arange(N, dtype=np.int64), np.diff(Y.indptr))  # (nnz,)
    keys = rows * L + Y.indices  # (nnz,) sorted: rows in order, sorted indices within
    query = np.arange(N, dtype=np.int64)[:, None] * L + top  # (N, K)
    query[top < 0] = -1  # never equal to a key
    if keys.size == 0:
        return np.zeros(top.shape, dtype=bool)
    pos = np.searchsorted(keys, query).clip(max=keys.size - 1)
    return keys[pos] == query


def _row_counts(Y):
    return np.diff(Y.indptr)  # (N,) labels per point


def _precision(hits, k):
    return float(hits[:, :k].sum() / (hits.shape[0] * k))


def _ndcg(hits, counts, k):
    disc = 1.0 / np.log2(np.arange(2, k + 2))  # (k,) w_r
    dcg = hits[:, :k] @ disc  # (N,)
    idcg = np.cumsum(disc)[np.clip(counts, 1, k) - 1]  # (N,)
    return float(np.where(counts > 0, dcg / idcg, 0.0).mean())


def _ranked_row_weights(Y, w):
    """(weights of each point's labels sorted descending within the row, their rank in it)."""
    counts = _row_counts(Y)
    v = w[Y.indices]  # (nnz,)
    rows = np.repeat(np.arange(Y.shape[0]), counts)
    order = np.lexsort((-v, rows))  # rows stay grouped, weights descending within
    rank = np.arange(v.size) - np.repeat(Y.indptr[:-1], counts)
    return v[order], rank


def _psp(hits, top, w, ranked, k):
    v, rank = ranked
    den = v[rank < k].sum()
    num = (hits[:, :k] * w[top[:, :k].clip(min=0)]).sum()
    return float(num / den) if den > 0 else 0.0


def _num_relevant_labels(Y):
    return np.count_nonzero(np.bincount(Y.indices, minlength=Y.shape[1]))


def _coverage(hits, top, n_relevant, L, k):
    covered = np.zeros(L, dtype=bool)
    covered[top[:, :k][hits[:, :k]]] = True
    return float(covered.sum() / n_relevant) if n_relevant else 0.0
