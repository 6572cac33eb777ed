// cuda_emu.h: run CUDA kernels on the CPU, from their own .cu source, with the host compiler.
//
//     g++ -std=c++20 -O1 -fsanitize=address -pthread -include cuda_emu.h -x c++ kernels.cu driver.cpp
//
// What it defines: threadIdx / blockIdx (thread_local), blockDim / gridDim, __global__,
// __device__, __host__, __forceinline__, __launch_bounds__, __restrict__, __shared__,
// __syncthreads (a C++20 std::barrier per block), atomicAdd (std::atomic_ref), __int_as_float,
// __longlong_as_double, and cuda_emu::launch(grid, block, fn).
//
// How a launch runs: blocks one after another (x fastest, then y, then z); the threads of a block
// as real std::threads that meet at the block's barrier in __syncthreads (one set of threads
// per launch, started once and handed the blocks in turn). `__shared__` becomes `static`: one
// array shared by every thread of the process, which is exactly the block's shared memory
// because only one block runs at a time (every thread has finished a block before the next one
// starts). A thread that returns leaves the block's barrier (arrive_and_drop), like an exited
// GPU thread. Races and out-of-bounds accesses show as wrong results or AddressSanitizer errors;
// a __syncthreads that not all threads reach deadlocks (it is undefined behaviour on the GPU too).
// Not emulated: warp shuffles and votes, dynamic shared memory, streams, textures.
#pragma once

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_emu {
inline dim3 grid_dim, block_dim;
inline thread_local dim3 thread_idx, block_idx;
inline std::barrier<>* block_barrier = nullptr;

// Run fn() as kernel<<<grid, block>>>: blocks in order, each block's threads in parallel. The
// block's threads are started once; `gate` (them and this thread) marks each block's start and
// end, and each block gets a fresh barrier (a thread that returned early was dropped from the last).
template <class F>
void launch(dim3 grid, dim3 block, F&& fn) {
    grid_dim = grid;
    block_dim = block;
    const unsigned nt = block.x * block.y * block.z;
    std::barrier<> gate(nt + 1);
    dim3 next;
    bool done = false;
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (unsigned i = 0; i < nt; i++) {
        threads.emplace_back([&, i] {
            thread_idx = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
            for (;;) {
                gate.arrive_and_wait();                    // a block is ready, or the launch is over
                if (done) return;
                block_idx = next;
                fn();
                block_barrier->arrive_and_drop();
                gate.arrive_and_wait();                    // every thread is through the block
            }
        });
    }
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                std::barrier<> bar(nt);
                block_barrier = &bar;
                next = dim3(bx, by, bz);
                gate.arrive_and_wait();                    // start the block
                gate.arrive_and_wait();                    // and wait for its end
            }
    done = true;
    gate.arrive_and_wait();
    for (auto& t : threads) t.join();
    block_barrier = nullptr;
}
}  // namespace cuda_emu

#define threadIdx (cuda_emu::thread_idx)
#define blockIdx (cuda_emu::block_idx)
#define blockDim (cuda_emu::block_dim)
#define gridDim (cuda_emu::grid_dim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

inline void __syncthreads() { cuda_emu::block_barrier->arrive_and_wait(); }

inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }

inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline double __longlong_as_double(long long v) { return std::bit_cast<double>(v); }
