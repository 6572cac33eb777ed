"""Float64 references of the fused and DST kernels (engine/cuda/*.cu); obviously correct, for tests.

Built on engine/heads/reference.py (the layer itself). Shapes as there: X (B, d), idx (G, k),
W (G, m, k), bias (L,) or None, label l = g·m + j, L <= G·m; Y as CSR (indptr (B+1,), indices).

    fused_bce(...)        loss = scale·Σ_{b,l} bce(Z[b,l], Y[b,l]); dZ = scale·(σ(Z) - Y); dW, dX, dbias
    topk(...)             best K labels per row: larger logit first, then smaller label
    slot_magnitude(W, L)  score[g, t] = Σ_{j < m_g} |W[g, j, t]|
    regrow(...)           dropped slots refilled from candidates, no input twice in a set
"""

import numpy as np

from ..heads import reference as ref


def dense_labels(indptr, indices, B, L):
    """Y (B, L) float64 from CSR row pointers and column indices."""
    Y = np.zeros((B, L))
    for b in range(B):
        Y[b, np.asarray(indices[indptr[b]:indptr[b + 1]], np.int64)] = 1.0
    return Y


def fused_bce(X, idx, W, bias, indptr, indices, n_labels, scale=1.0):
    """(loss, dX (B, d), dW (G, m, k), dbias (L,) or None) of BCE-with-logits summed over (b, l),
    times `scale` (1/B gives the trainer's loss: summed over labels, mean over the batch)."""
    X = np.asarray(X, np.float64)
    B, d = X.shape
    L = int(n_labels)
    Z = ref.forward(X, idx, W, bias, L)                              # (B, L)
    Y = dense_labels(indptr, indices, B, L)
    loss = scale * np.sum(np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z))))
    dZ = scale * (1.0 / (1.0 + np.exp(-Z)) - Y)
    dX, dW, db = ref.backward(dZ, X, idx, W, True, True, bias is not None)
    return float(loss), dX, dW, db


def topk(X, idx, W, bias, n_labels, K):
    """(values (B, K) float64, labels (B, K) int64): the K largest logits per row, ties to the
    smaller label; rows with fewer than K labels are padded with (-inf, -1)."""
    Z = ref.forward(X, idx, W, bias, n_labels)
    B, L = Z.shape
    vals = np.full((B, K), -np.inf)
    labs = np.full((B, K), -1, np.int64)
    for b in range(B):
        order = np.lexsort((np.arange(L), -Z[b]))[:K]                # by -value, then label
        vals[b, :len(order)] = Z[b, order]
        labs[b, :len(order)] = order
    return vals, labs


def slot_magnitude(W, n_labels):
    """score (G, k) = Σ over the labels of g that exist of |W[g, j, t]|."""
    W = np.asarray(W, np.float64)
    G, m, k = W.shape
    mask = (np.arange(G * m) < n_labels).reshape(G, m, 1)
    return np.sum(np.abs(W) * mask, axis=1)


def regrow(idx, W, slots, cand, d):
    """(new_idx (G, k), W' (G, m, k) float64, n_filled (G,)): per group, slots[g] (slot numbers,
    -1 = none) take in order the first candidates cand[g] in [0, d) that are neither in the old
    set idx[g] nor given to an earlier slot; a regrown slot's weights are zero. When the
    candidates run out, the remaining slots keep their input and weights."""
    idx = np.array(idx, np.int64)
    W = np.array(W, np.float64)
    new = idx.copy()
    filled = np.zeros(len(idx), np.int64)
    for g in range(len(idx)):
        old = set(idx[g].tolist())
        given = set()
        cs = iter(np.asarray(cand[g]).tolist())
        for t in np.asarray(slots[g]).tolist():
            if not 0 <= t < idx.shape[1]:
                continue
            c = next((c for c in cs if 0 <= c < d and c not in old and c not in given), None)
            if c is None:
                break
            new[g, t] = c
            given.add(c)
            W[g, :, t] = 0.0
            filled[g] += 1
    return new, W, filled
