"""CPU backend of the group-shared fixed fan-in layer: numba kernels, parallel over groups.

Shapes: X (B, d), idx (G, k) int32, W (G, m, k), Z (B, L) with L <= G·m; label l = g·m + j.

    Z[b, g·m+j] = Σ_t W[g,j,t] · X[b, idx[g,t]]                 (+ bias[l])
    dW[g,j,t]   = Σ_b dZ[b, g·m+j] · X[b, idx[g,t]]
    dX[b, i]    = Σ_{(g,t): idx[g,t]=i} Σ_j dZ[b, g·m+j] · W[g,j,t]

How it runs:
- Kernels work on the transposed activations XT (d, B) and ZT (L, B), so every inner loop runs
  over the batch, contiguously. `forward` returns Z as the transposed view ZT.T (an F-ordered
  (B, L) array, no copy). Backward reads an F-ordered dZ (what an elementwise loss on Z hands
  back) in place; a C-ordered dZ is transposed block by block on the way (~1.5x slower
  backward at the benchmark shape); anything else is copied once.
- Per group, the k input rows XT[idx[g]] are gathered once into a (k, B) tile that stays in
  L1 while all m labels of the group use it (m = 1 reads XT rows in place instead).
- The arithmetic is two GEMM micro-kernels on explicit 512-bit vectors (_simd.py): `_gemm_rows`
  keeps a 4 rows × 4 vectors tile of accumulators in registers (forward; dX), `_dot_rows` a
  4 × 4 tile of dot products over the batch (dW). Batch tails use masked vectors.
- The forward writes Z with non-temporal stores when its rows are 64-byte aligned (B·itemsize
  a multiple of 64), into an output buffer reused once nothing references the previous one
  (_OutputPool: saves the page faults of a fresh 100 MB buffer every call).
- Threads take equal, contiguous ranges of groups (static, one range per thread). dW and dbias
  rows belong to one group, so one thread: deterministic, no atomics. dX is accumulated into
  one (d, B) buffer per thread and the buffers are summed at the end in a fixed order:
  deterministic for a fixed thread count.
- Fused loss and top-k (group_shared_bce, group_shared_topk): the same micro-kernels on one
  (m, B) tile of logits per thread, which is turned into dZ (or scanned for the top k) in
  place: the (B, L) logits never exist. See the section "fused" below.
- fastmath allows reassociation and contraction (FMA), not "no NaNs": NaN and inf propagate.

The backend contract of engine/heads/__init__.py (numpy in, numpy out, float32 or float64;
dtype of the result = the common dtype of the inputs).
"""

import sys
import threading

import numba
import numpy as np
from numba import njit, prange

from ._simd import (prefetch, store_fence, vabs, vadd, vdiv, vexp, vfma, vgt_bits, vkeep,
                    vload, vload_m, vlog1p_unit, vmax, vmul, vselect_nonneg, vsplat, vstore,
                    vstore_m, vstore_nt, vstore_sums1x4, vstore_sums4x4, vsub, vsum, vwidth, vzero)

_FM = {"reassoc", "contract", "nsz", "arcp"}      # fast, but NaN/inf semantics kept


# ---------------------------------------------------------------------------------------------
# micro-kernels: register tiles of SIMD accumulators (V lanes = 512 bits; see _simd.py)

@njit(inline="always")
def _rows4(M, rows, i0, last):
    """The rows M[rows[i0 + a]] for a < 4 of a tile, rows[last] in place of those past `last`."""
    return (M[rows[i0]], M[rows[min(i0 + 1, last)]], M[rows[min(i0 + 2, last)]],
            M[rows[min(i0 + 3, last)]])


@njit(fastmath=_FM, cache=True)
def _gemm_rows(out, orow, A, ni, ns, src, srow, init, accumulate, nt):
    """out[orow[i], :] = init[i] + Σ_{s<ns} A[i, s] · src[srow[s], :]   for i < ni
    (accumulate: out[orow[i], :] += Σ ... instead; init unused).

    Register tile: 4 output rows × 4 vectors of the batch (16 accumulators), one pass over s
    per tile: per s, 4 loads and 4 broadcasts feed 16 FMAs. Batch tails use masked vectors.
    nt: non-temporal stores (out's rows 64-byte aligned, B·itemsize a multiple of 64). The rows
    out[orow[i]] must be distinct (labels of a group, or a group's distinct inputs)."""
    B = out.shape[1]
    V = vwidth(out)
    W4 = 4 * V
    b4 = B - B % W4
    i4 = ni - ni % 4
    for i0 in range(0, i4, 4):
        o0, o1, o2, o3 = _rows4(out, orow, i0, i0 + 3)
        for b0 in range(0, b4, W4):
            if accumulate:
                a00 = vload(o0, b0); a01 = vload(o0, b0 + V); a02 = vload(o0, b0 + 2 * V); a03 = vload(o0, b0 + 3 * V)
                a10 = vload(o1, b0); a11 = vload(o1, b0 + V); a12 = vload(o1, b0 + 2 * V); a13 = vload(o1, b0 + 3 * V)
                a20 = vload(o2, b0); a21 = vload(o2, b0 + V); a22 = vload(o2, b0 + 2 * V); a23 = vload(o2, b0 + 3 * V)
                a30 = vload(o3, b0); a31 = vload(o3, b0 + V); a32 = vload(o3, b0 + 2 * V); a33 = vload(o3, b0 + 3 * V)
            else:
                a00 = vsplat(init[i0]); a01 = a00; a02 = a00; a03 = a00
                a10 = vsplat(init[i0 + 1]); a11 = a10; a12 = a10; a13 = a10
                a20 = vsplat(init[i0 + 2]); a21 = a20; a22 = a20; a23 = a20
                a30 = vsplat(init[i0 + 3]); a31 = a30; a32 = a30; a33 = a30
            for s in range(ns):
                x = src[srow[s]]
                x0 = vload(x, b0); x1 = vload(x, b0 + V); x2 = vload(x, b0 + 2 * V); x3 = vload(x, b0 + 3 * V)
                w = vsplat(A[i0, s])
                a00 = vfma(w, x0, a00); a01 = vfma(w, x1, a01); a02 = vfma(w, x2, a02); a03 = vfma(w, x3, a03)
                w = vsplat(A[i0 + 1, s])
                a10 = vfma(w, x0, a10); a11 = vfma(w, x1, a11); a12 = vfma(w, x2, a12); a13 = vfma(w, x3, a13)
                w = vsplat(A[i0 + 2, s])
                a20 = vfma(w, x0, a20); a21 = vfma(w, x1, a21); a22 = vfma(w, x2, a22); a23 = vfma(w, x3, a23)
                w = vsplat(A[i0 + 3, s])
                a30 = vfma(w, x0, a30); a31 = vfma(w, x1, a31); a32 = vfma(w, x2, a32); a33 = vfma(w, x3, a33)
            if nt:
                vstore_nt(o0, b0, a00); vstore_nt(o0, b0 + V, a01); vstore_nt(o0, b0 + 2 * V, a02); vstore_nt(o0, b0 + 3 * V, a03)
                vstore_nt(o1, b0, a10); vstore_nt(o1, b0 + V, a11); vstore_nt(o1, b0 + 2 * V, a12); vstore_nt(o1, b0 + 3 * V, a13)
                vstore_nt(o2, b0, a20); vstore_nt(o2, b0 + V, a21); vstore_nt(o2, b0 + 2 * V, a22); vstore_nt(o2, b0 + 3 * V, a23)
                vstore_nt(o3, b0, a30); vstore_nt(o3, b0 + V, a31); vstore_nt(o3, b0 + 2 * V, a32); vstore_nt(o3, b0 + 3 * V, a33)
            else:
                vstore(o0, b0, a00); vstore(o0, b0 + V, a01); vstore(o0, b0 + 2 * V, a02); vstore(o0, b0 + 3 * V, a03)
                vstore(o1, b0, a10); vstore(o1, b0 + V, a11); vstore(o1, b0 + 2 * V, a12); vstore(o1, b0 + 3 * V, a13)
                vstore(o2, b0, a20); vstore(o2, b0 + V, a21); vstore(o2, b0 + 2 * V, a22); vstore(o2, b0 + 3 * V, a23)
                vstore(o3, b0, a30); vstore(o3, b0 + V, a31); vstore(o3, b0 + 2 * V, a32); vstore(o3, b0 + 3 * V, a33)
        for b0 in range(b4, B, V):                        # batch tail: one vector, masked
            n = min(V, B - b0)
            if accumulate:
                a0 = vload_m(o0, b0, n); a1 = vload_m(o1, b0, n); a2 = vload_m(o2, b0, n); a3 = vload_m(o3, b0, n)
            else:
                a0 = vsplat(init[i0]); a1 = vsplat(init[i0 + 1]); a2 = vsplat(init[i0 + 2]); a3 = vsplat(init[i0 + 3])
            for s in range(ns):
                x0 = vload_m(src[srow[s]], b0, n)
                a0 = vfma(vsplat(A[i0, s]), x0, a0)
                a1 = vfma(vsplat(A[i0 + 1, s]), x0, a1)
                a2 = vfma(vsplat(A[i0 + 2, s]), x0, a2)
                a3 = vfma(vsplat(A[i0 + 3, s]), x0, a3)
            vstore_m(o0, b0, a0, n); vstore_m(o1, b0, a1, n); vstore_m(o2, b0, a2, n); vstore_m(o3, b0, a3, n)
    for i in range(i4, ni):                               # leftover rows, one at a time
        o = out[orow[i]]
        for b0 in range(0, b4, W4):
            if accumulate:
                a0 = vload(o, b0); a1 = vload(o, b0 + V); a2 = vload(o, b0 + 2 * V); a3 = vload(o, b0 + 3 * V)
            else:
                a0 = vsplat(init[i]); a1 = a0; a2 = a0; a3 = a0
            for s in range(ns):
                x = src[srow[s]]
                w = vsplat(A[i, s])
                a0 = vfma(w, vload(x, b0), a0); a1 = vfma(w, vload(x, b0 + V), a1)
                a2 = vfma(w, vload(x, b0 + 2 * V), a2); a3 = vfma(w, vload(x, b0 + 3 * V), a3)
            if nt:
                vstore_nt(o, b0, a0); vstore_nt(o, b0 + V, a1); vstore_nt(o, b0 + 2 * V, a2); vstore_nt(o, b0 + 3 * V, a3)
            else:
                vstore(o, b0, a0); vstore(o, b0 + V, a1); vstore(o, b0 + 2 * V, a2); vstore(o, b0 + 3 * V, a3)
        for b0 in range(b4, B, V):
            n = min(V, B - b0)
            a0 = vload_m(o, b0, n) if accumulate else vsplat(init[i])
            for s in range(ns):
                a0 = vfma(vsplat(A[i, s]), vload_m(src[srow[s]], b0, n), a0)
            vstore_m(o, b0, a0, n)


@njit(fastmath=_FM, cache=True)
def _dot_rows(C, P, prow, n_p, Q, qrow, n_q):
    """C[i, s] = Σ_b P[prow[i], b] · Q[qrow[s], b]   for i < n_p, s < n_q.

    Register tile: 4 × 4 dot products (16 vector accumulators over the batch, 8 loads for 16
    FMAs per vector), summed across lanes at the end (a whole tile's 16 sums in one shuffle-add
    tree: vstore_sums4x4). A last block of fewer than 4 s repeats its last row and drops the
    extra results."""
    B = P.shape[1]
    V = vwidth(P)
    bV = B - B % V
    nt = B - bV
    i4 = n_p - n_p % 4
    sl = n_q - 1
    for i0 in range(0, i4, 4):
        p0, p1, p2, p3 = _rows4(P, prow, i0, i0 + 3)
        for s0 in range(0, n_q, 4):
            q0, q1, q2, q3 = _rows4(Q, qrow, s0, sl)
            z = vzero(P)
            c00 = z; c01 = z; c02 = z; c03 = z; c10 = z; c11 = z; c12 = z; c13 = z
            c20 = z; c21 = z; c22 = z; c23 = z; c30 = z; c31 = z; c32 = z; c33 = z
            for b0 in range(0, B, V):
                if b0 < bV:
                    u0 = vload(p0, b0); u1 = vload(p1, b0); u2 = vload(p2, b0); u3 = vload(p3, b0)
                    v0 = vload(q0, b0); v1 = vload(q1, b0); v2 = vload(q2, b0); v3 = vload(q3, b0)
                else:
                    u0 = vload_m(p0, b0, nt); u1 = vload_m(p1, b0, nt); u2 = vload_m(p2, b0, nt); u3 = vload_m(p3, b0, nt)
                    v0 = vload_m(q0, b0, nt); v1 = vload_m(q1, b0, nt); v2 = vload_m(q2, b0, nt); v3 = vload_m(q3, b0, nt)
                c00 = vfma(u0, v0, c00); c01 = vfma(u0, v1, c01); c02 = vfma(u0, v2, c02); c03 = vfma(u0, v3, c03)
                c10 = vfma(u1, v0, c10); c11 = vfma(u1, v1, c11); c12 = vfma(u1, v2, c12); c13 = vfma(u1, v3, c13)
                c20 = vfma(u2, v0, c20); c21 = vfma(u2, v1, c21); c22 = vfma(u2, v2, c22); c23 = vfma(u2, v3, c23)
                c30 = vfma(u3, v0, c30); c31 = vfma(u3, v1, c31); c32 = vfma(u3, v2, c32); c33 = vfma(u3, v3, c33)
            if s0 + 3 < n_q:                              # a whole tile: 16 sums in one tree
                vstore_sums4x4(C[i0], C[i0 + 1], C[i0 + 2], C[i0 + 3], s0, c00, c01, c02, c03,
                               c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)
                continue
            C[i0, s0] = vsum(c00); C[i0 + 1, s0] = vsum(c10); C[i0 + 2, s0] = vsum(c20); C[i0 + 3, s0] = vsum(c30)
            if s0 + 1 < n_q:
                C[i0, s0 + 1] = vsum(c01); C[i0 + 1, s0 + 1] = vsum(c11); C[i0 + 2, s0 + 1] = vsum(c21); C[i0 + 3, s0 + 1] = vsum(c31)
            if s0 + 2 < n_q:
                C[i0, s0 + 2] = vsum(c02); C[i0 + 1, s0 + 2] = vsum(c12); C[i0 + 2, s0 + 2] = vsum(c22); C[i0 + 3, s0 + 2] = vsum(c32)
            if s0 + 3 < n_q:
                C[i0, s0 + 3] = vsum(c03); C[i0 + 1, s0 + 3] = vsum(c13); C[i0 + 2, s0 + 3] = vsum(c23); C[i0 + 3, s0 + 3] = vsum(c33)
    for i in range(i4, n_p):                              # leftover rows: 1 × 4 tiles
        p = P[prow[i]]
        for s0 in range(0, n_q, 4):
            q0, q1, q2, q3 = _rows4(Q, qrow, s0, sl)
            z = vzero(P)
            c0 = z; c1 = z; c2 = z; c3 = z
            for b0 in range(0, B, V):
                if b0 < bV:
                    u = vload(p, b0)
                    c0 = vfma(u, vload(q0, b0), c0); c1 = vfma(u, vload(q1, b0), c1)
                    c2 = vfma(u, vload(q2, b0), c2); c3 = vfma(u, vload(q3, b0), c3)
                else:
                    u = vload_m(p, b0, nt)
                    c0 = vfma(u, vload_m(q0, b0, nt), c0); c1 = vfma(u, vload_m(q1, b0, nt), c1)
                    c2 = vfma(u, vload_m(q2, b0, nt), c2); c3 = vfma(u, vload_m(q3, b0, nt), c3)
            if s0 + 3 < n_q:
                vstore_sums1x4(C[i], s0, c0, c1, c2, c3)
                continue
            C[i, s0] = vsum(c0)
            if s0 + 1 < n_q:
                C[i, s0 + 1] = vsum(c1)
            if s0 + 2 < n_q:
                C[i, s0 + 2] = vsum(c2)
            if s0 + 3 < n_q:
                C[i, s0 + 3] = vsum(c3)


@njit(fastmath=_FM, cache=True)
def _row_sum(r):
    """Σ_b r[b]."""
    B = r.shape[0]
    V = vwidth(r)
    bV = B - B % V
    a = vzero(r)
    for b0 in range(0, bV, V):
        a = vadd(a, vload(r, b0))
    if bV < B:
        a = vadd(a, vload_m(r, bV, B - bV))
    return vsum(a)


@njit(fastmath=_FM, cache=True)
def _transpose_block(dst, dZ, l0, nl):
    """dst[j, b] = dZ[b, l0 + j]   for j < nl (dZ (B, L) C-ordered), in 16 × 16 tiles."""
    B = dZ.shape[0]
    for b0 in range(0, B, 16):
        b1 = min(B, b0 + 16)
        for j0 in range(0, nl, 16):
            j1 = min(nl, j0 + 16)
            for j in range(j0, j1):
                d = dst[j]
                for b in range(b0, b1):
                    d[b] = dZ[b, l0 + j]


@njit(fastmath=_FM, cache=True)
def _prefetch_block(dZ, l0, nl):
    """Prefetch dZ[:, l0 : l0+nl] (dZ (B, L) C-ordered), line by line."""
    step = max(1, 64 // dZ.itemsize)
    for b in range(dZ.shape[0]):
        r = dZ[b]
        for j in range(l0, l0 + nl, step):
            prefetch(r, j)


@njit(fastmath=_FM, cache=True)
def _gather_rows(tile, XT, rows, k):
    """tile[t, :] = XT[rows[t], :]   for t < k."""
    B = XT.shape[1]
    for t in range(k):
        r = XT[rows[t]]
        o = tile[t]
        for b in range(B):
            o[b] = r[b]


@njit(cache=True)
def _logit_buffers(XT, W):
    """One thread's buffers for _group_logits: (tile (k, B) for a group's gathered inputs, empty
    when m = 1 (rows read in place), ar = 0, 1, ... (max(k, m),), init (m,) for its biases)."""
    m, k = W.shape[1], W.shape[2]
    tile = np.empty((k if m > 1 else 0, XT.shape[1]), XT.dtype)
    return tile, np.arange(max(k, m)), np.empty(m, XT.dtype)


@njit(fastmath=_FM, cache=True)
def _group_logits(Z, zrow, tile, ar, init, XT, idx, W, bias, g, L, zero, nt):
    """Z[zrow[j]] = Σ_t W[g, j, t] · XT[idx[g, t]] + bias[g·m + j] for the mv = min(m, L - g·m)
    slots j of group g that exist (bias empty: none); returns mv (<= 0: nothing written).
    zrow: distinct rows of Z; tile, ar, init: _logit_buffers'; nt: non-temporal stores (Z's rows
    64-byte aligned). With m > 1 the group's k input rows are gathered into `tile` once, for
    its m labels (m = 1 reads the rows of XT in place)."""
    k = idx.shape[1]
    m = W.shape[1]
    mv = min(m, L - g * m)
    if mv <= 0:
        return mv
    has_bias = bias.shape[0] > 0
    for j in range(mv):
        init[j] = bias[g * m + j] if has_bias else zero
    if m > 1:
        _gather_rows(tile, XT, idx[g], k)
        _gemm_rows(Z, zrow, W[g], mv, k, tile, ar, init, False, nt)
    else:
        _gemm_rows(Z, zrow, W[g], mv, k, XT, idx[g], init, False, nt)
    return mv


# ---------------------------------------------------------------------------------------------
# kernels

@njit(parallel=True, fastmath=_FM, cache=True)
def _forward_kernel(XT, idx, W, bias, ZT, nc, nt, zero):
    """ZT (L, B) = layer(XT (d, B)), L <= G·m; bias (L,) or empty for none; nc group ranges;
    nt: ZT's rows are 64-byte aligned (non-temporal stores)."""
    G = idx.shape[0]
    m = W.shape[1]
    for c in prange(nc):
        tile, ar, init = _logit_buffers(XT, W)
        orow = np.empty(m, np.int64)                      # the rows of ZT of a group's labels
        for g in range(c * G // nc, (c + 1) * G // nc):
            for j in range(m):
                orow[j] = g * m + j
            _group_logits(ZT, orow, tile, ar, init, XT, idx, W, bias, g, ZT.shape[0], zero, nt)
        if nt:
            store_fence()                                 # non-temporal stores done before the join


@njit(parallel=True, fastmath=_FM, cache=True)
def _backward_kernel(dZ, trans, XT, idx, W, need_x, need_w, need_b, dXpart, dW, db, gb, zero):
    """dZ is (L, B) when trans, else (B, L); L <= G·m. Writes dXpart (nc, d, B) (per-thread
    partial dX^T, zeroed by the caller), dW (G, m, k), db (L,) as asked. A C-ordered dZ is
    transposed gb groups at a time into a (gb·m, B) buffer."""
    G, k = idx.shape
    m = W.shape[1]
    if trans:
        L, B = dZ.shape
    else:
        B, L = dZ.shape
    nc = dXpart.shape[0]
    for c in prange(nc):
        g0, g1 = c * G // nc, (c + 1) * G // nc
        tile = np.empty((k, B), dZ.dtype)
        dzs = np.empty((0 if trans else gb * m, B), dZ.dtype)
        ar = np.arange(k)
        zrow = np.empty(m, np.int64)
        init = np.empty(0, dZ.dtype)
        part = dXpart[c]
        gs = g0                                           # first group in dzs
        for g in range(g0, g1):
            mv = min(m, L - g * m)
            if mv <= 0:
                if need_w:
                    dW[g] = zero
                continue
            if trans:
                src = dZ
                for j in range(mv):
                    zrow[j] = g * m + j
            else:
                src = dzs
                if (g - g0) % gb == 0:                    # transpose the next gb groups' block
                    gs = g
                    l0 = g * m
                    nl = min(gb * m, L - l0)
                    _transpose_block(dzs, dZ, l0, nl)
                    if g + gb < g1:                       # ask for the next block meanwhile
                        _prefetch_block(dZ, l0 + gb * m, min(gb * m, L - l0 - gb * m))
                for j in range(mv):
                    zrow[j] = (g - gs) * m + j
            if need_b:
                for j in range(mv):
                    db[g * m + j] = _row_sum(src[zrow[j]])
            if need_w:
                if m > 1:
                    _gather_rows(tile, XT, idx[g], k)
                    _dot_rows(dW[g], src, zrow, mv, tile, ar, k)
                else:
                    _dot_rows(dW[g], src, zrow, mv, XT, idx[g], k)
                for j in range(mv, m):
                    dW[g, j] = zero
            if need_x:
                _gemm_rows(part, idx[g], W[g].T, k, mv, src, zrow, init, True, False)


@njit(parallel=True, fastmath=_FM, cache=True)
def _reduce_partials(dXpart, dX):
    """dX (B, d) = Σ_c dXpart[c].T, summed in a fixed order."""
    nc, d, B = dXpart.shape
    for i in prange(d):
        for b in range(B):
            s = dXpart[0, i, b]
            for c in range(1, nc):
                s += dXpart[c, i, b]
            dX[b, i] = s


# ---------------------------------------------------------------------------------------------
# wrappers: check layouts, allocate, launch. Prior validation of shapes and ranges is assumed.

def _dtype(*arrays):
    dt = np.result_type(*[a.dtype for a in arrays])
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _n_chunks(G):
    """Group ranges, one per thread (the number of per-thread dX buffers)."""
    return max(1, min(numba.get_num_threads(), G))


class _OutputPool:
    """Output buffers of recent forwards, handed out again once nothing else references them.

    Logits are the largest tensor here (B·L: 100 MB at B=256, L=100,000), and a fresh buffer
    that size costs more in page faults (~10 ms) than the forward's arithmetic (~7 ms). Every
    view of a buffer, the torch tensor made from it included, holds a reference to it, so a
    buffer whose reference count is the pool's own is free. At most `slots` buffers are kept;
    release_output_buffers() drops them."""

    def __init__(self, slots=2):
        self.slots, self.bufs, self.lock = slots, [], threading.Lock()
        probe = [np.empty(1)]
        self.free_refs = sys.getrefcount(probe[0])                      # list slot + argument

    def empty(self, nbytes):
        with self.lock:
            for i in range(len(self.bufs)):
                if self.bufs[i].nbytes == nbytes and sys.getrefcount(self.bufs[i]) == self.free_refs:
                    raw = self.bufs.pop(i)
                    break
            else:
                raw = np.empty(nbytes, np.uint8)
            self.bufs.append(raw)
            del self.bufs[:-self.slots]
            return raw

    def clear(self):
        with self.lock:
            self.bufs.clear()


_pool = _OutputPool()


def release_output_buffers():
    """Drop the forward's cached output buffers (memory of outputs no longer referenced)."""
    _pool.clear()


def _empty_aligned(shape, dtype, pooled=False):
    """np.empty(shape, dtype) whose data starts on a 64-byte boundary (from the pool if pooled)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = _pool.empty(n + 64) if pooled else np.empty(n + 64, np.uint8)
    off = (-raw.__array_interface__["data"][0]) % 64
    return raw[off:off + n].view(dtype).reshape(shape)


def _transposed(A, dtype):
    """A.T as a C-contiguous array of `dtype`, free when A is F-ordered."""
    return np.ascontiguousarray(np.asarray(A, dtype).T)


def forward(X, idx, W, bias=None, n_labels=None):
    """Z (B, n_labels) = layer(X (B, d)); n_labels defaults to G·m.

    Returns the transposed view ZT.T of a C-contiguous (n_labels, B) array."""
    X, W = np.asarray(X), np.asarray(W)
    dt = _dtype(X, W)
    G, m, k = W.shape
    L = G * m if n_labels is None else int(n_labels)
    XT = _transposed(X, dt)                                             # (d, B)
    W = np.ascontiguousarray(W, dt)
    idx = np.ascontiguousarray(idx, np.int32)
    b = np.zeros(0, dt) if bias is None else np.ascontiguousarray(bias, dt)
    B = X.shape[0]
    ZT = _empty_aligned((L, B), dt, pooled=True)                        # (L, B)
    nt = (B * dt.itemsize) % 64 == 0
    _forward_kernel(XT, idx, W, b, ZT, _n_chunks(G), nt, dt.type(0))
    return ZT.T                                                         # (B, L)


def backward(dZ, X, idx, W, need_input=True, need_weight=True, need_bias=False):
    """(dX (B, d) or None, dW (G, m, k) or None, dbias (L,) or None) in one pass over dZ (B, L)."""
    W = np.asarray(W)
    X = np.asarray(X)
    return _backward(np.asarray(dZ), X, idx, W, W.shape[1], X.shape[1],
                     need_input, need_weight, need_bias)


def _backward(dZ, X, idx, W, m, d, need_input, need_weight, need_bias):
    """X is used only for dW and W only for dX (either may be None when not needed)."""
    dt = _dtype(*[a for a in (dZ, X, W) if a is not None])
    G, k = np.shape(idx)
    B, L = dZ.shape
    if L > G * m:
        raise ValueError(f"dZ has {L} columns, more than G·m = {G}·{m}")
    if dZ.dtype == dt and dZ.T.flags.c_contiguous:
        dZk, trans = dZ.T, True                                         # (L, B), read in place
    else:
        dZk, trans = np.ascontiguousarray(dZ, dt), False                # (B, L)
    W = np.ascontiguousarray(W, dt) if need_input else np.zeros((1, m, k), dt)
    idx = np.ascontiguousarray(idx, np.int32)
    XT = _transposed(X, dt) if need_weight else np.empty((0, B), dt)    # (d, B)
    nc = _n_chunks(G)
    dXpart = np.zeros((nc, d if need_input else 0, B), dt)              # per-thread dX^T
    dW = np.empty((G, m, k) if need_weight else (0, m, k), dt)
    db = np.empty(L if need_bias else 0, dt)
    gb = max(1, -(-16 // m))                                            # groups per transposed block
    _backward_kernel(dZk, trans, XT, idx, W, need_input, need_weight, need_bias,
                     dXpart, dW, db, gb, dt.type(0))
    dX = None
    if need_input:
        dX = np.empty((B, d), dt)
        _reduce_partials(dXpart, dX)
    return dX, (dW if need_weight else None), (db if need_bias else None)


def grad_input(dZ, idx, W, d):
    """dX (B, d) from dZ (B, L), L <= G·m."""
    W = np.asarray(W)
    return _backward(np.asarray(dZ), None, idx, W, W.shape[1], int(d), True, False, False)[0]


def grad_weight(dZ, X, idx, m=None):
    """dW (G, m, k) from dZ (B, L) and X (B, d); m defaults to L // G (then L must be G·m)."""
    dZ, X = np.asarray(dZ), np.asarray(X)
    G = np.shape(idx)[0]
    L = dZ.shape[1]
    if m is None:
        if L % G:
            raise ValueError(f"grad_weight: dZ has {L} columns, not a multiple of G={G}; pass m")
        m = L // G
    return _backward(dZ, X, idx, None, int(m), X.shape[1], False, True, False)[1]


# ---------------------------------------------------------------------------------------------
# fused: BCE-with-logits loss + gradients, and top-k, group by group without the (B, L) logits
#
# Labels arrive per batch row as CSR (y_indptr (B+1,), y_slots sorted slot ids); the kernels
# want them per slot, so they are counted-sorted once per call into (cptr (L+1,), crows):
# O(nnz + L). Per group, one thread computes the (m, B) logit tile Zg with _gemm_rows, then
#
#     bce(z, y)  = softplus(z) - y·z,   softplus(z) = max(z, 0) + log1p(e^-|z|)
#     dZ         = scale·(σ(z) - y),    σ(z) = 1/(1+e) if z >= 0 else e/(1+e),  e = e^-|z|
#
# on explicit vectors (one e^x, one log1p, one division per logit; y = 0 everywhere first, then
# the few positives are corrected: loss -= z, dZ -= scale), and feeds dZ to the dW and dX
# micro-kernels while the tile is still in L1. Masked (padding) slots give no loss and dZ = 0.


@njit(cache=True)
def _labels_by_slot(indptr, slots, n_slots):
    """(cptr (n_slots+1,) int64, crows (nnz,) int32): the batch rows labelled with each slot,
    ascending, from the CSR rows (indptr (B+1,), slots). Prior validation assumed."""
    B = indptr.shape[0] - 1
    cptr = np.zeros(n_slots + 1, np.int64)
    for p in range(indptr[0], indptr[B]):
        cptr[slots[p] + 1] += 1
    for s in range(n_slots):
        cptr[s + 1] += cptr[s]
    fill = cptr[:-1].copy()
    crows = np.empty(cptr[n_slots], np.int32)
    for b in range(B):
        for p in range(indptr[b], indptr[b + 1]):
            s = slots[p]
            crows[fill[s]] = b
            fill[s] += 1
    return cptr, crows


@njit(fastmath=_FM, cache=True)
def _bce_rows(Zg, nrows, mask, s0, cptr, crows, scale, one, db, need_b):
    """In place, for j < nrows: Zg[j] (the logits of slot s = s0 + j over the batch) becomes
    dZ = scale·(σ(z) - y), zeros for a masked slot. Returns Σ_{j, b} bce(z, y) over the real
    slots (unscaled, float64); db[s] = Σ_b dZ[j, b] when need_b."""
    B = Zg.shape[1]
    V = vwidth(Zg)
    bV = B - B % V
    vs = vsplat(scale)
    v1 = vsplat(one)
    z0 = vzero(Zg)
    total = 0.0
    for j in range(nrows):
        s = s0 + j
        row = Zg[j]
        if not mask[s]:
            for b in range(B):
                row[b] = 0
            if need_b:
                db[s] = 0
            continue
        pos = 0.0                                          # Σ z over the positives of s
        for p in range(cptr[s], cptr[s + 1]):
            pos += row[crows[p]]
        accl = z0
        accg = z0
        for b0 in range(0, bV, V):
            z = vload(row, b0)
            e = vexp(vsub(z0, vabs(z)))                    # e^-|z| in (0, 1]
            sp = vadd(vmax(z, z0), vlog1p_unit(e))         # softplus(z)
            r = vdiv(v1, vadd(v1, e))
            g = vmul(vselect_nonneg(z, r, vmul(e, r)), vs)  # scale·σ(z)
            vstore(row, b0, g)
            accl = vadd(accl, sp)
            accg = vadd(accg, g)
        if bV < B:                                         # batch tail: masked lanes
            n = B - bV
            z = vload_m(row, bV, n)
            e = vexp(vsub(z0, vabs(z)))
            sp = vadd(vmax(z, z0), vlog1p_unit(e))
            r = vdiv(v1, vadd(v1, e))
            g = vmul(vselect_nonneg(z, r, vmul(e, r)), vs)
            vstore_m(row, bV, g, n)
            accl = vadd(accl, vkeep(sp, n))
            accg = vadd(accg, vkeep(g, n))
        for p in range(cptr[s], cptr[s + 1]):
            row[crows[p]] -= scale
        total += vsum(accl) - pos
        if need_b:
            db[s] = vsum(accg) - (cptr[s + 1] - cptr[s]) * scale
    return total


@njit(parallel=True, fastmath=_FM, cache=True)
def _fused_bce_kernel(XT, idx, W, bias, n_labels, mask, cptr, crows, scale, need_grad,
                      dXpart, dW, db, losses, zero, one):
    """losses[c] = Σ bce over thread c's groups (unscaled); when need_grad: dXpart (nc, d, B)
    per-thread dX^T (zeroed by the caller), dW (G, m, k), db (L,) (if bias is not empty)."""
    G, k = idx.shape
    m = W.shape[1]
    need_b = need_grad and bias.shape[0] > 0
    nc = losses.shape[0]
    for c in prange(nc):
        tile, ar, init = _logit_buffers(XT, W)
        Zg = np.empty((m, XT.shape[1]), XT.dtype)            # (m, B) logits, then dZ
        noinit = np.empty(0, XT.dtype)
        part = dXpart[c]
        total = 0.0
        for g in range(c * G // nc, (c + 1) * G // nc):
            mv = _group_logits(Zg, ar, tile, ar, init, XT, idx, W, bias, g, n_labels, zero, False)
            if mv <= 0:                                       # no slot of g exists
                if need_grad:
                    dW[g] = zero
                continue
            total += _bce_rows(Zg, mv, mask, g * m, cptr, crows, scale, one, db, need_b)
            if need_grad:
                if m > 1:
                    _dot_rows(dW[g], Zg, ar, mv, tile, ar, k)
                else:
                    _dot_rows(dW[g], Zg, ar, mv, XT, idx[g], k)
                for j in range(mv, m):
                    dW[g, j] = zero
                _gemm_rows(part, idx[g], W[g].T, k, mv, Zg, ar, noinit, True, False)
        losses[c] = total


def group_shared_bce(X, idx, W, bias, y_indptr, y_slots, slot_mask=None, n_labels=None,
                     scale=None, need_grad=True):
    """(loss, dX (B, d), dW (G, m, k), dbias (L,) or None) of the layer's BCE-with-logits:

        loss = scale · Σ_b Σ_{slots s < L, slot_mask[s]} softplus(Z[b,s]) - Y[b,s]·Z[b,s]

    Y[b, s] = 1 for s in y_slots[y_indptr[b]:y_indptr[b+1]] (sorted, distinct, < L), scale
    defaults to 1/B, L = n_labels defaults to G·m, slot_mask (>= L,) bool or None (all real).
    Without need_grad only the loss is computed (dX, dW, dbias None). The (B, L) logits are
    never held: memory is O(G·m·k + B·d + L) beside one (m, B) tile per thread."""
    X, W = np.asarray(X), np.asarray(W)
    dt = _dtype(X, W)
    G, m, k = W.shape
    B, d = X.shape
    L = G * m if n_labels is None else int(n_labels)
    scale = 1.0 / max(B, 1) if scale is None else float(scale)
    XT = _transposed(X, dt)                                             # (d, B)
    W = np.ascontiguousarray(W, dt)
    idx = np.ascontiguousarray(idx, np.int32)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dt) if has_bias else np.zeros(0, dt)
    mask = (np.ones(L, np.bool_) if slot_mask is None
            else np.ascontiguousarray(np.asarray(slot_mask, np.bool_)[:L]))
    cptr, crows = _labels_by_slot(np.ascontiguousarray(y_indptr, np.int64),
                                  np.ascontiguousarray(y_slots, np.int64), L)
    nc = _n_chunks(G)
    dXpart = np.zeros((nc, d if need_grad else 0, B), dt)               # per-thread dX^T
    dW = np.empty((G, m, k) if need_grad else (0, m, k), dt)
    db = np.empty(L if need_grad and has_bias else 0, dt)
    losses = np.zeros(nc)
    _fused_bce_kernel(XT, idx, W, b, L, mask, cptr, crows, dt.type(scale), need_grad,
                      dXpart, dW, db, losses, dt.type(0), dt.type(1))
    loss = scale * float(losses.sum())
    if not need_grad:
        return loss, None, None, None
    dX = np.empty((B, d), dt)
    _reduce_partials(dXpart, dX)
    return loss, dX, dW, (db if has_bias else None)


@njit(cache=True)
def _heap_replace(hv, hs, x, slot):
    """Put (x, slot) in place of the root of the min-heap (hv, hs) and sift it down. Order:
    the smaller score first; of equal scores, the larger slot (the first to go)."""
    K = hv.shape[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= K:
            break
        r = c + 1
        if r < K and (hv[r] < hv[c] or (hv[r] == hv[c] and hs[r] > hs[c])):
            c = r
        if hv[c] < x or (hv[c] == x and hs[c] > slot):
            hv[i] = hv[c]
            hs[i] = hs[c]
            i = c
        else:
            break
    hv[i] = x
    hs[i] = slot


@njit(parallel=True, fastmath=_FM, cache=True)
def _topk_kernel(XT, idx, W, bias, n_labels, mask, hv, hs, zero, ninf):
    """hv, hs (nc, B, K): for thread c and row b, a min-heap of the K best (score, slot) of
    c's groups; (-inf, -1) where fewer were seen. A logit enters when it beats the heap's
    minimum: one vector compare per 16 logits, a heap update only for the winners."""
    G = idx.shape[0]
    m = W.shape[1]
    B = XT.shape[1]
    nc = hv.shape[0]
    for c in prange(nc):
        tile, ar, init = _logit_buffers(XT, W)
        Zg = np.empty((m, B), XT.dtype)
        thr = np.empty(B, XT.dtype)                               # heap minimum of each row
        V = vwidth(thr)
        hv[c] = ninf
        hs[c] = -1
        thr[:] = ninf
        for g in range(c * G // nc, (c + 1) * G // nc):
            mv = _group_logits(Zg, ar, tile, ar, init, XT, idx, W, bias, g, n_labels, zero, False)
            for j in range(mv):                                   # none when mv <= 0
                s = g * m + j
                if not mask[s]:
                    continue
                row = Zg[j]
                for b0 in range(0, B, V):
                    n = min(V, B - b0)
                    if n == V:
                        bits = np.int64(vgt_bits(vload(row, b0), vload(thr, b0)))
                    else:
                        bits = np.int64(vgt_bits(vload_m(row, b0, n), vload_m(thr, b0, n))) & ((1 << n) - 1)
                    q = 0
                    while bits:
                        if bits & 1:
                            b = b0 + q
                            _heap_replace(hv[c, b], hs[c, b], row[b], s)
                            thr[b] = hv[c, b, 0]
                        bits >>= 1
                        q += 1


@njit(parallel=True, cache=True)
def _merge_topk(hv, hs, vals, slots):
    """vals, slots (B, K): the best K of the nc heaps of each row, larger score first, of equal
    scores the smaller slot first."""
    nc, B, K = hv.shape
    for b in prange(B):
        cv = np.empty(nc * K, hv.dtype)
        cs = np.empty(nc * K, np.int64)
        for c in range(nc):
            cv[c * K:(c + 1) * K] = hv[c, b]
            cs[c * K:(c + 1) * K] = hs[c, b]
        o1 = np.argsort(cs, kind="mergesort")                      # by slot, then stably by score
        o2 = np.argsort(-cv[o1], kind="mergesort")
        for i in range(K):
            p = o1[o2[i]]
            vals[b, i] = cv[p]
            slots[b, i] = cs[p]


def group_shared_topk(X, idx, W, bias, K, slot_mask=None, n_labels=None):
    """(scores (B, K), slots (B, K) int64): the K largest logits of each row among the real
    slots (s < L = n_labels, default G·m; slot_mask[s]), larger first, ties to the smaller
    slot; (-inf, -1) pads a row when fewer than K slots are real. NaN logits are never taken.
    The (B, L) logits are never held: one (m, B) tile and K-entry heaps per thread."""
    X, W = np.asarray(X), np.asarray(W)
    dt = _dtype(X, W)
    G, m, k = W.shape
    B = X.shape[0]
    L = G * m if n_labels is None else int(n_labels)
    K = int(K)
    XT = _transposed(X, dt)
    W = np.ascontiguousarray(W, dt)
    idx = np.ascontiguousarray(idx, np.int32)
    b = np.zeros(0, dt) if bias is None else np.ascontiguousarray(bias, dt)
    mask = (np.ones(L, np.bool_) if slot_mask is None
            else np.ascontiguousarray(np.asarray(slot_mask, np.bool_)[:L]))
    nc = _n_chunks(G)
    hv = np.empty((nc, B, K), dt)
    hs = np.empty((nc, B, K), np.int64)
    if K > 0:
        _topk_kernel(XT, idx, W, b, L, mask, hv, hs, dt.type(0), dt.type(-np.inf))
    vals = np.empty((B, K), dt)
    slots = np.empty((B, K), np.int64)
    if K > 0:
        _merge_topk(hv, hs, vals, slots)
    return vals, slots
