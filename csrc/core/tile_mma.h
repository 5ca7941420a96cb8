// The tensor-core GEMM of the throughput path (precision "tf32" / "bf16"): TileEngine<T, Ctx, PREC>::gemm
// (tile_linear.h) hands its GEMMs here when PREC is not fp32. docs/CUDA_KERNELS.md, "Tensor cores", has the
// design's arithmetic.
//   C[r][n] = sum_k A[r][k] P[k][n], r < M (the tile's chains, a multiple of 16), n < N, k < K: the same
//   operands as the fp32 GEMM: A a shared-memory array of the walk (row stride lda: the layer's inputs forward,
//   its output deltas backward), P the weight panels of kMmaKC k-rows that the engine's
//   PanelStage (tile_linear.h: stage.issue(P, ldp, k0, kc), cp.async) writes into one of S shared buffers
//   (kMmaStages): panel c + S - 1's copies are in flight while panel c's MMAs run (one barrier per panel; the columns
//   [N, pad(N, 8)) and the rows [kc, kMmaKC) zero-filled, so that every n8 tile and k-step is whole).
//   Warps own runs of up to kMmaTilesN (m16 x n8) tiles of C in one row tile: fp32 accumulators in the mma's
//   C/D layout, the A fragment loaded once per k-step for the whole run, B fragments from the panel. bf16
//   panels hold packed bf16 k-pairs (below: rounded once, before the launch; one word per B register), tf32
//   panels fp32. The other operands are rounded when their fragment is loaded (simt.h: bf16 round to nearest
//   even, tf32 round to nearest away),
//   the products accumulate in fp32 (mma.sync ... .f32); the epilogue epi(r, n, acc) is the fp32 GEMM's, per
//   element.
//   bf16: one m16n8k16 per tile per panel; tf32: two m16n8k8 (k 0-7, 8-15) per tile per panel.
#pragma once

#include <stdint.h>

#include "program.h"
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
constexpr int kMmaKP = kMmaKC / 2;  // bf16 panels: word rows per panel (one packed k-pair per 32-bit word)

// bf16 panels. The weights go to shared memory as packed bf16 k-pairs, one 32-bit word per B-fragment register
// (b0 = B[2t, 2t+1][g] is word row t, b1 word row t + 4: load_b_bf16_pairs): rounded once, round to nearest even
// (pack_bf16x2, the rounding load_b_bf16 applied at fragment load: the same values), before the launch, into a
// global buffer of words (bf16_pair_word; the launcher fills it, the emulation too), so that the staging is a
// cp.async of words: half the fp32 panels' L2 bytes. Per linear j (W row-major out x in), two blocks, each
// a multiple of 8 words (32-byte sectors, 16-byte copies; the buffer starts 64-byte aligned):
//   forward  [out][hinp] word (o, q) = (W[o][2q], W[o][2q + 1]): the forward panel P[k][o] = W[o][k] has k-pairs
//                        along W's rows (the same order as W rounded to bf16, 2 elements per word); rows of
//                        hinp = pad(ceil(in / 2), 8) words, so that a panel's 8 words of a row are one 32-byte
//                        L2 sector (words q >= ceil(in / 2) zero);
//   backward [hout][in]  word (q, i) = (W[2q][i], W[2q + 1][i]): the backward panel P[o][i] = W[o][i] pairs rows
//                        (a panel reads 8 whole rows: contiguous);
// hout = ceil(out / 2); an odd tail's high half is zero. The lower k in bits 0-15.
HEBM_HD int bf16_pair_fwd_ld(const LinearDesc& L) { return ((L.in + 1) / 2 + 7) / 8 * 8; }
HEBM_HD int64_t bf16_pair_fwd_words(const LinearDesc& L) { return int64_t(L.out) * bf16_pair_fwd_ld(L); }
HEBM_HD int64_t bf16_pair_bwd_words(const LinearDesc& L) { return (int64_t((L.out + 1) / 2) * L.in + 7) / 8 * 8; }
// Words before linear j's forward block (j = n_lin: the buffer's size).
HEBM_HD int64_t bf16_pair_offset(const ProgramDesc& p, int j) {
  int64_t o = 0;
  for (int i = 0; i < j; ++i) o += bf16_pair_fwd_words(p.lin[i]) + bf16_pair_bwd_words(p.lin[i]);
  return o;
}
HEBM_HD int64_t bf16_pair_words(const ProgramDesc& p) { return bf16_pair_offset(p, p.n_lin); }
// Word w of the buffer (0 in the blocks' padding).
HEBM_HD uint32_t bf16_pair_word(const ProgramDesc& p, const float* params, int64_t w) {
  for (int j = 0; j < p.n_lin; ++j) {
    const LinearDesc& L = p.lin[j];
    const float* W = params + L.w;
    const int64_t nf = bf16_pair_fwd_words(L), nb = bf16_pair_bwd_words(L);
    if (w < nf) {
      const int hinp = bf16_pair_fwd_ld(L);
      const int64_t o = w / hinp, k = 2 * (w - o * hinp);
      if (k >= L.in) return 0u;
      return pack_bf16x2(W[o * L.in + k], k + 1 < L.in ? W[o * L.in + k + 1] : 0.f);
    }
    w -= nf;
    if (w < nb) {
      const int64_t q = w / L.in, i = w - q * L.in, o = 2 * q;
      if (o >= L.out) return 0u;
      return pack_bf16x2(W[o * L.in + i], o + 1 < L.out ? W[(o + 1) * L.in + i] : 0.f);
    }
    w -= nb;
  }
  return 0u;
}

// Row stride of a tensor-core panel (bf16: word rows of packed k-pairs; tf32: fp32 k-rows): at least
// pad(width, 8), = 8 or 24 mod 32, so that the 4 rows t = 0..3 of a B fragment (b0 row t, b1 row t + 4:
// load_b_bf16_pairs, load_b_tf32) fall in 4 disjoint groups of 8 banks (one wavefront per LDS.32). The fp32
// GEMM's tile_panel_ld (20 mod 32 at LEBM's 212) puts rows t and t + 3 in the same banks: 2-way.
HEBM_HD int mma_panel_ld(int width) {
  const int n = (width + 7) / 8 * 8;
  return n % 16 == 0 ? n + 8 : n;
}

// B: the 16 x 8 bf16 tile of a packed-pair panel at p (word rows k-pairs, columns n, row stride ldw words): two
// LDS.32, no conversion (the words were rounded at packing).
template <class Ctx>
HEBM_BLOCK_FN void load_b_bf16_pairs(Ctx& ctx, uint32_t b[2], const uint32_t* p, int ldw) {
  const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
  b[0] = ctx.sh(p + t * ldw + g);
  b[1] = ctx.sh(p + (t + 4) * ldw + g);
}

template <typename T>
struct MmaOperand {
  static constexpr bool ok = false;
};
template <>
struct MmaOperand<float> {
  static constexpr bool ok = true;
};

// Panel buffers (stages) of the prefetch: tf32 2 (fp32 panels, the fp32 GEMM's double buffer), bf16 3 (packed
// panels are half the size). Both fit the layout's 2 x 16 x max(tile_panel_ld, mma_panel_ld) floats
// (throughput_layout): tf32 2 x 16 x mma_panel_ld, bf16 3 x 8 x mma_panel_ld words.
template <int PREC>
constexpr int kMmaStages = PREC == kPrecisionBf16 ? 3 : 2;

// The GEMM above over the M x N outputs. panels: the stage buffers, PT = T (tf32: 2 x kMmaKC x ldp floats) or
// uint32_t (bf16: packed pairs, 3 x kMmaKP x ldp words), ldp >= pad(N, 8). Every thread of the block calls it (the
// staging and the barriers are the block's); ends without a barrier (the walk's follows), with no copy in flight
// (only empty groups).
template <int PREC, typename T, typename PT, class Ctx, class Stage, class Epi>
HEBM_MMA_FN void gemm_mma(Ctx& ctx, int M, PT* panels, int ldp, const T* A, int lda, int N, int K,
                            const Stage& stage, const Epi& epi) {
  static_assert(MmaOperand<T>::ok, "the tensor-core GEMM takes float32 chains (fp32 operands rounded at load)");
  static_assert(PREC == kPrecisionTf32 || PREC == kPrecisionBf16, "gemm_mma: precision tf32 or bf16");
  static_assert(PREC == kPrecisionBf16 ? sizeof(PT) == 4 && PT(-1) > PT(0) : sizeof(PT) == sizeof(T),
                "gemm_mma: bf16 panels are packed uint32_t pairs, tf32 panels fp32");
  constexpr int prows = PREC == kPrecisionBf16 ? kMmaKP : kMmaKC;  // panel rows (words: k-pairs; floats: k)
  constexpr int S = kMmaStages<PREC>;
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
    // Step c issues panel c + S - 1's copies (stage.issue: cp.async, in flight), then runs panel c's MMAs (steps
    // below 0 run none): the copies' L2 latency hides behind S - 1 panels of MMAs (the fp32 GEMM's prefetch,
    // tile_linear.h, at S = 2). They go to buffer (c - 1) mod S, whose last reads (panel c - 1) ended before the
    // barrier that closed step c - 1. Past the last panel a step commits an empty group, so that after the MMAs
    // cp.async.wait_group S - 2 always means "panel c + 1 has landed" (this thread's part); then one barrier
    // (every thread's panel c + 1 visible, every read of panel c done before step c + 1 refills its buffer).
    // Inactive warps still stage and meet the barriers.
    for (int c = 1 - S; c < nchunks; ++c) {
      const int cn = c + S - 1;
      if (cn < nchunks) {
        const int k1 = cn * kMmaKC;
        stage.issue(panels + (cn % S) * prows * ldp, ldp, k1, (K - k1) < kMmaKC ? (K - k1) : kMmaKC);
      } else if (S > 2) {
        ctx.cp_async_commit();
      }
      if (active && c >= 0) {
        const PT* const P = panels + (c % S) * prows * ldp;
        const int k0 = c * kMmaKC;
        const int kc = (K - k0) < kMmaKC ? (K - k0) : kMmaKC;
        const T* Ar = A + m0 * lda + k0;
        if constexpr (PREC == kPrecisionBf16) {
          uint32_t af[4];
          load_a_bf16(ctx, af, Ar, lda, 1, kc);  // columns >= kc read as zero (another chain's row lies there)
          HEBM_MMA_UNROLL
          for (int j = 0; j < kMmaTilesN; ++j) {
            if (j < nj) {
              uint32_t bf[2];
              load_b_bf16_pairs(ctx, bf, P + (j0 + j) * kMmaN, ldp);
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
      if (c >= -1 && c + 1 < nchunks) {
        ctx.template cp_async_wait<S - 2>();
        ctx.sync();
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
    // the next pass restages panels 0 .. S - 2, whose buffers laggards may still read (the last panels)
    if (base + nw < items) ctx.sync();
  }
}

}  // namespace core
}  // namespace hebm
