// group_shared.cu: CUDA kernels of the group-shared fixed fan-in layer (m = 1: fixed fan-in).
//
// Kernels only (no host code, no #include, no inline PTX, no library calls): loaded by CuPy's
// RawModule (engine/heads/cuda.py), compiled by NVRTC in the tests (tests/test_cuda_nvrtc.py),
// and built by the host C++ compiler with engine/cuda/emulate/cuda_emu.h to run on the CPU
// (tests/test_cuda_emulate.py). Compile check by hand:
//     nvcc -std=c++17 -arch=sm_90 --cubin --resource-usage -o /dev/null engine/cuda/group_shared.cu
//
// The layer (label l = g·m + j; L <= G·m, labels l >= L are padding: never written, no gradient):
//     Z[b, l]     = Σ_t W[g,j,t] · X[b, idx[g,t]]   (+ bias[l])
//     dW[g,j,t]   = Σ_b dZ[b, l] · X[b, idx[g,t]]
//     dX[b, i]    = Σ_{(g,t): idx[g,t]=i} Σ_j dZ[b, l] · W[g,j,t]
// Arrays are C-contiguous: X (B, d), idx (G, k) int32, W (G, m, k), bias (L,) or NULL, Z/dZ (B, L).
//
// Kernels (version N is a new function, older versions stay):
//   gs_forward_v1         Z = layer(X)                      grid (G, ceil(B/TB))
//   gs_forward_v2         v1 with k split across idle threads when m < MT (m = 1): same grid
//   gs_grad_input_v1      dX += dZ-part of each group       grid (G, ceil(B/TB)), atomics on dX
//   gs_grad_weight_v1     dW, deterministic (no atomics)    grid (G, ceil(k/KT))
//   gs_fused_bce_v1       loss, dW, dX from X and sparse Y, never holding (B, L) logits; grid (G)
//   gs_fused_bce_v2       v1 with a slot mask (padded slots: no loss, no gradient) and a loss-only mode
//   gs_topk_partial_v1    per row, best K labels of each chunk of groups; grid (ceil(G/gpc), ceil(B/TB))
//   gs_topk_merge_v1      per row, best K of the chunks' candidates;      grid (B)
//   gs_topk_partial_v2    v1 with a slot mask and any K (the lists live in global memory)
//   gs_topk_merge_v2      per row, best K by merging the chunks' sorted lists; grid (B)
//
// Common scheme (v1): one block of GS_NT threads works on one group g. The group's gathered
// inputs X[b0:b0+TB, idx[g, t0:t0+KT]] are staged in shared memory (xs) one k-chunk at a time,
// together with the chunk of the group's weights W[g, j0:j0+MT, t0:t0+KT] (ws, coalesced rows
// of W) and, for the backward, dZ[b0:b0+TB, g·m+j0 : +MT] (dzs, coalesced rows of dZ). Every
// staged x is reused by all MT labels of the tile: with m <= MT, X is read once per block.
// Each thread owns GS_OUT* outputs of the tile, accumulated in registers. Tiles are padded with
// zeros, so the inner loops have no bounds checks. Shared rows have one float of padding
// (KT+1, MT+1): the column reads of the inner loops are free of bank conflicts.
// Known limit of v1: with m < MT (m = 1 in particular) part of the block idles in the forward
// (gs_forward_v2 splits k across those threads) and in the fused kernel's weight gradient.
// The loops the kernels share are device helpers below (gs_each_out: a thread's outputs of a
// tile; gs_each_k_chunk: the staged k-chunks; gs_tile_logits, gs_tile_grads, ...), which take
// the kernel's own step as a lambda and inline (__forceinline__, loops unrolled as before): each
// kernel body states only what is its own, with the same loads, stores and FLOPs per element.
//
// Tile sizes are macros, overridable with -D (the emulation tests use tiny ones):
//   GS_NT threads per block (the launch must use blockDim = (GS_NT, 1, 1)),
//   GS_TB batch rows, GS_MT labels, GS_KT inputs per tile, GS_KMAX the largest top-k K,
//   GS_MINB the blocks per SM promised to ptxas (__launch_bounds__).
// REAL is float unless GS_DOUBLE is defined.

#ifndef GS_NT
#define GS_NT 256
#endif
#ifndef GS_TB
#define GS_TB 32
#endif
#ifndef GS_MT
#define GS_MT 32
#endif
#ifndef GS_KT
#define GS_KT 32
#endif
#ifndef GS_KMAX
#define GS_KMAX 32
#endif
#ifndef GS_MINB
#define GS_MINB 4      // blocks per SM asked of ptxas: <= 64 registers; without it ptxas aims at
#endif                 // 8 blocks (32 registers) and the forward spills on sm_80

static_assert((GS_NT & (GS_NT - 1)) == 0, "GS_NT must be a power of two (block reductions)");
static_assert(GS_NT >= GS_TB && GS_NT >= GS_MT, "a block needs a thread per batch row and per label of a tile");

#define GS_CEIL(a, b) (((a) + (b) - 1) / (b))
#define GS_OUT_ZB GS_CEIL(GS_TB * GS_MT, GS_NT)     // outputs per thread: (b, j) tile
#define GS_OUT_XB GS_CEIL(GS_TB * GS_KT, GS_NT)     // outputs per thread: (b, t) tile
#define GS_OUT_WB GS_CEIL(GS_MT * GS_KT, GS_NT)     // outputs per thread: (j, t) tile

#ifdef GS_DOUBLE
typedef double real;
#define R_EXP exp
#define R_LOG1P log1p
#define R_FABS fabs
#else
typedef float real;
#define R_EXP expf
#define R_LOG1P log1pf
#define R_FABS fabsf
#endif

// -------------------------------------------------------------------------------------------
// device helpers (called by all threads of the block; no barrier unless the comment says so)

__device__ __forceinline__ int gs_imin(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ real gs_neg_inf() {
#ifdef GS_DOUBLE
    return -__longlong_as_double(0x7ff0000000000000LL);
#else
    return -__int_as_float(0x7f800000);
#endif
}

// The label slots of group g that exist: m, fewer in a padded last group (L < G·m).
__device__ __forceinline__ int gs_slots(int g, int m, int L) { return gs_imin(m, L - g * m); }

// v plus the bias of slot l (bias NULL: none).
__device__ __forceinline__ real gs_biased(real v, const real* __restrict__ bias, int l) {
    return v + (bias ? bias[l] : (real)0);
}

// What a block works on: group g (mv of its m slots exist), its inputs idxg = idx[g] (k,) and
// weights Wg = W[g] (m, k), and the batch tile of rows b0 .. b0+nb-1.
struct gs_tile {
    int g, mv;
    const int* idxg;
    const real* Wg;
    int b0, nb;
};

__device__ __forceinline__ gs_tile gs_tile_of(int g, int b0, const int* __restrict__ idx,
                                              const real* __restrict__ W, int B, int m, int k,
                                              int L) {
    return {g, gs_slots(g, m, L), idx + (long long)g * k, W + (long long)g * m * k, b0,
            gs_imin(GS_TB, B - b0)};
}

// f(r, o) for each o = threadIdx.x + r·GS_NT < N that this thread owns; r < GS_CEIL(N, GS_NT)
// indexes the thread's registers (the loop is unrolled: they stay registers).
template <int N, class F>
__device__ __forceinline__ void gs_each_own(F f) {
#pragma unroll
    for (int r = 0; r < GS_CEIL(N, GS_NT); r++) {
        int o = threadIdx.x + r * GS_NT;
        if (o < N) f(r, o);
    }
}

// f(r, a, c) for the outputs (a, c) = (o / COLS, o % COLS) of a ROWS x COLS tile that this
// thread owns (o as in gs_each_own), those with a < na and c < nc (default: all).
template <int ROWS, int COLS, class F>
__device__ __forceinline__ void gs_each_out(F f, int na = ROWS, int nc = COLS) {
#pragma unroll
    for (int r = 0; r < GS_CEIL(ROWS * COLS, GS_NT); r++) {
        int o = threadIdx.x + r * GS_NT, a = o / COLS, c = o % COLS;
        if (o < ROWS * COLS && a < na && c < nc) f(r, a, c);
    }
}

// xs[b][t] = X[b0+b, idxg[t0+t]] for b < nb, t < nt; 0 elsewhere in the TB x KT tile.
__device__ __forceinline__ void gs_stage_x(real (*xs)[GS_KT + 1], const real* __restrict__ X,
                                           const int* __restrict__ idxg, int d, int b0, int nb,
                                           int t0, int nt) {
    for (int e = threadIdx.x; e < GS_TB * GS_KT; e += blockDim.x) {
        int b = e / GS_KT, t = e % GS_KT;
        xs[b][t] = (b < nb && t < nt) ? X[(long long)(b0 + b) * d + idxg[t0 + t]] : (real)0;
    }
}

// ws[j][t] = Wg[j0+j, t0+t] for j < mt, t < nt; 0 elsewhere in the MT x KT tile (Wg = W[g], (m, k)).
__device__ __forceinline__ void gs_stage_w(real (*ws)[GS_KT + 1], const real* __restrict__ Wg,
                                           int k, int j0, int mt, int t0, int nt) {
    for (int e = threadIdx.x; e < GS_MT * GS_KT; e += blockDim.x) {
        int j = e / GS_KT, t = e % GS_KT;
        ws[j][t] = (j < mt && t < nt) ? Wg[(long long)(j0 + j) * k + t0 + t] : (real)0;
    }
}

// dzs[b][j] = dZ[b0+b, l0+j] for b < nb, j < mt; 0 elsewhere in the TB x MT tile.
__device__ __forceinline__ void gs_stage_dz(real (*dzs)[GS_MT + 1], const real* __restrict__ dZ,
                                            int L, int b0, int nb, int l0, int mt) {
    for (int e = threadIdx.x; e < GS_TB * GS_MT; e += blockDim.x) {
        int b = e / GS_MT, j = e % GS_MT;
        dzs[b][j] = (b < nb && j < mt) ? dZ[(long long)(b0 + b) * L + l0 + j] : (real)0;
    }
}

// The sums of the staged tiles (padded with zeros, so full-length loops need no bounds),
// each added to s in the order of its index:
//   s + Σ_{t<KT} w[t]·x[t]          a logit: w = ws[j], x = xs[b]
//   s + Σ_{b<TB} dzs[b][j]·xs[b][t]  a weight gradient dW[j, t]
//   s + Σ_{j<mt} dzs[b][j]·ws[j][t]  an input gradient dX[b, t] (mt: no work on padding)
__device__ __forceinline__ real gs_sum_wx(real s, const real* w, const real* x) {
#pragma unroll 8
    for (int t = 0; t < GS_KT; t++) s += w[t] * x[t];
    return s;
}
__device__ __forceinline__ real gs_sum_dzx(real s, const real (*dzs)[GS_MT + 1],
                                           const real (*xs)[GS_KT + 1], int j, int t) {
#pragma unroll 8
    for (int b = 0; b < GS_TB; b++) s += dzs[b][j] * xs[b][t];
    return s;
}
__device__ __forceinline__ real gs_sum_dzw(real s, const real (*dzs)[GS_MT + 1],
                                           const real (*ws)[GS_KT + 1], int b, int t, int mt) {
#pragma unroll 4
    for (int j = 0; j < mt; j++) s += dzs[b][j] * ws[j][t];
    return s;
}

// For each k-chunk of the tile's group (t0 = 0, KT, 2·KT, ..., nt = its width): stage
// xs = X[b0:b0+nb, idxg[t0:t0+nt]] and ws = Wg[j0:j0+mt, t0:t0+nt], barrier, f(t0, nt), barrier
// (before xs and ws change). Contains barriers: every thread of the block must call it.
template <class F>
__device__ __forceinline__ void gs_each_k_chunk(real (*xs)[GS_KT + 1], real (*ws)[GS_KT + 1],
                                                const real* __restrict__ X, const gs_tile& q,
                                                int d, int k, int j0, int mt, F f) {
    for (int t0 = 0; t0 < k; t0 += GS_KT) {
        int nt = gs_imin(GS_KT, k - t0);
        gs_stage_x(xs, X, q.idxg, d, q.b0, q.nb, t0, nt);
        gs_stage_w(ws, q.Wg, k, j0, mt, t0, nt);
        __syncthreads();
        f(t0, nt);
        __syncthreads();
    }
}

// dX[b0+b, idxg[t0+t]] += v(r, b, t) for the outputs (b, t) < (nb, nt) of a TB x KT tile that
// this thread owns. Atomics: other groups read the same inputs.
template <class F>
__device__ __forceinline__ void gs_add_dx(real* __restrict__ dX, const gs_tile& q, int d, int t0,
                                          int nt, F v) {
    gs_each_out<GS_TB, GS_KT>([&](int r, int b, int t) {
        atomicAdd(&dX[(long long)(q.b0 + b) * d + q.idxg[t0 + t]], v(r, b, t));
    }, q.nb, nt);
}

// acc[r] += the logit Σ_t ws[j][t]·xs[b][t] of the outputs (b, j) of one (batch tile, label
// tile j0 .. j0+mt-1) this thread owns (gs_each_out<TB, MT>); the caller zeroes acc.
// Contains barriers: every thread of the block must call it.
__device__ __forceinline__ void gs_tile_logits(real (&acc)[GS_OUT_ZB], real (*xs)[GS_KT + 1],
                                               real (*ws)[GS_KT + 1], const real* __restrict__ X,
                                               const gs_tile& q, int d, int k, int j0, int mt) {
    gs_each_k_chunk(xs, ws, X, q, d, k, j0, mt, [&](int, int) {
        gs_each_out<GS_TB, GS_MT>([&](int r, int b, int j) {
            acc[r] = gs_sum_wx(acc[r], ws[j], xs[b]);
        });
    });
}

// zs[b][j] = Z[b0+b, l0+j] (bias included) of one (batch tile, label tile) for j < mt, 0 beyond.
// Contains barriers and ends with one (zs is ready): every thread of the block must call it.
__device__ __forceinline__ void gs_tile_scores(real (*zs)[GS_MT + 1], real (*xs)[GS_KT + 1],
                                               real (*ws)[GS_KT + 1], const real* __restrict__ X,
                                               const gs_tile& q, const real* __restrict__ bias,
                                               int d, int k, int j0, int mt, int l0) {
    real acc[GS_OUT_ZB] = {};
    gs_tile_logits(acc, xs, ws, X, q, d, k, j0, mt);
    gs_each_out<GS_TB, GS_MT>([&](int r, int b, int j) {
        zs[b][j] = (j < mt) ? gs_biased(acc[r], bias, l0 + j) : (real)0;
    });
    __syncthreads();
}

// -------------------------------------------------------------------------------------------
// gs_forward_v1: Z (B, L) = Σ_t W[g,j,t]·X[b, idx[g,t]] (+ bias[l]).
// Shapes: X (B, d), idx (G, k), W (G, m, k), bias (L,) or NULL, Z (B, L), L <= G·m.
// Launch: grid (G, ceil(B/TB)), block (GS_NT); static shared (TB + MT)·(KT+1) reals.
// Work: 2·B·L·k FLOPs. Bytes (ideal): W once per batch tile: ceil(B/TB)·G·m·k·4, the gathered
// X once per (group, label tile): B·G·k·4 (·ceil(m/MT)), idx G·k·4, Z written B·L·4.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_forward_v1(const real* __restrict__ X, const int* __restrict__ idx, const real* __restrict__ W,
              const real* __restrict__ bias, real* __restrict__ Z,
              int B, int d, int G, int m, int k, int L) {
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    const gs_tile q = gs_tile_of(blockIdx.x, blockIdx.y * GS_TB, idx, W, B, m, k, L);
    for (int j0 = 0; j0 < q.mv; j0 += GS_MT) {
        int mt = gs_imin(GS_MT, q.mv - j0);
        real acc[GS_OUT_ZB] = {};
        gs_tile_logits(acc, xs, ws, X, q, d, k, j0, mt);
        gs_each_out<GS_TB, GS_MT>([&](int r, int b, int j) {
            int l = q.g * m + j0 + j;
            Z[(long long)(q.b0 + b) * L + l] = gs_biased(acc[r], bias, l);
        }, q.nb, mt);
    }
}

// -------------------------------------------------------------------------------------------
// gs_forward_v2: gs_forward_v1 with the k-chunk split across the threads v1 leaves idle when
// the group has few labels (m < MT; m = 1 above all). Same formula, shapes and grid.
// The label tile is mp = min(m, MT) rounded up to a power of two; the TB x mp outputs of a tile
// use P = MT/mp slices of threads, slice s summing the chunk's inputs t = s, s+P, s+2P, ...;
// the P partial sums of an output are added in a fixed order at the end (deterministic).
// With m >= MT, P = 1 and it is v1 plus one pass through shared memory.
// Launch: grid (G, ceil(B/TB)), block (GS_NT); static shared (TB + MT)·(KT+1) + TB·MT reals.
// Work: 2·B·L·k FLOPs (+ B·L·(P-1) adds). Bytes: as gs_forward_v1.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_forward_v2(const real* __restrict__ X, const int* __restrict__ idx, const real* __restrict__ W,
              const real* __restrict__ bias, real* __restrict__ Z,
              int B, int d, int G, int m, int k, int L) {
    __shared__ real part[GS_TB * GS_MT];                  // (slice, b, j) partial sums
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    const gs_tile q = gs_tile_of(blockIdx.x, blockIdx.y * GS_TB, idx, W, B, m, k, L);
    int mp = 1;
    while (mp < gs_imin(q.mv, GS_MT)) mp <<= 1;           // label tile, a power of two <= MT
    const int P = GS_MT / mp;                             // slices per output
    const int per_slice = GS_TB * mp;                     // outputs per slice
    for (int j0 = 0; j0 < q.mv; j0 += mp) {
        int mt = gs_imin(mp, q.mv - j0);
        real acc[GS_OUT_ZB] = {};
        gs_each_k_chunk(xs, ws, X, q, d, k, j0, mt, [&](int, int nt) {
            gs_each_own<GS_TB * GS_MT>([&](int r, int o) {
                int sl = o / per_slice, e = o % per_slice, b = e / mp, j = e % mp;
                real s = acc[r];
                for (int t = sl; t < nt; t += P) s += ws[j][t] * xs[b][t];
                acc[r] = s;
            });
        });
        gs_each_own<GS_TB * GS_MT>([&](int r, int o) { part[o] = acc[r]; });
        __syncthreads();
        for (int o = threadIdx.x; o < per_slice; o += blockDim.x) {
            int b = o / mp, j = o % mp;
            if (b < q.nb && j < mt) {
                real s = 0;
                for (int sl = 0; sl < P; sl++) s += part[sl * per_slice + o];
                int l = q.g * m + j0 + j;
                Z[(long long)(q.b0 + b) * L + l] = gs_biased(s, bias, l);
            }
        }
        __syncthreads();                                  // part is rewritten by the next tile
    }
}

// -------------------------------------------------------------------------------------------
// gs_grad_input_v1: dX[b, idx[g,t]] += Σ_j dZ[b, g·m+j]·W[g,j,t]  (dX zeroed by the caller).
// Shapes: dZ (B, L), idx (G, k), W (G, m, k), dX (B, d).
// Launch: grid (G, ceil(B/TB)), block (GS_NT); static shared TB·(MT+1) + MT·(KT+1) reals.
// Atomics: one atomicAdd per (b, g, t): B·G·k; summation order differs run to run (the inputs
// a group reads are distinct, so the conflicts are between groups only).
// Work: 2·B·L·k FLOPs. Bytes: dZ read ceil(k/KT) times: B·L·4·ceil(k/KT), W ceil(B/TB)·G·m·k·4,
// dX read-modify-write B·G·k·(4+4).
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_grad_input_v1(const real* __restrict__ dZ, const int* __restrict__ idx,
                 const real* __restrict__ W, real* __restrict__ dX,
                 int B, int d, int G, int m, int k, int L) {
    __shared__ real dzs[GS_TB][GS_MT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    const gs_tile q = gs_tile_of(blockIdx.x, blockIdx.y * GS_TB, idx, W, B, m, k, L);
    for (int t0 = 0; t0 < k; t0 += GS_KT) {
        int nt = gs_imin(GS_KT, k - t0);
        real acc[GS_OUT_XB] = {};
        for (int j0 = 0; j0 < q.mv; j0 += GS_MT) {
            int mt = gs_imin(GS_MT, q.mv - j0);
            gs_stage_dz(dzs, dZ, L, q.b0, q.nb, q.g * m + j0, mt);
            gs_stage_w(ws, q.Wg, k, j0, mt, t0, nt);
            __syncthreads();
            gs_each_out<GS_TB, GS_KT>([&](int r, int b, int t) {
                acc[r] = gs_sum_dzw(acc[r], dzs, ws, b, t, mt);
            });
            __syncthreads();
        }
        gs_add_dx(dX, q, d, t0, nt, [&](int r, int, int) { return acc[r]; });
    }
}

// -------------------------------------------------------------------------------------------
// gs_grad_weight_v1: dW[g,j,t] = Σ_b dZ[b, g·m+j]·X[b, idx[g,t]]; padded labels get dW = 0.
// Shapes: dZ (B, L), X (B, d), idx (G, k), dW (G, m, k).
// Launch: grid (G, ceil(k/KT)), block (GS_NT); static shared TB·(KT+1) + TB·(MT+1) reals.
// Deterministic: each dW element is summed by one thread over b in a fixed order, no atomics.
// Work: 2·B·L·k FLOPs. Bytes: dZ read ceil(k/KT) times: B·L·4·ceil(k/KT), the gathered X
// B·G·k·4·ceil(m/MT), dW written G·m·k·4.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_grad_weight_v1(const real* __restrict__ dZ, const real* __restrict__ X,
                  const int* __restrict__ idx, real* __restrict__ dW, int B, int d, int G, int m,
                  int k, int L) {
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real dzs[GS_TB][GS_MT + 1];
    const int g = blockIdx.x, t0 = blockIdx.y * GS_KT;
    const int nt = gs_imin(GS_KT, k - t0), mv = gs_slots(g, m, L);
    const int* idxg = idx + (long long)g * k;
    real* dWg = dW + (long long)g * m * k;
    for (int j0 = 0; j0 < m; j0 += GS_MT) {
        int mt = gs_imin(GS_MT, mv - j0);                  // <= 0: padding only, dW = 0
        real acc[GS_OUT_WB] = {};
        if (mt > 0) {
            for (int b0 = 0; b0 < B; b0 += GS_TB) {
                int nb = gs_imin(GS_TB, B - b0);
                gs_stage_x(xs, X, idxg, d, b0, nb, t0, nt);
                gs_stage_dz(dzs, dZ, L, b0, nb, g * m + j0, mt);
                __syncthreads();
                gs_each_out<GS_MT, GS_KT>([&](int r, int j, int t) {
                    acc[r] = gs_sum_dzx(acc[r], dzs, xs, j, t);
                });
                __syncthreads();
            }
        }
        gs_each_out<GS_MT, GS_KT>([&](int r, int j, int t) {
            dWg[(long long)(j0 + j) * k + t0 + t] = acc[r];
        }, m - j0, nt);
    }
}

// -------------------------------------------------------------------------------------------
// fused loss helpers

// 1 if label l is in row b of the CSR label matrix (indices sorted within a row), else 0.
__device__ __forceinline__ real gs_has_label(const int* __restrict__ indptr,
                                             const int* __restrict__ indices, int b, int l) {
    int lo = indptr[b], hi = indptr[b + 1];                 // search [lo, hi)
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        int v = indices[mid];
        if (v == l) return (real)1;
        if (v < l) lo = mid + 1; else hi = mid;
    }
    return (real)0;
}

// BCE with logits, stable: max(z, 0) - z·y + log(1 + e^{-|z|}); and σ(z).
__device__ __forceinline__ real gs_bce(real z, real y) {
    return (z > 0 ? z : (real)0) - z * y + R_LOG1P(R_EXP(-R_FABS(z)));
}
__device__ __forceinline__ real gs_sigmoid(real z) {
    if (z >= 0) return (real)1 / ((real)1 + R_EXP(-z));
    real e = R_EXP(z);
    return e / ((real)1 + e);
}

// Gradients of one (batch tile, label tile) from its dz in dzs (written by the caller; the
// first barrier here orders them): per k-chunk, dWg[j0+j, t] += Σ_b dz·x (Wg's block alone:
// deterministic), dX[b, idxg[t]] += Σ_j dz·w (atomics), and once dbias[l0+j] += Σ_b dz.
// Contains barriers: every thread of the block must call it.
__device__ __forceinline__ void gs_tile_grads(real (*dzs)[GS_MT + 1], real (*xs)[GS_KT + 1],
                                              real (*ws)[GS_KT + 1], const real* __restrict__ X,
                                              const gs_tile& q, real* __restrict__ dWg,
                                              real* __restrict__ dbias, real* __restrict__ dX,
                                              int d, int k, int j0, int mt, int l0) {
    gs_each_k_chunk(xs, ws, X, q, d, k, j0, mt, [&](int t0, int nt) {
        if (dbias && t0 == 0 && threadIdx.x < mt) {
            real s = 0;
            for (int b = 0; b < GS_TB; b++) s += dzs[b][threadIdx.x];
            dbias[l0 + threadIdx.x] += s;
        }
        gs_each_out<GS_MT, GS_KT>([&](int, int j, int t) {
            dWg[(long long)(j0 + j) * k + t0 + t] += gs_sum_dzx(0, dzs, xs, j, t);
        }, mt, nt);
        gs_add_dx(dX, q, d, t0, nt, [&](int, int b, int t) {
            return gs_sum_dzw(0, dzs, ws, b, t, mt);
        });
    });
}

// The work of block g = blockIdx.x of gs_fused_bce_v1 and _v2: loss_part[g], and with need_grad
// dW[g], dbias of g's slots and g's atomics into dX. mask NULL: every slot is real.
__device__ __forceinline__ void gs_fused_bce_block(
        const real* __restrict__ X, const int* __restrict__ idx, const real* __restrict__ W,
        const real* __restrict__ bias, const unsigned char* __restrict__ mask,
        const int* __restrict__ indptr, const int* __restrict__ indices, real* __restrict__ dX,
        real* __restrict__ dW, real* __restrict__ dbias, real* __restrict__ loss_part,
        int B, int d, int G, int m, int k, int L, real scale, int need_grad) {
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    __shared__ real dzs[GS_TB][GS_MT + 1];
    __shared__ real red[GS_NT];
    const int g = blockIdx.x, mv = gs_slots(g, m, L);
    real loss = 0;
    for (int j0 = 0; j0 < mv; j0 += GS_MT) {
        int mt = gs_imin(GS_MT, mv - j0);
        for (int b0 = 0; b0 < B; b0 += GS_TB) {
            const gs_tile q = gs_tile_of(g, b0, idx, W, B, m, k, L);
            // 1. logits of the tile, loss, dz -> shared
            real acc[GS_OUT_ZB] = {};
            gs_tile_logits(acc, xs, ws, X, q, d, k, j0, mt);
            gs_each_out<GS_TB, GS_MT>([&](int r, int b, int j) {
                int l = g * m + j0 + j;
                real dz = 0;
                if (b < q.nb && j < mt && (!mask || mask[l])) {
                    real z = gs_biased(acc[r], bias, l);
                    real y = gs_has_label(indptr, indices, b0 + b, l);
                    loss += gs_bce(z, y);
                    dz = scale * (gs_sigmoid(z) - y);
                }
                dzs[b][j] = dz;
            });
            // 2. per k-chunk: dW[g, j0+j, t] += Σ_b dz·x ;  dX[b, idx[g,t]] += Σ_j dz·w
            if (need_grad)
                gs_tile_grads(dzs, xs, ws, X, q, dW + (long long)g * m * k, dbias, dX, d, k, j0, mt,
                              g * m + j0);
        }
    }
    // block sum of the loss, in a fixed order: deterministic
    red[threadIdx.x] = loss;
    __syncthreads();
    for (int s = GS_NT / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss_part[g] = scale * red[0];
}

// -------------------------------------------------------------------------------------------
// gs_fused_bce_v1: forward + BCE-with-logits against sparse Y + backward, one block per group.
//     z = Z[b, l] (bias included),  loss = scale·Σ_{b, l<L} bce(z, y[b,l]),
//     dz = scale·(σ(z) - y[b,l]),   dW = dzᵀ·X[:, idx[g]],   dX[b, idx[g,t]] += Σ_j dz·W[g,j,t],
//     dbias[l] = Σ_b dz.
// Shapes: X (B, d), idx (G, k), W (G, m, k), bias (L,) or NULL, Y as CSR: indptr (B+1,),
// indices (nnz,) sorted per row; out: dX (B, d), dW (G, m, k), dbias (L,) or NULL, all zeroed
// by the caller (dW[g] and dbias of g's labels are accumulated by block g alone:
// deterministic), loss_part (G,) per-group loss (sum it on the host).
// The logits exist one (TB x MT) tile at a time, in registers, then as dz in shared memory.
// Launch: grid (G), block (GS_NT); static shared (2·TB + MT)·(KT+1) + TB·(MT+1) + NT reals.
// Work: 6·B·L·k FLOPs (forward, dW, dX) + B·L·(exp, log1p, log2(nnz_b) search).
// Bytes: X gathered twice per (batch tile, label tile): 2·B·G·k·4·ceil(m/MT), W 2·G·m·k·4 per
// batch tile, dW read-modify-write per batch tile, dX atomics B·G·k·ceil(m/MT), Y once per
// label; no B·L array at all.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_fused_bce_v1(const real* __restrict__ X, const int* __restrict__ idx, const real* __restrict__ W,
                const real* __restrict__ bias, const int* __restrict__ indptr,
                const int* __restrict__ indices, real* __restrict__ dX, real* __restrict__ dW,
                real* __restrict__ dbias, real* __restrict__ loss_part,
                int B, int d, int G, int m, int k, int L, real scale) {
    gs_fused_bce_block(X, idx, W, bias, nullptr, indptr, indices, dX, dW, dbias, loss_part,
                       B, d, G, m, k, L, scale, 1);
}

// -------------------------------------------------------------------------------------------
// gs_fused_bce_v2: gs_fused_bce_v1 over the real slots only, and optionally the loss alone.
//     loss = scale·Σ_{b, l<L, mask[l]} bce(z, y[b,l]),  dz = scale·(σ(z) - y[b,l]) where mask[l],
//     0 where not (a padded slot: no loss, dW[g, j] = 0, dbias[l] = 0).
// mask (L,) uint8, 1 for a real slot. need_grad = 0: only loss_part is written (dX, dW, dbias
// may be 1-element dummies), the backward half of each tile is skipped.
// Shapes, launch and shared memory as v1. Work and bytes: as v1 with need_grad; without it
// 2·B·L·k FLOPs + B·L·(exp, log1p, search), X and W read once per tile.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_fused_bce_v2(const real* __restrict__ X, const int* __restrict__ idx, const real* __restrict__ W,
                const real* __restrict__ bias, const unsigned char* __restrict__ mask,
                const int* __restrict__ indptr, const int* __restrict__ indices,
                real* __restrict__ dX, real* __restrict__ dW, real* __restrict__ dbias,
                real* __restrict__ loss_part, int B, int d, int G, int m, int k, int L,
                real scale, int need_grad) {
    gs_fused_bce_block(X, idx, W, bias, mask, indptr, indices, dX, dW, dbias, loss_part,
                       B, d, G, m, k, L, scale, need_grad);
}

// -------------------------------------------------------------------------------------------
// top-k helpers: order = larger value first, then smaller label; label -1 = empty slot.

__device__ __forceinline__ bool gs_better(real v1, int i1, real v2, int i2) {
    if (i1 < 0) return false;
    if (i2 < 0) return true;
    return v1 > v2 || (v1 == v2 && i1 < i2);
}

// insert (v, i) into the sorted list (lv, li) of length K if it belongs there
__device__ __forceinline__ void gs_insert(real* lv, int* li, int K, real v, int i) {
    if (!gs_better(v, i, lv[K - 1], li[K - 1])) return;
    int p = K - 1;
    while (p > 0 && gs_better(v, i, lv[p - 1], li[p - 1])) {
        lv[p] = lv[p - 1];
        li[p] = li[p - 1];
        p--;
    }
    lv[p] = v;
    li[p] = i;
}

// The chunk c = blockIdx.x of `gpc` groups, scored tile by tile: thread b < nb merges the real
// slots (mask NULL: all) of each tile into the sorted list (lv, li) of row b0+b (its own list:
// lv, li are NULL for the other threads). Contains barriers: every thread must call it.
__device__ __forceinline__ void gs_topk_chunk(real (*zs)[GS_MT + 1], real (*xs)[GS_KT + 1],
                                              real (*ws)[GS_KT + 1], const real* __restrict__ X,
                                              const int* __restrict__ idx,
                                              const real* __restrict__ W,
                                              const real* __restrict__ bias,
                                              const unsigned char* __restrict__ mask,
                                              int B, int d, int G, int m, int k, int L, int gpc,
                                              int K, real* lv, int* li) {
    const int g1 = gs_imin(G, (blockIdx.x + 1) * gpc);
    for (int g = blockIdx.x * gpc; g < g1; g++) {
        const gs_tile q = gs_tile_of(g, blockIdx.y * GS_TB, idx, W, B, m, k, L);
        for (int j0 = 0; j0 < q.mv; j0 += GS_MT) {
            int mt = gs_imin(GS_MT, q.mv - j0);
            gs_tile_scores(zs, xs, ws, X, q, bias, d, k, j0, mt, g * m + j0);
            if (lv) {
                for (int j = 0; j < mt; j++) {
                    int l = g * m + j0 + j;
                    if (!mask || mask[l]) gs_insert(lv, li, K, zs[threadIdx.x][j], l);
                }
            }
            __syncthreads();                               // v1 reads the lists across threads
        }
    }
}

// Block argmax in the top-k order: every thread proposes (v, i, p); afterwards entry 0 of
// (rv, ri, rp) (GS_NT each) is the best proposal. Every thread of the block must call it.
__device__ __forceinline__ void gs_block_best(real* rv, int* ri, int* rp, real v, int i, int p) {
    rv[threadIdx.x] = v;
    ri[threadIdx.x] = i;
    rp[threadIdx.x] = p;
    __syncthreads();
    for (int s = GS_NT / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s && gs_better(rv[threadIdx.x + s], ri[threadIdx.x + s],
                                         rv[threadIdx.x], ri[threadIdx.x])) {
            rv[threadIdx.x] = rv[threadIdx.x + s];
            ri[threadIdx.x] = ri[threadIdx.x + s];
            rp[threadIdx.x] = rp[threadIdx.x + s];
        }
        __syncthreads();
    }
}

// -------------------------------------------------------------------------------------------
// gs_topk_partial_v1: for each row b and chunk c of `gpc` groups, the best K labels of the chunk
// (logits with bias; padded labels excluded), without the (B, L) logits.
// Shapes: X (B, d), idx (G, k), W (G, m, k), bias (L,) or NULL; out cand_v, cand_i
// (B, n_chunks, K), n_chunks = ceil(G / gpc); K <= GS_KMAX; slots beyond the chunk's labels
// hold (-inf, -1).
// Launch: grid (n_chunks, ceil(B/TB)), block (GS_NT); static shared (TB + MT)·(KT+1) +
// TB·(MT+1) + TB·KMAX·(4 + sizeof(real)) bytes.
// Work: 2·B·L·k FLOPs + B·L list inserts (O(1) when the value does not enter the list).
// Bytes: like gs_forward_v1 without the Z write; writes B·n_chunks·K·8.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_topk_partial_v1(const real* __restrict__ X, const int* __restrict__ idx,
                   const real* __restrict__ W, const real* __restrict__ bias,
                   real* __restrict__ cand_v, int* __restrict__ cand_i,
                   int B, int d, int G, int m, int k, int L, int gpc, int K) {
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    __shared__ real zs[GS_TB][GS_MT + 1];
    __shared__ real lv[GS_TB][GS_KMAX];
    __shared__ int li[GS_TB][GS_KMAX];
    const int c = blockIdx.x, b0 = blockIdx.y * GS_TB;
    const int nb = gs_imin(GS_TB, B - b0);
    const int nc = gridDim.x;
    for (int e = threadIdx.x; e < GS_TB * GS_KMAX; e += blockDim.x) {
        lv[e / GS_KMAX][e % GS_KMAX] = gs_neg_inf();
        li[e / GS_KMAX][e % GS_KMAX] = -1;
    }
    const bool own = threadIdx.x < nb;                     // one thread per row merges the tiles
    gs_topk_chunk(zs, xs, ws, X, idx, W, bias, nullptr, B, d, G, m, k, L, gpc, K,
                  own ? lv[threadIdx.x] : nullptr, own ? li[threadIdx.x] : nullptr);
    for (int e = threadIdx.x; e < GS_TB * K; e += blockDim.x) {
        int b = e / K, r = e % K;
        if (b < nb) {
            long long o = ((long long)(b0 + b) * nc + c) * K + r;
            cand_v[o] = lv[b][r];
            cand_i[o] = li[b][r];
        }
    }
}

// -------------------------------------------------------------------------------------------
// gs_topk_merge_v1: out (B, K) = the best K of each row's n candidates (from gs_topk_partial_v1:
// cand_v, cand_i (B, n), n = n_chunks·K), sorted best first; the candidates are consumed
// (taken ones are marked -1). K rounds of a block argmax.
// Launch: grid (B), block (GS_NT); static shared GS_NT·(sizeof(real) + 8) bytes.
// Work: K·n comparisons per row. Bytes: K reads of the row's candidates (n·8·K), B·K·8 written.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_topk_merge_v1(real* __restrict__ cand_v, int* __restrict__ cand_i, real* __restrict__ out_v,
                 int* __restrict__ out_i, int n, int K) {
    __shared__ real rv[GS_NT];
    __shared__ int ri[GS_NT];
    __shared__ int rp[GS_NT];
    const int b = blockIdx.x;
    real* cv = cand_v + (long long)b * n;
    int* ci = cand_i + (long long)b * n;
    for (int r = 0; r < K; r++) {
        real bv = gs_neg_inf();
        int bi = -1, bp = -1;
        for (int p = threadIdx.x; p < n; p += blockDim.x) {
            if (gs_better(cv[p], ci[p], bv, bi)) { bv = cv[p]; bi = ci[p]; bp = p; }
        }
        gs_block_best(rv, ri, rp, bv, bi, bp);
        if (threadIdx.x == 0) {
            out_v[(long long)b * K + r] = rv[0];
            out_i[(long long)b * K + r] = ri[0];
            if (rp[0] >= 0) ci[rp[0]] = -1;                // taken
        }
        __syncthreads();
    }
}

// -------------------------------------------------------------------------------------------
// gs_topk_partial_v2: gs_topk_partial_v1 over the real slots only (mask[l] = 1) and for any K:
// thread b keeps row b0+b's sorted list in its place in the output, in global memory (v1 keeps
// the lists in shared memory, which bounds K by GS_KMAX).
// Shapes: X (B, d), idx (G, k), W (G, m, k), bias (L,) or NULL, mask (L,) uint8; out cand_v,
// cand_i (B, n_chunks, K), n_chunks = ceil(G / gpc), each (b, c) list sorted best first;
// entries past the chunk's real slots hold (-inf, -1).
// Launch: grid (n_chunks, ceil(B/TB)), block (GS_NT); static shared (TB + MT)·(KT+1) +
// TB·(MT+1) reals.
// Work: 2·B·L·k FLOPs + B·L compares with the list's last entry, O(K) moves per entry that
// enters. Bytes: like gs_forward_v1 without the Z write; the lists B·n_chunks·K·8 (L1/L2-resident
// while a block works on them).
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_topk_partial_v2(const real* __restrict__ X, const int* __restrict__ idx,
                   const real* __restrict__ W, const real* __restrict__ bias,
                   const unsigned char* __restrict__ mask, real* __restrict__ cand_v,
                   int* __restrict__ cand_i, int B, int d, int G, int m, int k, int L, int gpc,
                   int K) {
    __shared__ real xs[GS_TB][GS_KT + 1];
    __shared__ real ws[GS_MT][GS_KT + 1];
    __shared__ real zs[GS_TB][GS_MT + 1];
    const int b0 = blockIdx.y * GS_TB;
    const int nb = gs_imin(GS_TB, B - b0);
    real* lv = nullptr;
    int* li = nullptr;
    if (threadIdx.x < nb) {                                // row b0 + threadIdx.x: its own list
        long long o = ((long long)(b0 + threadIdx.x) * gridDim.x + blockIdx.x) * K;
        lv = cand_v + o;
        li = cand_i + o;
        for (int r = 0; r < K; r++) { lv[r] = gs_neg_inf(); li[r] = -1; }
    }
    gs_topk_chunk(zs, xs, ws, X, idx, W, bias, mask, B, d, G, m, k, L, gpc, K, lv, li);
}

// -------------------------------------------------------------------------------------------
// gs_topk_merge_v2: out (B, K) = the best K of each row's n_chunks sorted lists (from
// gs_topk_partial_v2: cand_v, cand_i (B, n_chunks, K)), best first. Round r takes the best of
// the lists' heads (a block argmax over n_chunks entries, not n_chunks·K) and advances that
// list's head; pos (B, n_chunks) int32, zeroed by the caller, holds the heads (list c's head
// is read and moved by thread c mod blockDim.x alone). (-inf, -1) once every list is used up.
// Launch: grid (B), block (GS_NT); static shared GS_NT·(sizeof(real) + 8) bytes.
// Work: K·n_chunks comparisons per row (v1: K·n_chunks·K). Bytes: K reads of the heads
// (n_chunks·12·K per row), B·K·8 written.
extern "C" __global__ void __launch_bounds__(GS_NT, GS_MINB)
gs_topk_merge_v2(const real* __restrict__ cand_v, const int* __restrict__ cand_i,
                 int* __restrict__ pos, real* __restrict__ out_v, int* __restrict__ out_i,
                 int nc, int K) {
    __shared__ real rv[GS_NT];
    __shared__ int ri[GS_NT];
    __shared__ int rp[GS_NT];
    const int b = blockIdx.x;
    const real* cv = cand_v + (long long)b * nc * K;
    const int* ci = cand_i + (long long)b * nc * K;
    int* head = pos + (long long)b * nc;
    for (int r = 0; r < K; r++) {
        real bv = gs_neg_inf();
        int bi = -1, bc = -1;
        for (int c = threadIdx.x; c < nc; c += blockDim.x) {
            int p = head[c];
            if (p < K) {
                long long e = (long long)c * K + p;
                if (gs_better(cv[e], ci[e], bv, bi)) { bv = cv[e]; bi = ci[e]; bc = c; }
            }
        }
        gs_block_best(rv, ri, rp, bv, bi, bc);
        if (threadIdx.x == 0) {
            out_v[(long long)b * K + r] = rv[0];
            out_i[(long long)b * K + r] = ri[0];
        }
        const int win = rp[0];
        if (ri[0] >= 0 && (unsigned)win % blockDim.x == threadIdx.x) head[win]++;   // its owner
        __syncthreads();                                   // before rv, ri, rp change
    }
}
