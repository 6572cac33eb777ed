// dst.cu: device helpers of dynamic sparse training for the group-shared layer.
//
// Kernels only, like group_shared.cu (NVRTC-compiled in the tests, emulated on the CPU with
// engine/cuda/emulate/cuda_emu.h). Compile check by hand:
//     nvcc -std=c++17 -arch=sm_90 --cubin --resource-usage -o /dev/null engine/cuda/dst.cu
//
// A group g reads the k inputs idx[g, :] ("its set"); slot t of the set carries the weights
// W[g, :, t] of the group's m labels. Dynamic sparse training ranks the slots, drops the weakest
// and regrows new inputs in their place:
//   dst_slot_magnitude_v1   score[g, t] = Σ_{j < m_g} |W[g, j, t]|   (m_g = labels of g that exist)
//   dst_regrow_v1           fill the dropped slots from random candidates, no input twice in a set
// Which slots to drop (the smallest scores) is a sort, done by the caller (cupy.argsort).
//
// GS_NT threads per block; REAL is float unless GS_DOUBLE is defined.

#ifndef GS_NT
#define GS_NT 256
#endif

#ifdef GS_DOUBLE
typedef double real;
#define R_FABS fabs
#else
typedef float real;
#define R_FABS fabsf
#endif

// -------------------------------------------------------------------------------------------
// dst_slot_magnitude_v1: score (G, k) = Σ_{j < m_g} |W[g, j, t]|, m_g = min(m, L - g·m).
// Shapes: W (G, m, k), score (G, k).
// Launch: grid (ceil(G·k / NT)), block (GS_NT); one thread per (g, t), reads coalesced over t.
// Work: G·m·k additions. Bytes: W read once (G·m·k·4), score written (G·k·4).
extern "C" __global__ void __launch_bounds__(GS_NT)
dst_slot_magnitude_v1(const real* __restrict__ W, real* __restrict__ score,
                      int G, int m, int k, int L) {
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long long)G * k) return;
    int g = (int)(e / k), t = (int)(e % k);
    int mv = m < L - g * m ? m : L - g * m;
    const real* w = W + (long long)g * m * k + t;
    real s = 0;
    for (int j = 0; j < mv; j++) s += R_FABS(w[(long long)j * k]);
    score[e] = s;
}

// -------------------------------------------------------------------------------------------
// dst_regrow_v1: per group g, the r dropped slots slots[g, :] (slot numbers in [0, k), or -1 for
// none) receive, in order, the first candidates cand[g, :] that are in [0, d), not in the old
// set idx[g, :] (dropped inputs included: a dropped input does not come straight back) and not
// given to an earlier slot. The weights of a regrown slot start at zero: W[g, :, t] = 0.
// A slot left without a candidate keeps its input and its weights.
// Shapes: idx (G, k) int32 (read), new_idx (G, k) int32 (written: idx with the regrown slots
// replaced), W (G, m, k) (updated in place), slots (G, r) int32, cand (G, C) int32,
// n_filled (G,) int32 (written: slots regrown per group).
// Launch: grid (ceil(G / NT)), block (GS_NT); one thread per group (serial: C·(k + r) compares).
// Work: ≤ G·C·(k + r) comparisons. Bytes: idx twice (G·k·8), cand (G·C·4), W m·r per group.
extern "C" __global__ void __launch_bounds__(GS_NT)
dst_regrow_v1(const int* __restrict__ idx, int* __restrict__ new_idx, real* __restrict__ W,
              const int* __restrict__ slots, const int* __restrict__ cand,
              int* __restrict__ n_filled, int G, int m, int k, int d, int r, int C) {
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= G) return;
    const int* old = idx + (long long)g * k;
    int* row = new_idx + (long long)g * k;
    const int* sl = slots + (long long)g * r;
    const int* cg = cand + (long long)g * C;
    for (int t = 0; t < k; t++) row[t] = old[t];
    int filled = 0, p = 0;
    for (int s = 0; s < r; s++) {
        int t = sl[s];
        if (t < 0 || t >= k) continue;
        int got = -1;
        while (p < C && got < 0) {
            int c = cg[p++];
            bool ok = c >= 0 && c < d;
            for (int u = 0; ok && u < k; u++) ok = old[u] != c;          // not in the old set
            for (int q = 0; ok && q < s; q++) {                          // not regrown already
                int tq = sl[q];
                if (tq >= 0 && tq < k && tq != t) ok = row[tq] != c;
            }
            if (ok) got = c;
        }
        if (got < 0) break;                                              // candidates used up
        row[t] = got;
        for (int j = 0; j < m; j++) W[((long long)g * m + j) * k + t] = 0;
        filled++;
    }
    n_filled[g] = filled;
}
