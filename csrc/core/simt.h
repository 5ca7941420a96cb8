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
//   mbar_init(bar, n) mbar_arrive_cluster(bar, r) mbar_wait_parity(bar, parity)
//                                               mbarriers (sm_90): bar a uint64_t in shared memory (8-byte
//                                               aligned). init (one thread, before any use: then
//                                               fence.mbarrier_init.release.cluster, issued by init, and a cluster
//                                               barrier before any other thread's use) sets n arrivals per phase,
//                                               phase 0. arrive (mapa + mbarrier.arrive.release.cluster
//                                               .shared::cluster): one arrival on the mbarrier at bar's offset in
//                                               block r of the cluster, with release semantics at cluster scope
//                                               (this thread's earlier accesses, and what it ordered before them by
//                                               __syncwarp or a barrier, are visible after the phase's wait); the n-th
//                                               arrival completes the phase. wait (mbarrier.try_wait.parity.acquire
//                                               .cluster, polled): returns once the phase with that parity (phase k:
//                                               parity k & 1) of this block's mbarrier has completed; with the
//                                               parity of the phase before the current one it returns at once.
//                                               Before sm_90 no clusters: init and arrive do nothing, wait is a
//                                               block barrier (every thread of the block must wait)
//   sh(p)                                       the shared-memory element at p (a reference; checked in the
//                                               emulation: bounds, alignment, bank conflicts in test mode)
//   ld4(p) st4(p, v)                            16-byte (float) / 32-byte (double) vector access, p aligned
//   mma_bf16_16816(d, a, b, c)                  warp-wide tensor-core products D = A B + C (mma.sync, sm_80+):
//   mma_tf32_1688(d, a, b, c)                   m16n8k16 bf16 and m16n8k8 tf32 with fp32 accumulation; the lane
//                                               layouts and the fragment helpers are below ("MMA fragments")
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
#include <string.h>

#include "macros.h"

#if defined(__CUDACC__)
#define HEBM_BLOCK_FN __device__ inline
// The program walk's outer functions (block_program, block_step, block_head): inlined into the kernel, so no ABI
// call boundary splits it. With a call there, every value live across it is saved to the stack when the callee
// uses the full register file (the 4-chain cluster kernels spilled 112-144 bytes so with cut (e)'s fused last
// hidden layer; inlined: 233 registers, no spills; docs/CUDA_KERNELS.md).
#define HEBM_BLOCK_INLINE __device__ __forceinline__
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#endif
#else
#define HEBM_BLOCK_FN inline
#define HEBM_BLOCK_INLINE inline
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
  __device__ __forceinline__ void mbar_init(uint64_t* bar, int n) const {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(s), "r"(n) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, int r) const {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(s), "r"(r));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
  }
  __device__ __forceinline__ void mbar_wait_parity(uint64_t* bar, int parity) const {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    unsigned done = 0;
    do {
      asm volatile(
          "{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
          " selp.u32 %0, 1, 0, p;\n}"
          : "=r"(done)
          : "r"(s), "r"(parity)
          : "memory");
    } while (!done);
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
  __device__ __forceinline__ void mbar_init(uint64_t*, int) const {}
  __device__ __forceinline__ void mbar_arrive_cluster(uint64_t*, int) const {}
  __device__ __forceinline__ void mbar_wait_parity(uint64_t*, int) const { __syncthreads(); }
#endif
  template <typename T>
  __device__ __forceinline__ T& sh(T* p) const { return *p; }
  template <typename T>
  __device__ __forceinline__ const T& sh(const T* p) const { return *p; }
  template <typename T>
  __device__ __forceinline__ Vec4<T> ld4(const T* p) const { return *reinterpret_cast<const Vec4<T>*>(p); }
  template <typename T>
  __device__ __forceinline__ void st4(T* p, const Vec4<T>& v) const { *reinterpret_cast<Vec4<T>*>(p) = v; }

  // Tensor-core MMA, one warp collective each (all 32 lanes, converged). Operand registers hold the lane's fragment
  // elements as described at "MMA fragments" below; d may alias c.
  __device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#elif defined(__CUDA_ARCH__)
    __trap();  // no bf16 mma.sync before sm_80: the launcher never selects a tensor-core kernel there
#endif
  }
  __device__ __forceinline__ void mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                const float c[4]) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#elif defined(__CUDA_ARCH__)
    __trap();  // no tf32 mma.sync before sm_80: the launcher never selects a tensor-core kernel there
#endif
  }
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

// ----------------------------------------------------------------------------------------------------------------
// The matmul precision of a chain: sample_prior(precision="fp32" | "tf32" | "bf16") is this index (the Python
// tuple hebm_ext.sampling.reference.PRECISIONS), the op's int precision and BlockArgs::precision.
enum Precision : int { kPrecisionFp32 = 0, kPrecisionTf32 = 1, kPrecisionBf16 = 2 };

// MMA fragments. Reduced-precision operands are rounded once, when a fragment is loaded:
//   bf16: round to nearest, ties to even (8 significant bits; cvt.rn.bf16x2.f32, torch's x.to(torch.bfloat16));
//   tf32: round to nearest, ties away from zero, to 10 explicit mantissa bits (cvt.rna.tf32.f32; the mma reads
//         only the top 19 bits of a tf32 register).
// NaN stays NaN (quiet), infinities stay, values past the format's largest finite round to infinity.

HEBM_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
#endif
}
HEBM_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, 4);
  return x;
#endif
}

// The 16 bits of x rounded to bf16 (portable integer form: adding 0x7fff plus the kept lsb carries into the kept
// bits exactly when the dropped half is above the tie, or at the tie with an odd lsb).
HEBM_HD uint32_t bf16_bits_rn(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x0040u;  // NaN: keep sign and top payload, quiet
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// Two floats rounded to bf16 in one register: lo in bits 0-15, hi in bits 16-31 (cvt.rn.bf16x2.f32 d, hi, lo).
HEBM_HD uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
#else
  return bf16_bits_rn(lo) | (bf16_bits_rn(hi) << 16);
#endif
}

// The float value of x rounded to bf16.
HEBM_HD float bf16_round(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return bits_float(pack_bf16x2(0.f, x) & 0xffff0000u);
#else
  return bits_float(bf16_bits_rn(x) << 16);
#endif
}

// x rounded to tf32 as the bits of an fp32 register (the low 13 bits zero).
HEBM_HD uint32_t tf32_bits(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t d;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(d) : "f"(x));
  return d & 0xffffe000u;
#else
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u | 0x00400000u) & 0xffffe000u;  // NaN: quiet, stays NaN
  // sign-magnitude: adding half an ulp to the magnitude's bits rounds half away from zero (and carries into the
  // exponent, up to infinity, where it should)
  return (u + 0x1000u) & 0xffffe000u;
#endif
}
HEBM_HD float tf32_round(float x) { return bits_float(tf32_bits(x)); }

// x rounded to a matmul operand at `precision` (fp32: x itself), the rounding of the fragment loads below: the
// latency engine's SIMT products (WarpEngine, warp_linear.h) round their operands with it.
template <typename T>
HEBM_HD T round_operand(T x, int precision) {
  if (precision == kPrecisionBf16) return T(bf16_round(float(x)));
  if (precision == kPrecisionTf32) return T(tf32_round(float(x)));
  return x;
}
// The two bf16 values of a packed word (pack_bf16x2: the lower in bits 0-15) as floats (exact).
HEBM_HD float bf16_lo(uint32_t w) { return bits_float(w << 16); }
HEBM_HD float bf16_hi(uint32_t w) { return bits_float(w & 0xffff0000u); }

// Two consecutive floats of shared memory in one 8-byte access (q 8-byte aligned): the MMA operands' k-pairs.
template <class Ctx>
HEBM_BLOCK_FN void sh_pair(Ctx& ctx, const float* q, float& x0, float& x1) {
  const uint64_t v = ctx.sh(reinterpret_cast<const uint64_t*>(q));
  x0 = bits_float(uint32_t(v));
  x1 = bits_float(uint32_t(v >> 32));
}

// Fragment layouts of the PTX ISA ("Matrix fragments for mma.m16n8k16 / mma.m16n8k8"), with g = lane >> 2 and
// t = lane & 3; a bf16 register holds two elements, the lower-indexed one in bits 0-15:
//   m16n8k16 bf16   a0 = A[g][2t, 2t+1]  a1 = A[g+8][2t, 2t+1]  a2 = A[g][2t+8, 2t+9]  a3 = A[g+8][2t+8, 2t+9]
//                   b0 = B[2t, 2t+1][g]  b1 = B[2t+8, 2t+9][g]
//   m16n8k8 tf32    a0 = A[g][t]  a1 = A[g+8][t]  a2 = A[g][t+4]  a3 = A[g+8][t+4]      b0 = B[t][g]  b1 = B[t+4][g]
//   C / D (both)    c0 = C[g][2t]  c1 = C[g][2t+1]  c2 = C[g+8][2t]  c3 = C[g+8][2t+1]
// The helpers read and write fp32 shared memory through ctx.sh (bounds-checked and bank-counted in the
// emulation). Element (i, j) of a tile is at p[i * rs + j * cs]: a row-major array with leading dimension ld is
// (rs, cs) = (ld, 1); its transpose is (1, ld) (a weight matrix W[n][k] read as the B = W^T of X W^T).
// Each is called by all 32 lanes of a warp (each lane loads its own elements; no collective).

// A: the 16 x 16 tile at p (rows m, columns k), rounded to bf16. Columns k >= kn read as zero and are not
// touched (a partial last k-step: what lies past the last column may be another chain's row, or anything).
template <class Ctx>
HEBM_BLOCK_FN void load_a_bf16(Ctx& ctx, uint32_t a[4], const float* p, int rs, int cs, int kn = 16) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
  // A register's k-pair is two consecutive floats where the rows are: one 8-byte load (p 8-byte aligned and rs even,
  // cs == 1: the throughput GEMM's A at an even lda). At lda = 8 mod 32 (LEBM's 200) a half-warp's 4 rows x 8 words
  // then fill the 32 banks: 2 wavefronts a register, where two scalar loads took 2 each (rows g and g + 4 share
  // banks); at 4 mod 32 (100) both forms take 4.
  const bool pairs = cs == 1 && (rs & 1) == 0 && (reinterpret_cast<uintptr_t>(p) & 7) == 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i) {
    const int k = 2 * t + 8 * (i >> 1);
    const float* q = p + (g + 8 * (i & 1)) * rs + k * cs;
    if (pairs && k + 1 < kn) {
      float x0, x1;
      sh_pair(ctx, q, x0, x1);
      a[i] = pack_bf16x2(x0, x1);
    } else {
      a[i] = pack_bf16x2(k < kn ? ctx.sh(q) : 0.f, k + 1 < kn ? ctx.sh(q + cs) : 0.f);
    }
  }
}

// B: the 16 x 8 tile at p (rows k, columns n), rounded to bf16.
template <class Ctx>
HEBM_BLOCK_FN void load_b_bf16(Ctx& ctx, uint32_t b[2], const float* p, int rs, int cs) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 2; ++i) {
    const float* q = p + (2 * t + 8 * i) * rs + g * cs;
    b[i] = pack_bf16x2(ctx.sh(q), ctx.sh(q + rs));
  }
}

// A: the 16 x 8 tile at p (rows m, columns k), rounded to tf32; columns k >= kn read as zero (as load_a_bf16).
template <class Ctx>
HEBM_BLOCK_FN void load_a_tf32(Ctx& ctx, uint32_t a[4], const float* p, int rs, int cs, int kn = 8) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i) {
    const int k = t + 4 * (i >> 1);
    a[i] = k < kn ? tf32_bits(ctx.sh(p + (g + 8 * (i & 1)) * rs + k * cs)) : 0u;
  }
}

// B: the 8 x 8 tile at p (rows k, columns n), rounded to tf32.
template <class Ctx>
HEBM_BLOCK_FN void load_b_tf32(Ctx& ctx, uint32_t b[2], const float* p, int rs, int cs) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
  b[0] = tf32_bits(ctx.sh(p + t * rs + g * cs));
  b[1] = tf32_bits(ctx.sh(p + (t + 4) * rs + g * cs));
}

// C / D: the 16 x 8 fp32 accumulator tile at p (both shapes share it).
template <class Ctx>
HEBM_BLOCK_FN void load_c_f32(Ctx& ctx, float c[4], const float* p, int rs, int cs) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i) c[i] = ctx.sh(p + (g + 8 * (i >> 1)) * rs + (2 * t + (i & 1)) * cs);
}
template <class Ctx>
HEBM_BLOCK_FN void store_d_f32(Ctx& ctx, const float d[4], float* p, int rs, int cs) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i) ctx.sh(p + (g + 8 * (i >> 1)) * rs + (2 * t + (i & 1)) * cs) = d[i];
}

}  // namespace core
}  // namespace hebm
