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
// as real std::threads that meet at the block's barrier in __syncthreads. `__shared__` becomes
// `static`: one array shared by every thread of the process, which is exactly the block's shared
// memory because only one block runs at a time (the launcher joins a block's threads before it
// starts the next). A thread that returns leaves the barrier (arrive_and_drop), like an exited
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

// Run fn() as kernel<<<grid, block>>>: blocks in order, each block's threads in parallel.
template <class F>
void launch(dim3 grid, dim3 block, F&& fn) {
    grid_dim = grid;
    block_dim = block;
    const unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                std::barrier<> bar(nt);
                block_barrier = &bar;
                std::vector<std::thread> threads;
                threads.reserve(nt);
                for (unsigned i = 0; i < nt; i++) {
                    threads.emplace_back([&, i] {
                        block_idx = dim3(bx, by, bz);
                        thread_idx = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
                        fn();
                        bar.arrive_and_drop();
                    });
                }
                for (auto& t : threads) t.join();
                block_barrier = nullptr;
            }
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
