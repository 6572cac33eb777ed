// selftest.cu: kernels that check the emulation itself (tests/test_cuda_emulate.py).
// Not part of the engine: they prove that __shared__ is one array per block, that
// __syncthreads orders the block's threads, that atomicAdd does not lose updates and that the
// built-in indices cover the grid.

#define SELF_MAXT 64

// out[b·n + i] = in[b·n + (n-1-i)]: each block reverses its slice through shared memory.
// Wrong without a real barrier or with per-thread "shared" arrays.
extern "C" __global__ void self_reverse(const float* in, float* out, int n) {
    __shared__ float s[SELF_MAXT];
    int i = threadIdx.x, base = blockIdx.x * n;
    s[i] = in[base + i];
    __syncthreads();
    out[base + i] = s[n - 1 - i];
}

// count[0] += 1 per thread of the grid, rounds times; ids[global thread] = global thread id.
extern "C" __global__ void self_atomic(int* count, int* ids, int rounds) {
    int tid = (blockIdx.y * gridDim.x + blockIdx.x) * (blockDim.x * blockDim.y)
              + threadIdx.y * blockDim.x + threadIdx.x;
    for (int r = 0; r < rounds; r++) atomicAdd(count, 1);
    ids[tid] = tid;
}
