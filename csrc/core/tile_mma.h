// The tensor-core GEMM of the throughput path (precision "tf32" / "bf16"): TileEngine<T, Ctx, PREC>::gemm
// (tile_linear.h) hands its GEMMs here when PREC is not fp32. docs/CUDA_KERNELS.md, "Tensor cores", has the
// design's arithmetic.
//   C[r][n] = sum_k A[r][k] P[k][n], r < M (the tile's chains, a multiple of 16), n < N, k < K: the same
//   operands as the fp32 GEMM: A a shared-memory array of the walk (row stride lda: the layer's inputs forward,
//   its output deltas backward), P the weight panels of kMmaKC k-rows that the engine's stage(P, ldp, k0, kc)
//   callable writes into one of two shared buffers (double-buffered: one barrier per panel; the columns
//   [N, pad(N, 8)) and the rows [kc, kMmaKC) zero-filled, so that every n8 tile and k-step is whole).
//   Warps own runs of up to kMmaTilesN (m16 x n8) tiles of C in one row tile: fp32 accumulators in the mma's
//   C/D layout, the A fragment loaded once per k-step for the whole run, B fragments from the panel. Operands
//   are rounded when their fragment is loaded (simt.h: bf16 round to nearest even, tf32 round to nearest away),
//   the products accumulate in fp32 (mma.sync ... .f32); the epilogue epi(r, n, acc) is the fp32 GEMM's, per
//   element.
//   bf16: one m16n8k16 per tile per panel; tf32: two m16n8k8 (k 0-7, 8-15) per tile per panel.
#pragma once

#include <stdint.h>

#include "simt.h"

#if defined(__CUDACC__)
#define HEBM_MMA_UNROLL _Pragma("unroll")
// forced inline: a call would pass the stage / epilogue lambdas by address, and their captures of the kernel's
// BlockArgs would copy the whole parameter block to local memory (a 9,488-byte stack frame on sm_90 without it)
#define HEBM_MMA_FN __device__ __forceinline__
#else
#define HEBM_MMA_UNROLL
#define HEBM_MMA_FN inline
#endif

namespace hebm {
namespace core {

constexpr int kMmaM = 16;       // rows (chains) of an mma tile: the throughput tile is a multiple of it
constexpr int kMmaN = 8;        // columns of an mma tile
constexpr int kMmaKC = 16;      // k-rows per panel: one m16n8k16 k-step, two m16n8k8
constexpr int kMmaTilesN = 8;   // n8 tiles per warp per pass at most (32 fp32 accumulators per lane)

template <typename T>
struct MmaOperand {
  static constexpr bool ok = false;
};
template <>
struct MmaOperand<float> {
  static constexpr bool ok = true;
};

// The GEMM above over the M x N outputs. panels: the two stage buffers (2 x kMmaKC x ldp elements), ldp >=
// pad(N, 8). Every thread of the block calls it (the staging and the barriers are the block's); ends without a
// barrier (the walk's follows).
template <int PREC, typename T, class Ctx, class Stage, class Epi>
HEBM_MMA_FN void gemm_mma(Ctx& ctx, int M, T* panels, int ldp, const T* A, int lda, int N, int K,
                            const Stage& stage, const Epi& epi) {
  static_assert(MmaOperand<T>::ok, "the tensor-core GEMM takes float32 chains (fp32 operands rounded at load)");
  static_assert(PREC == kPrecisionTf32 || PREC == kPrecisionBf16, "gemm_mma: precision tf32 or bf16");
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
  const int mt = M / kMmaM, nt = (N + kMmaN - 1) / kMmaN;
  // tiles per warp: the block's warps share the mt x nt tiles evenly (at most kMmaTilesN each per pass), runs of
  // consecutive n8 tiles in one row tile (the A fragment is shared by the run)
  const int nw = ctx.nwarps();
  int per = (mt * nt + nw - 1) / nw;
  per = per < kMmaTilesN ? per : kMmaTilesN;
  const int runs = (nt + per - 1) / per;  // runs per row tile
  const int items = mt * runs;
  const int nchunks = (K + kMmaKC - 1) / kMmaKC;
  for (int base = 0; base < items; base += nw) {
    const int item = base + ctx.warp();
    const bool active = item < items;  // uniform over the warp: the mma's lanes stay converged
    const int m0 = active ? (item % mt) * kMmaM : 0;
    const int j0 = active ? (item / mt) * per : 0;  // the run's first n8 tile
    const int nj = active ? ((nt - j0) < per ? (nt - j0) : per) : 0;
    float acc[kMmaTilesN][4];
    HEBM_MMA_UNROLL
    for (int j = 0; j < kMmaTilesN; ++j) {
      HEBM_MMA_UNROLL
      for (int i = 0; i < 4; ++i) acc[j][i] = 0.f;
    }
    for (int c = 0; c < nchunks; ++c) {
      // double buffer (as the fp32 GEMM): panel c is written while laggards may still read panel c - 1; the
      // barrier after staging c orders every read of panel c - 2 (this buffer) before the next write
      T* const P = panels + (c & 1) * kMmaKC * ldp;
      const int k0 = c * kMmaKC;
      const int kc = (K - k0) < kMmaKC ? (K - k0) : kMmaKC;
      stage(P, ldp, k0, kc);
      ctx.sync();
      if (!active) continue;
      const T* Ar = A + m0 * lda + k0;
      if constexpr (PREC == kPrecisionBf16) {
        uint32_t af[4];
        load_a_bf16(ctx, af, Ar, lda, 1, kc);  // columns >= kc read as zero (another chain's row lies there)
        HEBM_MMA_UNROLL
        for (int j = 0; j < kMmaTilesN; ++j) {
          if (j < nj) {
            uint32_t bf[2];
            load_b_bf16(ctx, bf, P + (j0 + j) * kMmaN, ldp, 1);
            ctx.mma_bf16_16816(acc[j], af, bf, acc[j]);
          }
        }
      } else {
        HEBM_MMA_UNROLL
        for (int ks = 0; ks < kMmaKC; ks += 8) {
          if (ks < kc) {
            uint32_t af[4];
            load_a_tf32(ctx, af, Ar + ks, lda, 1, kc - ks);
            HEBM_MMA_UNROLL
            for (int j = 0; j < kMmaTilesN; ++j) {
              if (j < nj) {
                uint32_t bf[2];
                load_b_tf32(ctx, bf, P + ks * ldp + (j0 + j) * kMmaN, ldp, 1);
                ctx.mma_tf32_1688(acc[j], af, bf, acc[j]);
              }
            }
          }
        }
      }
    }
    if (active) {
      // C/D layout: c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
      HEBM_MMA_UNROLL
      for (int j = 0; j < kMmaTilesN; ++j) {
        if (j < nj) {
          HEBM_MMA_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int r = m0 + g + 8 * (i >> 1), n = (j0 + j) * kMmaN + 2 * t + (i & 1);
            if (n < N) epi(r, n, T(acc[j][i]));
          }
        }
      }
    }
    if (base + nw < items) ctx.sync();  // the next pass restages panel 0
  }
}

}  // namespace core
}  // namespace hebm
