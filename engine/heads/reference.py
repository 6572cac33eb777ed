"""Reference backend of the group-shared fixed fan-in layer: float64 numpy, obviously correct.

The one float64 reference of every op of the backend contract (engine/heads/__init__.py): the
layer, its gradients, the fused BCE loss and the fused top-k, which the cpu and cuda backends
(and the CUDA kernels, emulated) are tested against. Used only by tests (and by
`backend="reference"`), never for speed.

Shapes: X (B, d), idx (G, k) int32, W (G, m, k), Z (B, L) with L <= G·m; label l = g·m + j.

    Z[b, g·m+j] = Σ_t W[g,j,t] · X[b, idx[g,t]]                 (+ bias[l])
    dW[g,j,t]   = Σ_b dZ[b, g·m+j] · X[b, idx[g,t]]
    dX[b, i]    = Σ_{(g,t): idx[g,t]=i} Σ_j dZ[b, g·m+j] · W[g,j,t]

Labels past `n_labels` (the padding of the last group) are not returned, and a dZ with fewer
than G·m columns means those labels have zero gradient. Every function returns float64.
"""

import numpy as np


def _n_out(idx, W, n_labels):
    G, m = W.shape[0], W.shape[1]
    return G * m if n_labels is None else int(n_labels)


def forward(X, idx, W, bias=None, n_labels=None):
    """Z (B, n_labels) = the layer applied to X (B, d); n_labels defaults to G·m."""
    X, W = np.asarray(X, np.float64), np.asarray(W, np.float64)
    G, m, k = W.shape
    L = _n_out(idx, W, n_labels)
    Xg = X[:, np.asarray(idx, np.int64)]                   # (B, G, k)
    Z = np.einsum("bgt,gjt->bgj", Xg, W).reshape(X.shape[0], G * m)[:, :L]
    if bias is not None:
        Z = Z + np.asarray(bias, np.float64)[:L]
    return np.ascontiguousarray(Z)                          # (B, L)


def _pad_dz(dZ, G, m):
    dZ = np.asarray(dZ, np.float64)
    B, L = dZ.shape
    full = np.zeros((B, G * m))
    full[:, :L] = dZ
    return full.reshape(B, G, m)                           # (B, G, m)


def grad_input(dZ, idx, W, d):
    """dX (B, d) from dZ (B, L), L <= G·m."""
    W = np.asarray(W, np.float64)
    G, m, k = W.shape
    dZ3 = _pad_dz(dZ, G, m)
    dXg = np.einsum("bgj,gjt->bgt", dZ3, W)                # (B, G, k)
    dX = np.zeros((dZ3.shape[0], d))
    for g in range(G):                                     # idx rows are distinct: no clash within g
        dX[:, np.asarray(idx[g], np.int64)] += dXg[:, g, :]
    return dX


def grad_weight(dZ, X, idx, m=None):
    """dW (G, m, k) from dZ (B, L) and X (B, d). m defaults to L // G (then L must be G·m);
    give m when dZ stops short of the padding (L < G·m)."""
    X = np.asarray(X, np.float64)
    G = np.asarray(idx).shape[0]
    m = _infer_m(np.asarray(dZ).shape[1], G, m)
    dZ3 = _pad_dz(dZ, G, m)                                # (B, G, m)
    Xg = X[:, np.asarray(idx, np.int64)]                   # (B, G, k)
    return np.einsum("bgj,bgt->gjt", dZ3, Xg)


def _infer_m(L, G, m):
    if m is None:
        if L % G:
            raise ValueError(f"grad_weight: dZ has {L} columns, not a multiple of G={G}; pass m")
        m = L // G
    if L > G * m:
        raise ValueError(f"dZ has {L} columns, more than G·m = {G}·{m}")
    return m


def backward(dZ, X, idx, W, need_input=True, need_weight=True, need_bias=False):
    """(dX or None, dW or None, dbias or None) in one call; the signature every backend shares."""
    W = np.asarray(W)
    dX = grad_input(dZ, idx, W, np.asarray(X).shape[1]) if need_input else None
    dW = grad_weight(dZ, X, idx, W.shape[1]) if need_weight else None
    db = np.asarray(dZ, np.float64).sum(0) if need_bias else None
    return dX, dW, db


# ---------------------------------------------------------------------------------------------
# fused ops: loss + gradients, and top-k (the cpu backend never forms Z; these do, in float64)

def dense_targets(y_indptr, y_slots, B, L):
    """Y (B, L) float64 from CSR rows: Y[b, s] = 1 for s in y_slots[y_indptr[b]:y_indptr[b+1]]."""
    Y = np.zeros((B, L))
    indptr = np.asarray(y_indptr, np.int64)
    for b in range(B):
        Y[b, np.asarray(y_slots[indptr[b]:indptr[b + 1]], np.int64)] = 1.0
    return Y


def _mask(slot_mask, L):
    return np.ones(L, bool) if slot_mask is None else np.asarray(slot_mask, bool)[:L]


def group_shared_bce(X, idx, W, bias, y_indptr, y_slots, slot_mask=None, n_labels=None,
                     scale=None, need_grad=True):
    """(loss, dX, dW, dbias or None) of loss = scale·Σ_b Σ_{real s} softplus(Z) - Y·Z (scale
    defaults to 1/B; real: s < n_labels and slot_mask[s]); dZ = scale·(σ(Z) - Y) on real slots."""
    X = np.asarray(X, np.float64)
    B = X.shape[0]
    L = _n_out(idx, W, n_labels)
    scale = 1.0 / max(B, 1) if scale is None else float(scale)
    Z = forward(X, idx, W, bias, L)                                  # (B, L)
    Y = dense_targets(y_indptr, y_slots, B, L)
    real = _mask(slot_mask, L)
    bce = np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))
    loss = scale * float(np.sum(bce[:, real]))
    if not need_grad:
        return loss, None, None, None
    dZ = scale * (np.exp(-np.logaddexp(0.0, -Z)) - Y) * real            # σ(Z) without overflow
    dX, dW, db = backward(dZ, X, idx, W, True, True, bias is not None)
    return loss, dX, dW, db


def group_shared_topk(X, idx, W, bias, K, slot_mask=None, n_labels=None):
    """(scores (B, K) float64, slots (B, K) int64): the K largest logits per row among the real
    slots, larger first, ties to the smaller slot; (-inf, -1) where fewer than K are real."""
    L = _n_out(idx, W, n_labels)
    Z = forward(X, idx, W, bias, L)
    real = np.flatnonzero(_mask(slot_mask, L))
    B = Z.shape[0]
    vals = np.full((B, K), -np.inf)
    slots = np.full((B, K), -1, np.int64)
    for b in range(B):
        order = real[np.lexsort((real, -Z[b, real]))][:K]            # by -score, then slot
        vals[b, :len(order)] = Z[b, order]
        slots[b, :len(order)] = order
    return vals, slots
