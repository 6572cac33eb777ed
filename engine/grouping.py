"""Label groups: PIFA label embeddings, balanced clustering into equal-size groups, initial input sets.

    E = pifa(X, Y)                              # (L, D): l2-normalised sum of each label's positive rows
    groups = balanced_groups(E, group_size=32)  # hierarchical balanced spherical 2-means
    groups = random_groups(L, group_size=32)    # the baseline that shows what clustering buys
    idx = group_index(groups, S, fanin=64)      # (G, k) int32: each group's k strongest inputs

Layout. A head with G = ceil(L / m) groups of m slots has G·m outputs; label l sits in slot
`slot_of_label[l] = g·m + j`. Group sizes are ⌊L/G⌋ or ⌈L/G⌉ (they differ by at most one), so
the G·m - L padding slots are spread over the groups as evenly as possible (the groups made here
put them in the last slots of a group). The model reads its L logits as
`Z_slots[:, slot_of_label]`: padding slots are never read, so they get no gradient; pass
`groups.padded_slots` to `engine.dst.DynamicSparsity` so their weights do not count.

Inputs. The head reads the network's hidden layer, not the raw features, so `group_index`
takes a generic (L, d) label-by-input score matrix S: S = pifa(X, Y) when the head reads the
features directly (d = D); S = pifa(H, Y) with H the hidden activations of the training points
(the mean hidden vector of each label's positives) for a head on a hidden layer, passed as
PifaRows(H, Y) so that its rows are made a block of groups at a time, never all (L, d) at once
(`centroid_index` does this for a model); any other (L, d) score (e.g. |W| of a trained dense
layer) works the same way.
"""

import types
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from .config import GROUPED_HEADS, ModelConfig
from .errors import ConfigError
from .heads.group_shared import random_index

_CHUNK = 1 << 24            # elements of a temporary dense block (64 MB of float32)
CENTROID_POINTS = 20_000    # at most the training points a model's centroid input sets are made from


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"{name}={v!r}: expected an integer >= {lo}")
    return int(v)


# ---------------------------------------------------------------------------------------------
# PIFA label embeddings

def _check_xy(X, Y):
    if not (sp.issparse(X) or isinstance(X, np.ndarray)) or X.ndim != 2:
        raise ConfigError(f"X must be a 2-d scipy sparse matrix or ndarray, got {type(X).__name__}")
    if not sp.issparse(Y) or Y.ndim != 2:
        raise ConfigError(f"Y must be a 2-d scipy sparse matrix, got {type(Y).__name__}")
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(f"X has {X.shape[0]} rows, Y {Y.shape[0]}: expected one row per point in both")


def labels_without_positives(Y):
    """(L,) bool: the labels with no positive point in Y (N, L) — their PIFA row is zero."""
    if not sp.issparse(Y) or Y.ndim != 2:
        raise ConfigError(f"Y must be a 2-d scipy sparse matrix, got {type(Y).__name__}")
    Yc = sp.csc_matrix(Y)
    Yc.eliminate_zeros()
    return np.diff(Yc.indptr) == 0


def pifa(X, Y, dense=True):
    """PIFA label embeddings: row l = the l2-normalised sum (equivalently mean) of the feature
    rows of label l's positive points.

    Parameters
    ----------
    X : sparse matrix or ndarray of shape (N, D)
        Feature rows, or any per-point vectors (e.g. the hidden activations H, dense).
    Y : sparse matrix of shape (N, L)
        Labels; every stored nonzero counts as a positive (values are ignored).
    dense : bool, default=True
        Return a dense ndarray; False returns a csr matrix (for large D).

    Returns
    -------
    (L, D) float32 ndarray (or csr_matrix). Labels without positives (see
    `labels_without_positives`) get a zero row; `balanced_groups` and `group_index` accept them.

    Computed as one sparse product Yᵀ·X (cost ~ nnz(Y) · features per point). For sparse X and
    dense=False nothing of size L·D is made: the float64 sums, their squares and the float32
    result, at most 28 bytes per entry (column indices sorted, no stored zeros).
    """
    _check_xy(X, Y)
    P = sp.csr_matrix(Y, dtype=np.float64, copy=True)
    P.eliminate_zeros()
    P.data[:] = 1.0
    if isinstance(X, np.ndarray):
        S = np.asarray(P.T @ np.asarray(X, np.float64))                 # (L, D) sums
        norm = np.sqrt(np.einsum("ij,ij->i", S, S))
        S = (S * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]).astype(np.float32)
        return S if dense else sp.csr_matrix(S)
    S = sp.csr_matrix(P.T) @ sp.csr_matrix(X, dtype=np.float64)       # (L, D) float64 sums, csr
    del P
    S.sum_duplicates()                                                 # canonical: sorted, no duplicates
    norm = np.sqrt(np.asarray(S.multiply(S).sum(axis=1)).ravel())
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    S.data *= np.repeat(inv, np.diff(S.indptr))
    S = S.astype(np.float32)
    S.eliminate_zeros()                                                # as a dense row would drop them
    return S.toarray() if dense else S


class PifaRows:
    """The dense PIFA embeddings pifa(X, Y) (L, d) of dense per-point vectors X (N, d), e.g. the
    hidden activations H, made a block of labels at a time: `group_index` and `group_centroids`
    take it as their scores and hold only the rows of one block of groups, never all L·d.

    rows(labels) is pifa(X, Y)[labels], bit for bit (each label's row is its own sum). Holds X once
    in float64 (pifa would convert it per call) and Y's columns (csc)."""

    ndim = 2

    def __init__(self, X, Y):
        _check_xy(X, Y)
        if not isinstance(X, np.ndarray):
            raise ConfigError(f"X must be a dense ndarray (pifa(X, Y, dense=False) for sparse X), "
                              f"got {type(X).__name__}")
        self.X = np.asarray(X, np.float64)
        self.Y = sp.csc_matrix(Y)
        self.shape = (Y.shape[1], X.shape[1])

    def rows(self, labels):
        """(len(labels), d) float32: the PIFA rows of `labels`."""
        return pifa(self.X, self.Y[:, labels])


# ---------------------------------------------------------------------------------------------
# the groups

@dataclass(frozen=True, eq=False)
class LabelGroups:
    """An assignment of L labels to G = ceil(L / m) groups of at most m labels.

    slot_of_label (L,) int64: label l sits in slot g·m + j of a head with G·m outputs (its group
    g = slot // m, its place j = slot % m). Invariants, checked at construction: every label has
    one slot, slots are distinct and in [0, G·m), and group sizes differ by at most one (each is
    ⌊L/G⌋ or ⌈L/G⌉). The array is stored read-only."""
    n_labels: int
    group_size: int
    slot_of_label: np.ndarray

    def __post_init__(self):
        L = _check_int("n_labels", self.n_labels, 1)
        m = _check_int("group_size", self.group_size, 1)
        s = np.asarray(self.slot_of_label)
        if s.shape != (L,) or not np.issubdtype(s.dtype, np.integer):
            raise ConfigError(f"slot_of_label must be an integer array of shape ({L},), "
                              f"got {s.dtype} {s.shape}")
        G = -(-L // m)
        if L and (s.min() < 0 or s.max() >= G * m):
            bad = int(np.flatnonzero((s < 0) | (s >= G * m))[0])
            raise ConfigError(f"slot_of_label[{bad}] = {s[bad]} is out of range [0, {G * m}) "
                              f"(n_groups={G} x group_size={m})")
        if np.bincount(s, minlength=G * m).max() > 1:
            u, c = np.unique(s, return_counts=True)
            raise ConfigError(f"slot {u[c > 1][0]} holds {c[c > 1][0]} labels: slots must be distinct")
        sizes = np.bincount(s // m, minlength=G)
        if sizes.max() - sizes.min() > 1:
            raise ConfigError(f"group sizes range from {sizes.min()} to {sizes.max()}: "
                              f"they must differ by at most one")
        s = np.array(s, dtype=np.int64)
        s.setflags(write=False)
        object.__setattr__(self, "n_labels", L)
        object.__setattr__(self, "group_size", m)
        object.__setattr__(self, "slot_of_label", s)

    @classmethod
    def from_order(cls, order, group_size):
        """Groups from a label order: the first group takes the first labels of `order`, and so
        on, with sizes ⌈L/G⌉ for the first L mod G groups and ⌊L/G⌋ for the rest."""
        order = np.asarray(order, dtype=np.int64)
        L, m = order.size, _check_int("group_size", group_size, 1)
        if L == 0 or not np.array_equal(np.sort(order), np.arange(L)):
            raise ConfigError("order must be a permutation of the labels 0..L-1")
        sizes = _group_sizes(L, m)
        g = np.repeat(np.arange(sizes.size), sizes)
        j = np.arange(L) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        slot = np.empty(L, np.int64)
        slot[order] = g * m + j
        return cls(L, m, slot)

    @property
    def n_groups(self):
        return -(-self.n_labels // self.group_size)

    @property
    def n_slots(self):
        """G·m: the output width of a head holding these groups."""
        return self.n_groups * self.group_size

    @property
    def group_of_label(self):                                          # (L,) int64
        return self.slot_of_label // self.group_size

    @property
    def group_sizes(self):                                             # (G,) int64
        return np.bincount(self.group_of_label, minlength=self.n_groups)

    @property
    def label_of_slot(self):
        """(G·m,) int64: the label in each slot, -1 for padding."""
        out = np.full(self.n_slots, -1, np.int64)
        out[self.slot_of_label] = np.arange(self.n_labels)
        return out

    @property
    def padded_slots(self):
        """(G·m,) bool: True where a slot holds no label."""
        return self.label_of_slot < 0

    def labels_of_group(self, g):
        """The labels of group g, in slot order."""
        G = self.n_groups
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= g < G:
            raise ConfigError(f"group {g!r} is out of range [0, {G})")
        lab = self.label_of_slot[g * self.group_size:(g + 1) * self.group_size]
        return lab[lab >= 0]


def _group_sizes(L, m):
    G = -(-L // m)
    return L // G + (np.arange(G) < L % G)                             # (G,), sum L


def random_groups(n_labels, group_size, seed=0):
    """The baseline: labels assigned to equal-size groups uniformly at random."""
    L = _check_int("n_labels", n_labels, 1)
    m = _check_int("group_size", group_size, 1)
    seed = _check_int("seed", seed, 0)
    return LabelGroups.from_order(np.random.default_rng(seed).permutation(L), m)


# ---------------------------------------------------------------------------------------------
# balanced hierarchical spherical 2-means

def _scores_dense(E, labels, node, delta, out):
    """out[r] = E[labels[r]] · delta[node[r]]."""
    for r in prange(labels.size):
        e = E[labels[r]]
        c = delta[node[r]]
        s = np.float32(0.0)
        for j in range(e.size):
            s += e[j] * c[j]
        out[r] = s


def _scores_csr(indptr, indices, data, labels, node, delta, out):
    for r in prange(labels.size):
        lab = labels[r]
        c = delta[node[r]]
        s = np.float32(0.0)
        for p in range(indptr[lab], indptr[lab + 1]):
            s += data[p] * c[indices[p]]
        out[r] = s


def _centroids_dense(E, labels, first, n, side, C, T):
    """C[2a + side[r]] += E[labels[r]] over the rows r of node a (rows first[a] .. + n[a]).
    Parallel over nodes when there are many, else over blocks of 64 columns."""
    nn, D = first.size, E.shape[1]
    if nn >= 4 * T:
        for a in prange(nn):
            for r in range(first[a], first[a] + n[a]):
                e = E[labels[r]]
                c = C[2 * a + side[r]]
                for j in range(D):
                    c[j] += e[j]
    else:
        for cb in prange((D + 63) // 64):
            j0, j1 = cb * 64, min(D, cb * 64 + 64)
            for a in range(nn):
                for r in range(first[a], first[a] + n[a]):
                    e = E[labels[r]]
                    c = C[2 * a + side[r]]
                    for j in range(j0, j1):
                        c[j] += e[j]


def _centroids_csr(indptr, indices, data, labels, first, n, side, C, T):
    """As _centroids_dense for a csr E; few nodes: partial sums over row ranges, one per thread
    but at most _CHUNK floats of them all (C holds at most _CHUNK: at least one)."""
    nn = first.size
    if nn >= 4 * T:
        for a in prange(nn):
            for r in range(first[a], first[a] + n[a]):
                lab = labels[r]
                c = C[2 * a + side[r]]
                for p in range(indptr[lab], indptr[lab + 1]):
                    c[indices[p]] += data[p]
    else:
        node = np.empty(labels.size, np.int64)
        for a in range(nn):
            node[first[a]:first[a] + n[a]] = a
        n_part = max(1, min(T, _CHUNK // max(C.size, 1)))
        P = np.zeros((n_part,) + C.shape, C.dtype)
        R = labels.size
        for t in prange(n_part):
            for r in range(t * R // n_part, (t + 1) * R // n_part):
                lab = labels[r]
                c = P[t, 2 * node[r] + side[r]]
                for p in range(indptr[lab], indptr[lab + 1]):
                    c[indices[p]] += data[p]
        for t in range(n_part):
            C += P[t]


# each kernel twice: parallel for big work, serial below _PARALLEL_WORK multiply-adds (a parallel
# launch costs ~0.1 ms on an idle machine, ~10 ms on a busy one)
_PARALLEL_WORK = 1 << 20
def _renamed(f, suffix):                # a copy with its own numba cache entry
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    return g


_KERNELS = {f.__name__: (njit(parallel=True, fastmath=True, cache=True)(f),
                         njit(parallel=False, fastmath=True, cache=True)(_renamed(f, "_serial")))
            for f in (_scores_dense, _scores_csr, _centroids_dense, _centroids_csr)}


def _kernel(name, work):
    return _KERNELS[name][0 if work >= _PARALLEL_WORK else 1]


def _as_embeddings(E):
    """float32 dense C-ordered array or csr matrix, rows l2-normalised (zero rows stay zero)."""
    if sp.issparse(E):
        if E.ndim != 2:
            raise ConfigError(f"embeddings must be 2-d, got shape {E.shape}")
        E = sp.csr_matrix(E, dtype=np.float32, copy=True)
        E.sum_duplicates()
        if not np.isfinite(E.data).all():
            raise ConfigError("embeddings contain NaN or inf")
        norm = np.sqrt(np.asarray(E.multiply(E).sum(axis=1), np.float64).ravel())
        inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0).astype(np.float32)
        E.data *= np.repeat(inv, np.diff(E.indptr))
        return E
    E = np.asarray(E)
    if E.ndim != 2 or not (np.issubdtype(E.dtype, np.floating) or np.issubdtype(E.dtype, np.integer)):
        raise ConfigError(f"embeddings must be a 2-d numeric array, got {E.dtype} {E.shape}")
    E = np.array(E, dtype=np.float32, order="C")
    if not np.isfinite(E).all():
        raise ConfigError("embeddings contain NaN or inf")
    if not _dense_enough(np.count_nonzero(E), E.size):                 # mostly zeros: csr reads less
        return _as_embeddings(sp.csr_matrix(E))
    norm = np.sqrt(np.einsum("ij,ij->i", E, E, dtype=np.float64))
    E *= np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0).astype(np.float32)[:, None]
    return E


def _dense_enough(nnz, size):
    """Whether embeddings with nnz of size entries are clustered dense (read faster than CSR)."""
    return nnz >= size // 4


def _as_read(E):
    """Sparse embeddings (L, D) in the format `_as_embeddings` reads a dense copy of them in: dense
    when at least a quarter filled (4·L·D bytes, at most twice the CSR's), else the CSR itself."""
    return E.toarray() if _dense_enough(E.nnz, E.shape[0] * E.shape[1]) else E


def _dense_rows(E, rows):
    return E[rows].toarray() if sp.issparse(E) else E[rows]


def _normalise(C):
    n = np.sqrt(np.einsum("ij,ij->i", C, C))
    C *= np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)[:, None]
    return C


def _rows_of(act, first, n):
    """The rows of the nodes `act` (of a problem whose node a has rows first[a] .. + n[a]), as a
    sub-problem: (rows, node of each row in 0..len(act)-1, first, n)."""
    n_a = n[act]
    first_a = np.cumsum(n_a) - n_a
    node_a = np.repeat(np.arange(act.size), n_a)
    return first[act][node_a] + np.arange(node_a.size) - first_a[node_a], node_a, first_a, n_a


def _split(E, order, off, g0, g1, rng, n_iter):
    """Split each node (groups [g0, g1), rows off[g0]..off[g1] of `order`) in two, in place:
    the left child (groups [g0, gm)) takes the off[gm] - off[g0] labels most similar to centroid
    0 relative to centroid 1. Balanced spherical 2-means, all nodes at once; a node whose split
    stops changing drops out of the following iterations."""
    L, D = E.shape
    nn = g0.size
    gm = g0 + (g1 - g0 + 1) // 2
    start, n, n_left = off[g0], off[g1] - off[g0], off[gm] - off[g0]      # (nn,) each, n >= 2
    first = np.cumsum(n) - n                                               # node start in `labels`
    node = np.repeat(np.arange(nn), n)                                     # (R,)
    pos = np.arange(node.size) - first[node] + start[node]                 # (R,) positions in `order`
    labels = order[pos]
    labels = labels[np.argsort(node * L + labels)]                         # ascending rows of E per node
    a = (rng.random(nn) * n).astype(np.int64)                              # two distinct seeds per node
    b = (a + 1 + (rng.random(nn) * (n - 1)).astype(np.int64)) % n
    c0 = _normalise(_dense_rows(E, labels[first + a]).astype(np.float32))
    c1 = _normalise(_dense_rows(E, labels[first + b]).astype(np.float32))
    s = np.empty(node.size, np.float32)                                    # cos(e, c0) - cos(e, c1)
    left = np.zeros(node.size, bool)
    per_row = E.nnz / max(L, 1) if sp.issparse(E) else D
    act = np.arange(nn)                                                    # nodes still moving
    rows, node_a, first_a, n_a = np.arange(node.size), node, first, n
    for it in range(n_iter):
        lab_a = labels[rows]
        work = int(lab_a.size * per_row)
        delta = np.ascontiguousarray(c0[act] - c1[act])                    # (len(act), D)
        s_a = np.empty(lab_a.size, np.float32)
        if sp.issparse(E):
            _kernel("_scores_csr", work)(E.indptr, E.indices, E.data, lab_a, node_a, delta, s_a)
        else:
            _kernel("_scores_dense", work)(E, lab_a, node_a, delta, s_a)
        o = np.argsort(node_a * 8.0 + (2.0 - s_a), kind="stable")         # per node, best for c0 first
        left_a = np.empty(lab_a.size, bool)
        left_a[o] = np.arange(lab_a.size) - first_a[node_a[o]] < n_left[act][node_a[o]]
        moved = np.ones(act.size, bool) if it == 0 else \
            np.bincount(node_a[left_a != left[rows]], minlength=act.size) > 0
        s[rows], left[rows] = s_a, left_a
        if it == n_iter - 1 or not moved.any():
            break
        act = act[moved]
        rows, node_a, first_a, n_a = _rows_of(act, first, n)
        lab_a = labels[rows]
        C = np.zeros((2 * act.size, D), np.float32)                        # (2·len(act), D) sums
        side = (~left[rows]).astype(np.int64)
        if sp.issparse(E):
            _kernel("_centroids_csr", work)(E.indptr, E.indices, E.data, lab_a, first_a, n_a, side, C,
                                            numba.get_num_threads())
        else:
            _kernel("_centroids_dense", work)(E, lab_a, first_a, n_a, side, C, numba.get_num_threads())
        C = _normalise(C)
        c0[act], c1[act] = C[0::2], C[1::2]
    o = np.argsort(node * 8.0 + (2.0 - s), kind="stable")                 # the last split of every node
    order[pos] = labels[o]


def balanced_groups(embeddings, group_size, seed=0, n_iter=10):
    """Cluster L labels into G = ceil(L / group_size) groups of equal size (up to one) by balanced
    hierarchical spherical 2-means.

    A node holding groups [g0, g1) and their labels is split into [g0, gm) and [gm, g1),
    gm = g0 + ⌈(g1-g0)/2⌉, each child taking exactly the labels its groups hold: two centroids
    start at two random labels of the node; each iteration sorts the node's labels by
    cos(e, c0) - cos(e, c1) and cuts at the left child's size, then recomputes the normalised
    centroids; at most `n_iter` iterations, fewer once the split stops changing. All nodes of a
    level are split at once (vectorised; numba for the scores), so the cost is about
    n_iter · L · nnz-per-row per level, over ⌈log2 G⌉ levels.

    Parameters
    ----------
    embeddings : (L, D) dense array or scipy sparse matrix
        Label embeddings (e.g. `pifa`). Rows are l2-normalised here (cosine similarity). Zero
        rows (labels without positives) tie with each other and land in random groups.
    group_size : int >= 1
    seed : int >= 0
        The same embeddings and seed give the same groups.
    n_iter : int >= 1, default=10

    Returns
    -------
    LabelGroups
    """
    m = _check_int("group_size", group_size, 1)
    seed = _check_int("seed", seed, 0)
    n_iter = _check_int("n_iter", n_iter, 1)
    if not (sp.issparse(embeddings) or isinstance(embeddings, np.ndarray)):
        raise ConfigError(f"embeddings must be an ndarray or a scipy sparse matrix, "
                          f"got {type(embeddings).__name__}")
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise ConfigError(f"embeddings must have shape (n_labels >= 1, dim), got {embeddings.shape}")
    E = _as_embeddings(embeddings)
    L, D = E.shape
    sizes = _group_sizes(L, m)
    G = sizes.size
    off = np.concatenate([[0], np.cumsum(sizes)])                         # (G+1,)
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(L)                                           # E's rows in random order:
    E = E[shuffle]                                                         # ties (zero rows) go anywhere
    order = np.arange(L)                                                   # position -> row of E
    g0, g1 = np.array([0]), np.array([G])
    per_chunk = max(1, _CHUNK // (2 * max(D, 1)))                         # nodes per dense (2·nn, D) block
    while True:
        keep = g1 - g0 > 1
        g0, g1 = g0[keep], g1[keep]
        if g0.size == 0:
            break
        for c in range(0, g0.size, per_chunk):
            _split(E, order, off, g0[c:c + per_chunk], g1[c:c + per_chunk], rng, n_iter)
        gm = g0 + (g1 - g0 + 1) // 2
        g0, g1 = np.concatenate([g0, gm]), np.concatenate([gm, g1])
        o = np.argsort(g0, kind="stable")
        g0, g1 = g0[o], g1[o]
    return LabelGroups.from_order(shuffle[order], m)


# ---------------------------------------------------------------------------------------------
# initial input sets

def _is_scores(scores):
    return (sp.issparse(scores) or isinstance(scores, (np.ndarray, PifaRows))) and scores.ndim == 2


def _check_scores(groups, scores):
    if not isinstance(groups, LabelGroups):
        raise ConfigError(f"groups must be a LabelGroups, got {type(groups).__name__}")
    if not _is_scores(scores):
        raise ConfigError(f"scores must be a 2-d (n_labels, in_features) ndarray, scipy sparse "
                          f"matrix or PifaRows, got {type(scores).__name__}")
    if scores.shape[0] != groups.n_labels:
        raise ConfigError(f"scores has {scores.shape[0]} rows, expected one per label ({groups.n_labels})")
    if isinstance(scores, PifaRows):                                   # checked a block at a time
        return scores
    if not np.isfinite(scores.data if sp.issparse(scores) else scores).all():
        raise ConfigError("scores contain NaN or inf")
    return sp.csr_matrix(scores) if sp.issparse(scores) else scores


def _label_rows(scores, labels):
    """Rows `labels` (ascending) of checked scores (ndarray, csr or PifaRows)."""
    if not isinstance(scores, PifaRows):
        return scores[labels]
    S = scores.rows(labels)
    if not np.isfinite(S).all():
        raise ConfigError("scores contain NaN or inf")
    return S


def groups_per_block(group_size, d, entries_per_label):
    """Groups of a centroid block: its (r, d) float64 centroids and the rows of scores its labels
    read (r·m rows of `entries_per_label` entries: d if dense, the mean row's if sparse) each at
    most _CHUNK/4 entries. engine.memory counts a block of this size."""
    return max(1, min(_CHUNK // 4 // max(d, 1), int(_CHUNK // 4 // max(group_size * entries_per_label, 1))))


def _groups_per_block(groups, scores):
    """groups_per_block of checked scores (ndarray, csr or PifaRows)."""
    L, d = scores.shape
    return groups_per_block(groups.group_size, d, scores.nnz / max(L, 1) if sp.issparse(scores) else d)


def _centroid_blocks(groups, scores):
    """Yield (g0, (r, d) float64 block of group centroids), _groups_per_block groups at a time: each
    group's sum, in float64, of its labels' rows of scores in ascending label order. Only the
    block's labels' rows are read (made, for PifaRows)."""
    G, m = groups.n_groups, groups.group_size
    lab = groups.label_of_slot.reshape(G, m)
    rows = _groups_per_block(groups, scores)
    for g0 in range(0, G, rows):
        blk = lab[g0:g0 + rows]                                        # (r, m), -1 = padding
        r = blk.shape[0]
        g, j = np.nonzero(blk >= 0)
        labels, col = np.unique(blk[g, j], return_inverse=True)       # the block's labels, ascending
        ind = sp.csr_matrix((np.ones(g.size), (g, col)), shape=(r, labels.size))
        C = ind @ _label_rows(scores, labels)
        yield g0, np.asarray(C.toarray() if sp.issparse(C) else C, np.float64)


def group_centroids(groups, scores):
    """(G, d) float32: per group, the sum of its labels' rows of `scores` (L, d), dense, sparse or
    PifaRows. Padding contributes nothing; a group of labels with zero rows has a zero centroid."""
    scores = _check_scores(groups, scores)
    out = np.empty((groups.n_groups, scores.shape[1]), np.float32)
    for g0, C in _centroid_blocks(groups, scores):
        out[g0:g0 + C.shape[0]] = C
    return out


def _top_k(C, k, rng):
    """(r, k): the k largest entries of each row of C (r, d); ties at the k-th value at random."""
    r, d = C.shape
    t = -np.partition(-C, k - 1, axis=1)[:, k - 1:k]                   # (r, 1) k-th largest
    key = np.where(C > t, 2.0, np.where(C == t, rng.random((r, d)), -1.0))
    return np.argpartition(-key, k - 1, axis=1)[:, :k]


def top_inputs(centroids, fanin, seed=0):
    """(G, k) int32, rows sorted: the k largest entries of each row of `centroids` (G, d); ties
    (e.g. a zero centroid, or fewer than k nonzeros) are broken uniformly at random, so rows
    never repeat an input. Pass |centroids| if the sign does not matter."""
    C = np.asarray(centroids)
    if C.ndim != 2 or not np.issubdtype(C.dtype, np.number):
        raise ConfigError(f"centroids must be a 2-d numeric (n_groups, in_features) array, "
                          f"got {C.dtype} {C.shape}")
    if not np.isfinite(C).all():
        raise ConfigError("centroids contain NaN or inf")
    G, d = C.shape
    k = _check_int("fanin", fanin, 1)
    if k > d:
        raise ConfigError(f"fanin={k} > in_features={d}: a group reads distinct inputs")
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    out = np.empty((G, k), np.int32)
    rows = max(1, _CHUNK // 4 // d)
    for r0 in range(0, G, rows):
        out[r0:r0 + rows] = _top_k(np.asarray(C[r0:r0 + rows], np.float64), k, rng)
    out.sort(axis=1)
    return out


GROUP_INDEX = ("centroid", "random")


def group_index(groups, scores, fanin, how="centroid", seed=0):
    """Each group's initial input set, (G, k) int32, rows sorted, distinct entries in [0, d).

    how="centroid": the k largest entries of the group's centroid (the sum of its labels' rows
    of `scores`, an (L, d) label-by-input score matrix, dense or sparse, or a PifaRows whose rows
    are made as they are read), ties at random; the centroids are made a block of groups at a
    time, never all (G, d) at once, from the rows of that block's labels only.
    how="random": k distinct inputs uniformly at random (only d = scores.shape[1] is used;
    `scores` may also be the int d).
    See the module docstring for which scores to use when the head reads a hidden layer.
    For "centroid", the same as top_inputs(group_centroids(groups, scores), fanin, seed) up to
    float32 rounding of the centroids."""
    if how not in GROUP_INDEX:
        raise ConfigError(f"how={how!r}: expected one of {GROUP_INDEX}")
    if not isinstance(groups, LabelGroups):
        raise ConfigError(f"groups must be a LabelGroups, got {type(groups).__name__}")
    k = _check_int("fanin", fanin, 1)
    seed = _check_int("seed", seed, 0)
    if how == "random" and isinstance(scores, (int, np.integer)) and not isinstance(scores, bool):
        d = _check_int("in_features", scores, 1)
    else:
        if not _is_scores(scores):
            raise ConfigError(f"scores must be a 2-d (n_labels, in_features) array, "
                              f"got {type(scores).__name__}")
        d = scores.shape[1]
    if k > d:
        raise ConfigError(f"fanin={k} > in_features={d}: a group reads distinct inputs")
    if how == "random":
        return random_index(groups.n_groups, d, k, seed)
    scores = _check_scores(groups, scores)
    rng = np.random.default_rng(seed)
    out = np.empty((groups.n_groups, k), np.int32)
    for g0, C in _centroid_blocks(groups, scores):                  # the rng's draws run on in order
        out[g0:g0 + C.shape[0]] = _top_k(C, k, rng)
    out.sort(axis=1)
    return out


def label_layout(config: ModelConfig, X, Y):
    """(slot_of_label (L,), cluster_of_label (L,) or None) for a model config and training data.

    Sparse parts place labels group by group: the head's `groups` "random" or "clustered" (balanced
    hierarchical 2-means on PIFA embeddings); the most frequent labels come first, in the dense
    part (ModelConfig.n_dense of them: group_shared's dense_share, dense_sparse's head_size).
    Seeded by config.seed. The embeddings stay sparse (see engine.memory.grouping_memory for the
    bytes)."""
    L, head, seed = config.n_labels, config.head, config.seed
    clustered = head.name in GROUPED_HEADS and head.groups == "clustered"
    needs_pifa = config.aux_clusters or clustered
    emb = pifa(X, Y, dense=False) if needs_pifa else None                # (L, D) csr
    cluster_of_label = None
    if config.aux_clusters:
        size = -(-L // config.aux_clusters)
        cluster_of_label = balanced_groups(_as_read(emb), size, seed=seed).group_of_label
    if head.name not in GROUPED_HEADS:
        return None, cluster_of_label
    counts = np.asarray(Y.sum(axis=0)).ravel()
    n_dense = config.n_dense
    by_frequency = np.argsort(-counts, kind="stable")
    dense_labels, tail = by_frequency[:n_dense], np.sort(by_frequency[n_dense:])
    if clustered:
        tail_groups = balanced_groups(_as_read(emb[tail]), head.group_size, seed=seed)
    else:
        tail_groups = random_groups(len(tail), head.group_size, seed=seed)
    slot_of_label = np.empty(L, dtype=np.int64)
    slot_of_label[dense_labels] = np.arange(n_dense)
    slot_of_label[tail] = n_dense + tail_groups.slot_of_label
    return slot_of_label, cluster_of_label


def centroid_index(H, Y, slot_of_label, n_dense, group_size, fanin, seed=0):
    """(G, k) input sets of a model's sparse part: the k largest entries of each group's centroid of
    PIFA embeddings of its labels in the space H the head reads.

    H: (n, d) the head's inputs of n training points (dense, or the sparse features with no encoder),
    Y: (n, L) their labels, slot_of_label: (L,) the model's slots (the n_dense dense slots first, then
    G groups of group_size slots).

    group_index of pifa(H, Y) restricted to the groups' labels; for dense H the PIFA rows are made a
    block of groups at a time (PifaRows), so the memory is H's float64 copy and one block, never the
    (L, d) embeddings (engine.memory.centroid_index_memory); sparse H gives sparse PIFA rows."""
    tail = np.flatnonzero(slot_of_label >= n_dense)
    tail = tail[np.argsort(slot_of_label[tail])]
    groups = LabelGroups(len(tail), group_size, slot_of_label[tail] - n_dense)
    scores = pifa(H, Y[:, tail], dense=False) if sp.issparse(H) else PifaRows(H, Y[:, tail])
    return group_index(groups, scores, fanin, how="centroid", seed=seed)
