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
//   sh(p)                                       the shared-memory element at p (a reference; checked in the
//                                               emulation: bounds, alignment, bank conflicts in test mode)
//   ld4(p) st4(p, v)                            16-byte (float) / 32-byte (double) vector access, p aligned
//   cp_async16(dst, src) cp_async_elem(dst, src)   asynchronous copy global -> shared of 16 bytes (both 16-byte
//                                               aligned; cp.async.cg) / of one element (4 or 8 bytes; cp.async.ca)
//   cp_async_commit() cp_async_wait<N>()        close this thread's open copies into a group / wait until at most
//                                               N of its groups are in flight (cp.async.wait_group N). A copy is in
//                                               shared memory once the issuing thread's wait covers its group, and
//                                               visible to other threads after a barrier that follows that wait.
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
  template <typename T>
  __device__ __forceinline__ T* map_rank(T* p, int r) const {
    return cooperative_groups::this_cluster().map_shared_rank(p, r);
  }
#else
  // Before sm_90 there are no clusters: a cluster of one block (the launcher never asks for more there).
  __device__ __forceinline__ int cluster_rank() const { return 0; }
  __device__ __forceinline__ int cluster_size() const { return 1; }
  __device__ __forceinline__ void cluster_sync() const { __syncthreads(); }
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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // cp.async (sm_80+): .cg caches in L2 only (streamed weights are read once per block per step), .ca for the
  // 4-/8-byte element copies (.cg takes 16 bytes only).
  template <typename T>
  __device__ __forceinline__ void cp_async16(T* dst, const T* src) const {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
  }
  template <typename T>
  __device__ __forceinline__ void cp_async_elem(T* dst, const T* src) const {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "cp.async copies 4- or 8-byte elements");
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(src), "n"(int(sizeof(T))) : "memory");
  }
  __device__ __forceinline__ void cp_async_commit() const { asm volatile("cp.async.commit_group;" ::: "memory"); }
  template <int N>
  __device__ __forceinline__ void cp_async_wait() const { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
#else
  // Before sm_80 there is no cp.async: synchronous copies (visible after the same barrier), waits are no-ops.
  // (The launcher takes the streamed path only on 8.0 and newer.)
  template <typename T>
  __device__ __forceinline__ void cp_async16(T* dst, const T* src) const {
    *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
  }
  template <typename T>
  __device__ __forceinline__ void cp_async_elem(T* dst, const T* src) const { *dst = *src; }
  __device__ __forceinline__ void cp_async_commit() const {}
  template <int N>
  __device__ __forceinline__ void cp_async_wait() const {}
#endif
};
#endif

}  // namespace core
}  // namespace hebm
