"""Launchers of the kernels in engine/cuda/*.cu: check, allocate, compute the geometry, launch.

One launcher per kernel, written once for two executors:
- on the GPU (engine/heads/cuda.py): `xp` is cupy, `run` calls a CuPy RawModule function;
- on the CPU (tests): `xp` is numpy, `run` is an emulated module (engine/cuda/emulate).
`run(name, grid, block, args)` launches one kernel; ints are passed as np.int32, reals as the
array dtype, arrays as arrays. No NULL is ever passed: a zero bias, an all-ones slot mask and
1-element gradients (when none is asked for) stand in.

Prior validation of index ranges is assumed (engine/heads/group_shared.py checks idx); shapes,
dtypes and contiguity are checked here, with errors that name the argument.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tiles:
    """Tile sizes compiled into the kernels (the -D defines of group_shared.cu)."""
    nt: int = 256        # threads per block (power of two, >= tb and mt)
    tb: int = 32         # batch rows per tile
    mt: int = 32         # labels per tile
    kt: int = 32         # inputs per tile (k-chunk)
    kmax: int = 32       # largest K of the fused top-k
    minb: int = 4        # blocks per SM promised to ptxas

    def defines(self, dtype=np.float32):
        d = {"GS_NT": self.nt, "GS_TB": self.tb, "GS_MT": self.mt, "GS_KT": self.kt,
             "GS_KMAX": self.kmax, "GS_MINB": self.minb}
        if np.dtype(dtype) == np.float64:
            d["GS_DOUBLE"] = None
        return d


def _cdiv(a, b):
    return -(-a // b)


def _i(v):
    return np.int32(v)


def _check(xp, name, a, dtype, shape):
    """a as a C-contiguous array of `dtype` and `shape` (a copy only when it is not one)."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    return xp.ascontiguousarray(a)


def _layer(xp, X, idx, W, bias, L):
    """Checked (X, idx, W, bias, dims) of the layer; bias None -> zeros."""
    if X.ndim != 2 or W.ndim != 3 or idx.ndim != 2:
        raise ValueError(f"expected X (B, d), idx (G, k), W (G, m, k); got X {tuple(X.shape)}, "
                         f"idx {tuple(idx.shape)}, W {tuple(W.shape)}")
    B, d = X.shape
    G, m, k = W.shape
    dt = X.dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"X has dtype {dt}: the cuda kernels take float32 or float64")
    L = G * m if L is None else int(L)
    if not (G - 1) * m < L <= G * m:
        raise ValueError(f"n_labels={L} does not fit G={G} groups of m={m}")
    X = _check(xp, "X", X, dt, (B, d))
    W = _check(xp, "W", W, dt, (G, m, k))
    idx = _check(xp, "idx", idx, np.int32, (G, k))
    bias = xp.zeros(L, dt) if bias is None else _check(xp, "bias", bias, dt, (L,))
    return X, idx, W, bias, (B, d, G, m, k, L)


def forward(run, xp, tiles, X, idx, W, bias=None, n_labels=None, version=None):
    """Z (B, L) = layer(X): gs_forward_v<version>, grid (G, ceil(B/TB)). By default v2 (k split
    across the threads) when m < MT, where v1 leaves threads idle, else v1."""
    X, idx, W, bias, (B, d, G, m, k, L) = _layer(xp, X, idx, W, bias, n_labels)
    version = version or (2 if m < tiles.mt else 1)
    if version not in (1, 2):
        raise ValueError(f"forward version={version}: expected 1 or 2")
    Z = xp.empty((B, L), X.dtype)
    if B and L:
        run(f"gs_forward_v{version}", (G, _cdiv(B, tiles.tb)), (tiles.nt,),
            (X, idx, W, bias, Z, _i(B), _i(d), _i(G), _i(m), _i(k), _i(L)))
    return Z


def grad_input(run, xp, tiles, dZ, idx, W, d):
    """dX (B, d) from dZ (B, L): gs_grad_input_v1 (atomics), grid (G, ceil(B/TB))."""
    G, m, k = W.shape
    B, L = dZ.shape
    if not (G - 1) * m < L <= G * m:
        raise ValueError(f"dZ has {L} columns: does not fit G={G} groups of m={m}")
    dt = W.dtype
    dZ = _check(xp, "dZ", dZ, dt, (B, L))
    W = _check(xp, "W", W, dt, (G, m, k))
    idx = _check(xp, "idx", idx, np.int32, (G, k))
    dX = xp.zeros((B, int(d)), dt)
    if B and k:
        run("gs_grad_input_v1", (G, _cdiv(B, tiles.tb)), (tiles.nt,),
            (dZ, idx, W, dX, _i(B), _i(d), _i(G), _i(m), _i(k), _i(L)))
    return dX


def grad_weight(run, xp, tiles, dZ, X, idx, m):
    """dW (G, m, k) from dZ (B, L) and X (B, d): gs_grad_weight_v1 (deterministic),
    grid (G, ceil(k/KT))."""
    G, k = idx.shape
    B, L = dZ.shape
    m = int(m)
    if not (G - 1) * m < L <= G * m:
        raise ValueError(f"dZ has {L} columns: does not fit G={G} groups of m={m}")
    dt = X.dtype
    dZ = _check(xp, "dZ", dZ, dt, (B, L))
    X = _check(xp, "X", X, dt, (B, X.shape[1]))
    idx = _check(xp, "idx", idx, np.int32, (G, k))
    dW = xp.empty((G, m, k), dt)
    if k:
        run("gs_grad_weight_v1", (G, _cdiv(k, tiles.kt)), (tiles.nt,),
            (dZ, X, idx, dW, _i(B), _i(X.shape[1]), _i(G), _i(m), _i(k), _i(L)))
    return dW


def _mask(xp, mask, L):
    """slot_mask (>= L,) bool or None as the kernels' (L,) uint8 flags (None: every slot real)."""
    if mask is None:
        return xp.ones(L, np.uint8)
    if mask.ndim != 1 or mask.shape[0] < L:
        raise ValueError(f"slot_mask has shape {tuple(mask.shape)}, expected ({L},) (one flag per slot)")
    return xp.ascontiguousarray(mask[:L].astype(np.uint8))


def _unmasked(version, mask, what):
    """Version 1 of a kernel knows no slot mask: refuse one that masks anything."""
    if version == 1 and not bool(mask.all()):
        raise ValueError(f"{what}_v1 knows no slot mask: take version 2")


def fused_bce(run, xp, tiles, X, idx, W, bias, indptr, indices, mask=None, n_labels=None,
              scale=1.0, need_grad=True, version=2):
    """(loss float, dX (B, d), dW (G, m, k), dbias (L,) or None; the three None without
    need_grad): BCE-with-logits of the layer's logits against Y (CSR: indptr (B+1,), indices
    sorted per row) over the real slots (mask (>= L,) bool, None: all), summed over (b, l) and
    times `scale`, with its gradients; gs_fused_bce_v<version>, grid (G), no (B, L) array.
    v1 knows no mask and always computes the gradients."""
    has_bias = bias is not None
    X, idx, W, bias, (B, d, G, m, k, L) = _layer(xp, X, idx, W, bias, n_labels)
    indptr = _check(xp, "indptr", indptr, np.int32, (B + 1,))
    indices = _check(xp, "indices", indices, np.int32, (indices.shape[0],))
    mask = _mask(xp, mask, L)
    if version not in (1, 2):
        raise ValueError(f"fused_bce version={version}: expected 1 or 2")
    _unmasked(version, mask, "gs_fused_bce")
    dt = X.dtype
    grads = need_grad or version == 1
    dX = xp.zeros((B, d) if grads else 1, dt)                 # 1-element dummies: never touched
    dW = xp.zeros((G, m, k) if grads else 1, dt)
    db = xp.zeros(L if grads else 1, dt)
    parts = xp.zeros(G, dt)
    sizes = (_i(B), _i(d), _i(G), _i(m), _i(k), _i(L), dt.type(scale))
    if B and L and version == 1:
        run("gs_fused_bce_v1", (G,), (tiles.nt,),
            (X, idx, W, bias, indptr, indices, dX, dW, db, parts) + sizes)
    elif B and L:
        run("gs_fused_bce_v2", (G,), (tiles.nt,),
            (X, idx, W, bias, mask, indptr, indices, dX, dW, db, parts) + sizes + (_i(need_grad),))
    loss = float(parts.astype(np.float64).sum())
    if not need_grad:
        return loss, None, None, None
    return loss, dX, dW, (db if has_bias else None)


def topk(run, xp, tiles, X, idx, W, bias, K, mask=None, n_labels=None, groups_per_chunk=None,
         version=2):
    """(values (B, K), labels (B, K) int32): the K best logits per row among the real slots
    (mask (>= L,) bool, None: all), larger first, ties to the smaller label, (-inf, -1) where
    fewer than K are real; without the (B, L) logits. gs_topk_partial_v<version> over chunks of
    groups, grid (n_chunks, ceil(B/TB)), then gs_topk_merge_v<version>, grid (B).
    v1 knows no mask and takes K <= GS_KMAX; v2 takes any K (n_chunks ~ min(1024, 32768/K), so
    the chunks' lists stay B·32768 entries at most)."""
    X, idx, W, bias, (B, d, G, m, k, L) = _layer(xp, X, idx, W, bias, n_labels)
    K = int(K)
    if version not in (1, 2):
        raise ValueError(f"topk version={version}: expected 1 or 2")
    kmax = tiles.kmax if version == 1 else None
    if K < 1 or (kmax and K > kmax):
        raise ValueError(f"K={K}: gs_topk_partial_v{version} takes 1 <= K" + (f" <= {kmax} (GS_KMAX)" if kmax else ""))
    mask = _mask(xp, mask, L)
    _unmasked(version, mask, "gs_topk_partial")
    gpc = groups_per_chunk or max(1, _cdiv(G, max(1, min(1024, 32768 // K))))   # enough blocks
    nc = _cdiv(G, gpc)
    dt = X.dtype
    cv = xp.empty((B, nc, K), dt)
    ci = xp.empty((B, nc, K), np.int32)
    vals = xp.empty((B, K), dt)
    labs = xp.empty((B, K), np.int32)
    sizes = (_i(B), _i(d), _i(G), _i(m), _i(k), _i(L), _i(gpc), _i(K))
    if B and version == 1:
        run("gs_topk_partial_v1", (nc, _cdiv(B, tiles.tb)), (tiles.nt,), (X, idx, W, bias, cv, ci) + sizes)
        run("gs_topk_merge_v1", (B,), (tiles.nt,), (cv, ci, vals, labs, _i(nc * K), _i(K)))
    elif B:
        run("gs_topk_partial_v2", (nc, _cdiv(B, tiles.tb)), (tiles.nt,), (X, idx, W, bias, mask, cv, ci) + sizes)
        run("gs_topk_merge_v2", (B,), (tiles.nt,), (cv, ci, xp.zeros((B, nc), np.int32), vals, labs, _i(nc), _i(K)))
    return vals, labs
