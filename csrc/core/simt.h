// The SIMT primitive layer of the CUDA kernels: the only place where a kernel meets the hardware.
//
// Kernels (csrc/core/block_sampler.h, warp_linear.h) are templates over an execution context `Ctx` with:
//   tid() nthreads() lane() warp() nwarps()     thread, lane (0..31) and warp ids in the block
//   sync()                                      block barrier (__syncthreads, bar.sync 0)
//   named_sync(id, n)                           named barrier id (1..15) over n threads, a multiple of 32
//   syncwarp()                                  warp barrier (__syncwarp)
//   shfl_xor(v, m) shfl_down(v, d) shfl_up(v, d) shfl_idx(v, src)     full-warp shuffles of float/double/int
//                                               (the __shfl_*_sync(0xffffffff, ...) semantics, width 32)
//   cluster_rank() cluster_size() cluster_sync() map_rank(p, r)      thread-block cluster and distributed shared
//                                               memory: p in this block's shared memory -> the same offset in
//                                               block r of the cluster (cooperative_groups' map_shared_rank)
//   cluster_arrive() cluster_wait()             the split cluster barrier (barrier.cluster.arrive.release /
//                                               barrier.cluster.wait.acquire): writes before a thread's arrive are
//                                               visible to every thread of the cluster after its wait; work between
//                                               the two overlaps the barrier's latency but may touch only data no
//                                               other thread writes before its arrive (cluster_sync = arrive + wait)
//   sh(p)                                       the shared-memory element at p (a reference; checked in the
//                                               emulation: bounds, alignment, bank conflicts in test mode)
//   ld4(p) st4(p, v)                            16-byte (float) / 32-byte (double) vector access, p aligned
// Two implementations: DeviceCtx below (CUDA intrinsics, inline PTX) and EmuCtx (csrc/cpu/simt_emulation.h), which
// runs every thread of a block (and of a cluster) as a fiber on the CPU, switching lanes at every warp collective
// and barrier, so the same kernel source runs lane by lane on a machine without a GPU.
#pragma once

#include <stdint.h>

#include "macros.h"

#if defined(__CUDACC__)
#define HEBM_BLOCK_FN __device__ inline
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#endif
#else
#define HEBM_BLOCK_FN inline
#endif

namespace hebm {
namespace core {

constexpr int kWarp = 32;

// Four consecutive elements (one 16-byte float vector access).
template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T x, y, z, w;
};

// Warp sum by the xor butterfly: every lane ends with the same value, bit for bit (each level adds the same two
// partial sums, a + b == b + a), so any lane may write it.
template <typename T, class Ctx>
HEBM_BLOCK_FN T warp_sum(Ctx& ctx, T v) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int m = kWarp / 2; m > 0; m >>= 1) v += ctx.shfl_xor(v, m);
  return v;
}

// N independent warp sums at once: each butterfly level issues N shuffles that do not depend on each other, so
// their latencies overlap (one sum at a time would pay 5 dependent shuffle latencies per value).
template <typename T, int N, class Ctx>
HEBM_BLOCK_FN void warp_sum_n(Ctx& ctx, T* v) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int m = kWarp / 2; m > 0; m >>= 1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 0; i < N; ++i) v[i] += ctx.shfl_xor(v[i], m);
  }
}

// N independent warp sums (N a power of two, at most 32) in N shuffles instead of 5 N: at each butterfly level
// while more than one value is left, a lane keeps one half of its values and sends the other half to its partner
// (lanes with bit m set keep the upper half), so the values halve while the lanes summed over double; the last
// levels are plain butterflies. Returns the full sum of value (lane / (32 / N)) (the same bits in the 32 / N
// lanes that hold it); v is clobbered. One warp's shuffles are its SM's shuffle throughput (32 lanes per clock).
template <typename T, int N, class Ctx>
HEBM_BLOCK_FN T warp_sum_scatter(Ctx& ctx, T* v) {
  static_assert(N >= 1 && N <= kWarp && (N & (N - 1)) == 0, "N: a power of two up to 32");
  const int lane = ctx.lane();
  int n = N;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int m = kWarp / 2; m > 0; m >>= 1) {
    if (n > 1) {
      const bool up = (lane & m) != 0;
      const int h = n / 2;
#if defined(__CUDACC__)
#pragma unroll
#endif
      for (int j = 0; j < h; ++j) {
        const T send = up ? v[j] : v[j + h];
        const T keep = up ? v[j + h] : v[j];
        v[j] = keep + ctx.shfl_xor(send, m);
      }
      n = h;
    } else {
      v[0] += ctx.shfl_xor(v[0], m);
    }
  }
  return v[0];
}

#if defined(__CUDACC__)
// The CUDA context: intrinsics and PTX; every member compiles to the instruction it names.
struct DeviceCtx {
  __device__ __forceinline__ int tid() const { return threadIdx.x; }
  __device__ __forceinline__ int nthreads() const { return blockDim.x; }
  __device__ __forceinline__ int lane() const { return threadIdx.x & (kWarp - 1); }
  __device__ __forceinline__ int warp() const { return threadIdx.x / kWarp; }
  __device__ __forceinline__ int nwarps() const { return blockDim.x / kWarp; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  __device__ __forceinline__ void named_sync(int id, int n) const {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
  }
  __device__ __forceinline__ void syncwarp() const { __syncwarp(); }
  template <typename T>
  __device__ __forceinline__ T shfl_xor(T v, int m) const { return __shfl_xor_sync(0xffffffffu, v, m); }
  template <typename T>
  __device__ __forceinline__ T shfl_down(T v, int d) const { return __shfl_down_sync(0xffffffffu, v, d); }
  template <typename T>
  __device__ __forceinline__ T shfl_up(T v, int d) const { return __shfl_up_sync(0xffffffffu, v, d); }
  template <typename T>
  __device__ __forceinline__ T shfl_idx(T v, int src) const { return __shfl_sync(0xffffffffu, v, src); }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __device__ __forceinline__ int cluster_rank() const { return int(cooperative_groups::this_cluster().block_rank()); }
  __device__ __forceinline__ int cluster_size() const { return int(cooperative_groups::this_cluster().num_blocks()); }
  __device__ __forceinline__ void cluster_sync() const { cooperative_groups::this_cluster().sync(); }
  __device__ __forceinline__ void cluster_arrive() const {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  }
  __device__ __forceinline__ void cluster_wait() const {
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  }
  template <typename T>
  __device__ __forceinline__ T* map_rank(T* p, int r) const {
    return cooperative_groups::this_cluster().map_shared_rank(p, r);
  }
#else
  // Before sm_90 there are no clusters: a cluster of one block (the launcher never asks for more there).
  __device__ __forceinline__ int cluster_rank() const { return 0; }
  __device__ __forceinline__ int cluster_size() const { return 1; }
  __device__ __forceinline__ void cluster_sync() const { __syncthreads(); }
  __device__ __forceinline__ void cluster_arrive() const {}
  __device__ __forceinline__ void cluster_wait() const { __syncthreads(); }
  template <typename T>
  __device__ __forceinline__ T* map_rank(T* p, int) const { return p; }
#endif
  template <typename T>
  __device__ __forceinline__ T& sh(T* p) const { return *p; }
  template <typename T>
  __device__ __forceinline__ const T& sh(const T* p) const { return *p; }
  template <typename T>
  __device__ __forceinline__ Vec4<T> ld4(const T* p) const { return *reinterpret_cast<const Vec4<T>*>(p); }
  template <typename T>
  __device__ __forceinline__ void st4(T* p, const Vec4<T>& v) const { *reinterpret_cast<Vec4<T>*>(p) = v; }
};
#endif

}  // namespace core
}  // namespace hebm
