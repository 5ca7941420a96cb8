// The throughput path of the CUDA latent sampler (large B): persistent blocks, each running tiles of up to
// kTileMaxChains chains one after another through the program walk (block_sampler.h), the linear layers as
// register-tiled SIMT GEMMs (TileEngine below). docs/CUDA_KERNELS.md has the design's arithmetic.
//   layout:   throughput_layout keeps only the per-chain arrays the program uses (no z / gz without the
//             u-ladder, no go without a ladder, d1 only for a backward chain of 2+ hidden deltas): LEBM
//             100-200-200-1 needs 1,504 floats per chain (200 of them the noise drawn a step ahead) instead of
//             block_layout's ~2,100, so 32 chains and the weight panels fit in 227 KB.
//   GEMM:     C[r][n] = sum_k A[r][k] P[k][n] over the tile's M chains: A is a shared-memory array of the walk
//             (the layer's inputs forward, its output deltas backward), P a panel of kTileKC weight rows copied
//             from global memory (L2) by cp.async into one of two shared buffers: panel c + 1's copies are in
//             flight while panel c is computed (one barrier per panel, the L2 latency hidden behind the compute).
//             Forward P[k][o] = W[o][k] (the layer transposed), backward P[o][i] = W[o][i] (the layer itself;
//             a head's dh * w_out is formed by the forward's epilogue): the same staged rows, the transposed operand.
//             Every thread owns a 4 x 8 tile of C in registers (4 chains x 8 outputs: 32 accumulators; per 4 k:
//             4 16-byte loads of A, 8 of the panel, 128 FMAs), or, in the backward, 4 x 4 where that keeps more
//             warp schedulers busy (tile_k_cost); rows past the tile are masked. Lanes to tiles (tile_item): a
//             quarter-warp holds 4 row groups x 2 column groups, so its A rows fall in distinct banks (4
//             wavefronts per LDS.128). The epilogue (bias, time bias, activation and its derivative, or the
//             backward's chain rule / gradient accumulation) runs on the registers, each lane's columns in a
//             rotated order (its scalar accesses in distinct banks).
//   energy:   one warp per chain, shuffle sum.
// Panels are padded to the MMA tile (16 columns: 100 -> 112, 200 -> 208; + 4 so that the 16 rows of a panel do
// not fall in the same banks); the tensor-core variants (bf16 m16n8k16, tf32 m16n8k8) stage the same rows at their
// own stride (tile_mma.h: mma_panel_ld, LEBM 200) in the same buffers.
#pragma once

#include "block_sampler.h"
#include "tile_mma.h"

namespace hebm {
namespace core {

constexpr int kTileTM = 4;           // chains per thread tile (3 x 8 on 30 chains keeps 250 of 256 threads busy,
                                     // but moves more bytes through shared memory, the binding resource:
                                     // docs/CUDA_KERNELS.md)
constexpr int kTileTN = 8;           // outputs per thread tile at most (8, or 4 where that balances better)
constexpr int kTileKC = 16;          // weight rows per staged panel (the k of one bf16 MMA)
constexpr int kTileMaxChains = 32;   // chains per block at most
constexpr int kTileThreads = 256;
static_assert(kTileKC == kMmaKC, "a panel is one bf16 k-step (tile_mma.h)");

// Chains per tile come in multiples of this: any number at fp32 (its GEMM masks the rows past the tile), the
// mma's 16 rows at tf32 / bf16.
HEBM_HD int tile_quantum(int precision) { return precision == kPrecisionFp32 ? 1 : kMmaM; }

HEBM_HD int tile_pad(int n, int m) { return (n + m - 1) / m * m; }

// Row stride of a panel: the widest layer side padded to the MMA tile (16), plus 4 against bank conflicts of
// the transposed staging stores.
HEBM_HD int tile_panel_ld(const ProgramDesc& p) { return tile_pad(p.max_width, 16) + 4; }

// Whether a net's backward chain writes two or more intermediate deltas (then it needs d1 besides d0).
inline bool tile_needs_d1(const ProgramDesc& p) {
  for (int i = 0; i < p.n_nets; ++i) {
    const NetDesc& n = p.nets[i];
    const int deltas = n.role == NET_HEAD ? n.n_lin - 2 : n.n_lin - 1;
    if (deltas >= 2) return true;
  }
  return false;
}

// The throughput path's shared-memory layout (elements of T): the walk's per-chain arrays that this program
// touches (-1 for the others: never read or written), then two weight panels.
inline BlockLayout throughput_layout(const ProgramDesc& p, int tile) {
  BlockLayout L;
  L.tile = tile;
  L.cluster = 1;
  int o = 0;
  auto take = [&](int n) {
    const int at = o;
    o += (n + 3) / 4 * 4;  // 16-byte (float) / 32-byte (double) aligned arrays, as block_layout
    return at;
  };
  const bool ladder = p.base == BASE_LADDER_Z || p.base == BASE_LADDER_U;
  const bool u = p.base == BASE_LADDER_U;
  L.y = take(tile * p.D);
  L.yc = take(tile * p.D);
  L.g = take(tile * p.D);
  L.z = u ? take(tile * p.D) : -1;
  L.gz = u ? take(tile * p.D) : -1;
  L.e = take(tile);
  L.trow = take(tile);
  L.noise = take(2 * tile * 4 * ((p.D + 3) / 4));  // Philox normals drawn a step ahead (block_step)
  L.d0 = take(tile * p.max_width);
  L.d1 = tile_needs_d1(p) ? take(tile * p.max_width) : -1;
  L.go = ladder ? take(tile * p.max_width) : -1;
  for (int j = 0; j < p.n_lin; ++j) {
    L.h[j] = take(tile * p.lin[j].out);
    L.dh[j] = take(tile * p.lin[j].out);
  }
  L.part = -1;
  for (int j = 0; j < p.n_lin; ++j) {
    L.w[j] = -1;
    L.ldw[j] = p.lin[j].in;
    L.rows[j] = p.lin[j].out;
  }
  // two fp32 panels at the fp32 GEMM's stride or the tensor-core GEMMs' (tile_mma.h: mma_panel_ld, 8 or 24 mod 32,
  // up to 4 floats a row wider when pad(max_width, 8) is a multiple of 16 that pad(max_width, 16) does not exceed)
  const int ld = tile_panel_ld(p) > mma_panel_ld(p.max_width) ? tile_panel_ld(p) : mma_panel_ld(p.max_width);
  L.ws = 2 * kTileKC * ld;
  L.stage = take(L.ws);
  L.total = o;
  return L;
}

// The most chains per block (at most kTileMaxChains, at most ceil(B / SMs) rounded up to the step: 4 chains for
// fp32, the mma's 16 rows for tf32 / bf16; below the step, fp32 tries 3, 2, 1: its GEMM masks the rows past the
// tile) whose layout fits `budget` bytes; 0 when not even tile_quantum(precision) chains fit.
inline int throughput_tile(const ProgramDesc& p, int64_t B, int sms, int64_t budget, int elem,
                           int precision = kPrecisionFp32) {
  const int q = tile_quantum(precision);
  const int step = q > kTileTM ? q : kTileTM;
  const int64_t per_sm = (B + sms - 1) / (sms > 0 ? sms : 1);
  int t = per_sm < kTileMaxChains ? tile_pad(int(per_sm), step) : kTileMaxChains;
  if (t > kTileMaxChains) t = kTileMaxChains;
  if (t < q) t = q;
  for (; t >= q; t = t > step ? (t - 1) / step * step : t - q)
    if (int64_t(throughput_layout(p, t).total) * elem <= budget) return t;
  return 0;
}

// E[r] += X[r] . w + b (a head's output row, from global memory): one warp per chain.
template <typename T, class Ctx>
HEBM_BLOCK_FN void warp_energy(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& Lo, const T* X, int ldx, T* E,
                               int chains) {
  const T* w = a.params + Lo.w;
  const T b = Lo.b >= 0 ? a.params[Lo.b] : T(0);
  for (int c = ctx.warp(); c < chains; c += ctx.nwarps()) {
    T s = T(0);
    for (int k = ctx.lane(); k < Lo.in; k += kWarp) s += ctx.sh(X + c * ldx + k) * w[k];
    s = warp_sum<T, Ctx>(ctx, s);
    if (ctx.lane() == 0) ctx.sh(E + c) += s + b;
  }
}

// A weight panel's staging: issue(P, ldp, k0, kc) starts it (cp.async copies of W's rows k0 .. k0 + kc, plain
// zero stores into the padding; one commit group per call) and returns with the copies in flight; every thread
// takes part, and cp.async.wait_group then a block barrier must follow before any thread reads the panel (both
// GEMMs: wait<0> + sync after the previous panel's compute). F: a callable f(P, ldp, k0, kc) that issues the
// copies and the zero stores; P is fp32 (T) for the fp32 and tf32 GEMMs, packed bf16 pair words (uint32_t, word
// rows k-pairs, kc still counted in k) for the bf16 GEMM.
template <class Ctx, class F>
struct PanelStage {
  const Ctx& ctx;
  F f;
  template <typename PT>
  HEBM_BLOCK_FN void issue(PT* P, int ldp, int k0, int kc) const {
    f(P, ldp, k0, kc);
    ctx.cp_async_commit();
  }
};
template <class Ctx, class F>
HEBM_BLOCK_FN PanelStage<Ctx, F> panel_stage(const Ctx& ctx, F f) {
  return PanelStage<Ctx, F>{ctx, f};
}

// f(row, unit) for the units idx = row * upr + unit of a panel's rows (upr units each) that this thread copies:
// idx = tid, tid + nthreads, ... below rows * upr, (row, unit) stepped without a division (du < upr: at most one
// wrap per step).
template <class Ctx, class F>
HEBM_BLOCK_FN void panel_units(const Ctx& ctx, int rows, int upr, F f) {
  const int dr = ctx.nthreads() / upr, du = ctx.nthreads() - dr * upr;
  int r = ctx.tid() / upr, u = ctx.tid() - r * upr;
  for (; r < rows; r += dr, u += du) {
    if (u >= upr) {
      u -= upr;
      if (++r >= rows) break;
    }
    f(r, u);
  }
}

// The issue-slot cost (x 4) of one k of an M x N GEMM in TM x tn thread tiles on nthreads threads: per pass over
// the items, the busiest warp scheduler's warps (warp w on scheduler w % 4) times a thread's instructions per k
// (TM tn FFMA, TM / 4 LDS.128 of A, tn / 4 of the panel). TileEngine::gemm takes the cheaper of tn = 8 and 4.
HEBM_HD int tile_k_cost(int M, int N, int tn, int nthreads) {
  const int mg = (M + kTileTM - 1) / kTileTM, items = mg * ((N + tn - 1) / tn);
  const int per_k = 4 * kTileTM * tn + kTileTM + tn;
  int cost = 0;
  for (int base = 0; base < items; base += nthreads) {
    const int n = (items - base) < nthreads ? (items - base) : nthreads;
    const int warps = (n + kWarp - 1) / kWarp;
    cost += (warps + 3) / 4 * per_k;
  }
  return cost;
}

// Thread tile `item` of mg row groups x ntn column groups -> (rg, cg): a bijection of [0, mg ntn), items in
// pairs of column groups (2 mg items; the last pair one column group when ntn is odd), inside a pair blocks of 4
// row groups x 2 column groups (8 items), then the last mg % 4 row groups x 2. With mg = 8 (a 32-chain tile of
// 4-row thread tiles) every quarter-warp of 8 lanes gets one block: 4 rows of A (rows r .. r + 3, in distinct
// banks at lda = 100 or 200, each word read by 2 lanes) and 2 column groups of the panel (distinct banks), so
// each LDS.128 is 4 wavefronts (one per quarter-warp phase); 8 consecutive row groups in a phase would put rows r
// and r + 4 in the same banks (8 wavefronts per A load at lda = 200). For mg <= 4 it is the plain order
// (row groups fastest). Which thread computes an output changes, not its sum over k.
HEBM_HD void tile_item(int item, int mg, int ntn, int& rg, int& cg) {
  const int p = item / (2 * mg), w = item - p * 2 * mg;
  const int width = 2 * p + 1 < ntn ? 2 : 1;  // column groups in this pair
  const int full = mg / 4 * 4 * width;        // items in its blocks of 4 row groups
  int cl;
  if (w < full) {
    rg = w / (4 * width) * 4 + w % 4;
    cl = w / 4 % width;
  } else {
    const int r = mg % 4, v = w - full;  // r > 0 here
    rg = mg - r + v % r;
    cl = v / r;
  }
  cg = 2 * p + cl;
}

// PREC (core::Precision): fp32 runs the register-tiled SIMT GEMM below; tf32 / bf16 the tensor-core GEMM of
// tile_mma.h with the same prefetch (PanelStage::issue, one barrier per panel) and epilogues (float32 chains,
// tiles a multiple of 16 chains); tf32 on the same fp32 panels, bf16 on packed bf16 pair panels staged from
// BlockArgs::bf16_pairs (half the bytes).
template <typename T, class Ctx, int PREC = kPrecisionFp32>
struct TileEngine : LocalEngine<T, Ctx> {
  HEBM_BLOCK_FN explicit TileEngine(Ctx&) {}

  // C = A P over the tile (M = tile chains, N columns, K reduction), P staged kTileKC rows at a time by a
  // PanelStage (stage.issue(P, ldp, k0, kc): every thread takes part; it zero-fills the columns
  // [N, pad(N, kTileTN)) and the rows [kc, kTileKC)), then epi(r, n, c) for every r < M, n < N. Thread tiles
  // TM x 8, or TM x 4 where tile_k_cost says they keep more schedulers busy (LEBM's 100-wide backward). Ends
  // without a barrier (the walk's follows); no copy is left in flight.
  // kNarrow = false: 4 x 8 tiles only (the forward: a choice there would double its 8 per-kind instantiations).
  template <bool kNarrow = true, class Stage, class Epi>
  HEBM_BLOCK_FN void gemm(Ctx& ctx, const BlockArgs<T>& a, T* smem, const T* A, int lda, int N, int K,
                          const Stage& stage, const Epi& epi) const {
    if constexpr (PREC == kPrecisionBf16) {
      gemm_mma<PREC>(ctx, a.lay.tile, reinterpret_cast<uint32_t*>(smem + a.lay.stage),
                     mma_panel_ld(a.prog.max_width), A, lda, N, K, stage, epi);
    } else if constexpr (PREC != kPrecisionFp32) {
      gemm_mma<PREC>(ctx, a.lay.tile, smem + a.lay.stage, mma_panel_ld(a.prog.max_width), A, lda, N, K, stage, epi);
    } else {
      if constexpr (kNarrow) {
        const int M = a.lay.tile;
        if (tile_k_cost(M, N, 4, ctx.nthreads()) < tile_k_cost(M, N, 8, ctx.nthreads())) {
          gemm_tn<4>(ctx, a, smem, A, lda, N, K, stage, epi);
          return;
        }
      }
      gemm_tn<8>(ctx, a, smem, A, lda, N, K, stage, epi);
    }
  }

  template <int TN, class Stage, class Epi>
  HEBM_BLOCK_FN void gemm_tn(Ctx& ctx, const BlockArgs<T>& a, T* smem, const T* A, int lda, int N, int K,
                             const Stage& stage, const Epi& epi) const {
    constexpr int TM = kTileTM;
    const int M = a.lay.tile;
    const int mg = (M + TM - 1) / TM;  // row groups: row group g owns rows g, g + mg, ..., g + (TM-1) mg (< M)
    const int ldp = tile_panel_ld(a.prog);
    T* const panels = smem + a.lay.stage;
    const int ntn = (N + TN - 1) / TN, items = mg * ntn;
    const int nchunks = (K + kTileKC - 1) / kTileKC;
    auto kc_of = [&](int c) { return (K - c * kTileKC) < kTileKC ? (K - c * kTileKC) : kTileKC; };
    // A's rows start 16-byte aligned (the walk's arrays; a head's slice when its offset and D are multiples of 4)
    const bool avec = lda % 4 == 0 && ((A - smem) % 4) == 0;
    for (int base = 0; base < items; base += ctx.nthreads()) {
      const int item = base + ctx.tid();
      const bool active = item < items;
      // a quarter-warp: 4 row groups x 2 column groups (tile_item: the A rows' banks distinct, the panel loads
      // 2 addresses per phase)
      int rg = 0, cg = 0;
      if (active) tile_item(item, mg, ntn, rg, cg);
      const int n0 = cg * TN;
      int roff[TM];  // A's row offsets; a row past the tile (M not a multiple of TM) reads row M - 1, unused
      HEBM_UNROLL
      for (int m = 0; m < TM; ++m) roff[m] = ((rg + m * mg) < M ? (rg + m * mg) : (M - 1)) * lda;
      T acc[TM][TN];
      HEBM_UNROLL
      for (int m = 0; m < TM; ++m) {
        HEBM_UNROLL
        for (int n = 0; n < TN; ++n) acc[m][n] = T(0);
      }
      // Step c issues panel c + 1's copies, then computes panel c (step -1 computes nothing): the copies' L2
      // latency hides behind the compute. They go to the other buffer, whose last reads (panel c - 1) ended
      // before the barrier that closed step c - 1. After the compute: wait for this thread's copies, one barrier
      // (every thread's panel c + 1 visible, every read of panel c done before step c + 1 refills its buffer).
      // One call site of the staging and of the compute: the body is instantiated 10 times (8 forward kinds,
      // 2 backward tiles).
      for (int c = -1; c < nchunks; ++c) {
        const T* const P = panels + (c & 1) * kTileKC * ldp;
        const int k0 = c * kTileKC, kc = kc_of(c);
        if (c + 1 < nchunks) stage.issue(panels + ((c + 1) & 1) * kTileKC * ldp, ldp, k0 + kTileKC, kc_of(c + 1));
        if (active && c >= 0) {
          const T* Ar = A + k0;
          auto rank1 = [&](int kk, const T* x) {  // acc += x (TM) outer P[kk][n0 .. n0 + TN)
            T w[TN];
            HEBM_UNROLL
            for (int q = 0; q < TN / 4; ++q) {
              const Vec4<T> v = ctx.ld4(P + kk * ldp + n0 + 4 * q);
              w[4 * q] = v.x;
              w[4 * q + 1] = v.y;
              w[4 * q + 2] = v.z;
              w[4 * q + 3] = v.w;
            }
            HEBM_UNROLL
            for (int m = 0; m < TM; ++m) {
              HEBM_UNROLL
              for (int n = 0; n < TN; ++n) acc[m][n] += x[m] * w[n];
            }
          };
          int kk = 0;
          if (avec) {
            for (; kk + 4 <= kc; kk += 4) {  // A four k at a time (16-byte loads)
              T xv[4][TM];
              HEBM_UNROLL
              for (int m = 0; m < TM; ++m) {
                const Vec4<T> v = ctx.ld4(Ar + roff[m] + kk);
                xv[0][m] = v.x;
                xv[1][m] = v.y;
                xv[2][m] = v.z;
                xv[3][m] = v.w;
              }
              HEBM_UNROLL
              for (int q = 0; q < 4; ++q) rank1(kk + q, xv[q]);
            }
          }
          for (; kk < kc; ++kk) {
            T x[TM];
            HEBM_UNROLL
            for (int m = 0; m < TM; ++m) x[m] = ctx.sh(Ar + roff[m] + kk);
            rank1(kk, x);
          }
        }
        if (c + 1 < nchunks) {
          ctx.template cp_async_wait<0>();
          ctx.sync();
        }
      }
      if (active) {
        // The epilogue's accesses are scalar: in the same column n of every lane's tile, rows 8 banks apart (LEBM's
        // 200-wide arrays) and column groups of 8 would fall in 4 banks (8 wavefronts per store). Lane rotation:
        // a thread visits its columns from s = rg mod TN on (acc rotated left by s: log2 TN selects per register),
        // so the 8 row groups of a warp reach 8 different columns (1 wavefront per store at ld = 200).
        static_assert((TN & (TN - 1)) == 0, "TN a power of two (the rotation)");
        const int s = rg & (TN - 1);
        HEBM_UNROLL
        for (int b = 1; b < TN; b *= 2) {
          const bool on = (s & b) != 0;
          HEBM_UNROLL
          for (int m = 0; m < TM; ++m) {
            T t[TN];
            HEBM_UNROLL
            for (int n = 0; n < TN; ++n) t[n] = on ? acc[m][(n + b) % TN] : acc[m][n];
            HEBM_UNROLL
            for (int n = 0; n < TN; ++n) acc[m][n] = t[n];
          }
        }
        HEBM_UNROLL
        for (int m = 0; m < TM; ++m) {
          HEBM_UNROLL
          for (int n = 0; n < TN; ++n) {
            const int j = n0 + ((n + s) & (TN - 1));  // acc[m][n] is column j's sum now
            if (rg + m * mg < M && j < N) epi(rg + m * mg, j, acc[m][n]);
          }
        }
      }
      // the next pass restages panel 0 into buffer 0, which laggards may still read (the last panel, c even)
      if (base + ctx.nthreads() < items) ctx.sync();
    }
  }

  // H[r][j] = act(X[r] . W[j] + b[j] (+ tb[t_r][j])); DH = act' (* dyw[j] when given); H null: not stored
  // (block_head: an untraced head's last hidden layer). Panel k-rows: P[kk][o] = W[o][k0 + kk]. One instantiation
  // per activation kind (the epilogue runs on the registers).
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope, int act, const T* dyw = nullptr) const {
    HEBM_DISPATCH_ACT(act, A, (forward_k<A>(ctx, a, smem, jl, X, ldx, H, DH, trow, slope, dyw)));
  }

  template <int ACT>
  HEBM_BLOCK_FN void forward_k(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                               const int* trow, T slope, const T* dyw) const {
    const LinearDesc& L = a.prog.lin[jl];
    const T* W = a.params + L.w;
    auto epi = [&](int r, int j, T acc) {
      T y, dy;
      linear_act<ACT, T, Ctx>(ctx, a, L, j, r, acc, trow, slope, dyw, y, dy);
      if (H) ctx.sh(H + r * L.out + j) = y;
      ctx.sh(DH + r * L.out + j) = dy;
    };
    if constexpr (PREC == kPrecisionBf16) {
      // word copies (the transpose, P[q][o] = pair q of W's row o): q fastest, so a warp reads one 32-byte L2
      // sector (kMmaKP consecutive words) of each of four rows
      const int np = tile_pad(L.out, kTileTN), hinp = bf16_pair_fwd_ld(L);
      const uint32_t* Wp = a.bf16_pairs + bf16_pair_offset(a.prog, jl);
      const auto stage = panel_stage(ctx, [&](uint32_t* P, int ldw, int k0, int kc) {
        const int q = ctx.tid() % kMmaKP, os = ctx.nthreads() / kMmaKP;
        uint32_t* d = P + q * ldw;
        const uint32_t* src = Wp + k0 / 2 + q;
        for (int o = ctx.tid() / kMmaKP; o < np; o += os) {
          if (o < L.out && 2 * q < kc)
            ctx.cp_async_elem(d + o, src + (int64_t)o * hinp);
          else
            ctx.sh(d + o) = 0u;
        }
      });
      gemm<false>(ctx, a, smem, X, ldx, L.out, L.in, stage, epi);
    } else {
      const int np = tile_pad(L.out, kTileTN);
      const auto stage = panel_stage(ctx, [&](T* P, int ldp, int k0, int kc) {
        // element copies (the transpose), units idx = tid, tid + nthreads, ... of the kTileKC x np panel: kk = bits
        // 0-2 and 5 of idx, o = bits 3-4 and 6 on, so a warp copies 8 k-rows x 4 outputs: it reads runs of 8
        // consecutive weights of 4 rows (L2 sectors used whole) and its shared writes are conflict-free at the
        // fp32 GEMM's stride (tile_panel_ld, 212 = 20 mod 32: 8 k-rows in 8 groups of 4 banks), 2-way at the
        // tf32 GEMM's (mma_panel_ld, 200 = 8 mod 32); 16 k-rows x 2 outputs would be 2-way and 4-way. (kk, o)
        // step with idx without a division: a multiple of 64 threads keeps kk, 32 more flip its bit 3.
        const int nt = ctx.nthreads(), tid = ctx.tid(), os = nt >> 6 << 2;
        const bool flip = (nt & 32) != 0;
        int kk = (tid & 7) | ((tid >> 2) & 8);
        for (int o = ((tid >> 3) & 3) | (tid >> 6 << 2); o < np; o += os) {
          if (o < L.out && kk < kc)
            ctx.cp_async_elem(P + kk * ldp + o, W + (int64_t)o * L.in + k0 + kk);
          else
            ctx.sh(P + kk * ldp + o) = T(0);
          if (flip) {
            if (kk & 8) o += 4;  // idx's bit 5 carries into o
            kk ^= 8;
          }
        }
      });
      gemm<false>(ctx, a, smem, X, ldx, L.out, L.in, stage, epi);  // 4 x 8 tiles (see gemm)
    }
  }

  // With d_o = DIN[r][o]: DOUT[r][i] = (sum_o d_o W[o][i]) * (DHprev ? DHprev[r][i] : 1),
  // or, when G is given, G[r][goff + i] += (alpha ? -alpha_r : 1) * sum_o d_o W[o][i]. Panel rows: W's rows.
  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const T* W = a.params + L.w;
    auto epi = [&](int r, int i, T acc) {
      if (G)
        ctx.sh(G + r * ldg + goff + i) += (alpha_rows ? neg_alpha<T, Ctx>(ctx, a, alpha_rows, r) : T(1)) * acc;
      else
        ctx.sh(DOUT + r * L.in + i) = DHprev ? acc * ctx.sh(DHprev + r * L.in + i) : acc;
    };
    const int np = tile_pad(L.in, kTileTN);
    if constexpr (PREC == kPrecisionBf16) {
      // word row q of the panel = word row k0 / 2 + q of the backward block (W's rows k0 + 2q, k0 + 2q + 1 paired):
      // 16-byte copies (4 words) when a row is a multiple of 4 words (the block starts 16-byte aligned), else
      // word copies (panel_units)
      const uint32_t* Wp = a.bf16_pairs + bf16_pair_offset(a.prog, jl) + bf16_pair_fwd_words(L);
      const bool vec = L.in % 4 == 0;
      const int upr = np / 4;
      const auto stage = panel_stage(ctx, [&](uint32_t* P, int ldw, int k0, int kc) {
        panel_units(ctx, kMmaKP, upr, [&](int q, int u) {
          const int i = u * 4;
          uint32_t* d = P + q * ldw + i;
          const uint32_t* src = Wp + (int64_t)(k0 / 2 + q) * L.in + i;
          if (vec && 2 * q < kc && i < L.in) {
            ctx.cp_async16(d, src);
          } else {
            HEBM_UNROLL
            for (int e = 0; e < 4; ++e) {
              if (2 * q < kc && i + e < L.in)
                ctx.cp_async_elem(d + e, src + e);
              else
                ctx.sh(d + e) = 0u;
            }
          }
        });
      });
      gemm(ctx, a, smem, DIN, L.out, L.in, L.out, stage, epi);
    } else {
      // The panel's rows are W's rows k0 .. k0 + kc: 16-byte copies (V elements) when every row is 16-byte aligned
      // in global memory (the packed program puts weights at multiples of 4 elements), else element copies.
      constexpr int V = 16 / int(sizeof(T));
      const bool vec = reinterpret_cast<uintptr_t>(W) % 16 == 0 && L.in % V == 0;
      const int upr = np / V;  // units of V elements per panel row (np is a multiple of 8)
      const auto stage = panel_stage(ctx, [&](T* P, int ldp, int k0, int kc) {
        panel_units(ctx, kTileKC, upr, [&](int kk, int u) {
          const int i = u * V;
          T* d = P + kk * ldp + i;
          const T* src = W + (int64_t)(k0 + kk) * L.in + i;
          if (vec && kk < kc && i < L.in) {
            ctx.cp_async16(d, src);
          } else {
            HEBM_UNROLL
            for (int q = 0; q < V; ++q) {
              if (kk < kc && i + q < L.in)
                ctx.cp_async_elem(d + q, src + q);
              else
                ctx.sh(d + q) = T(0);
            }
          }
        });
      });
      gemm(ctx, a, smem, DIN, L.out, L.in, L.out, stage, epi);
    }
  }

  HEBM_BLOCK_FN void energy(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& Lo, const T* X, int ldx, T* E) const {
    warp_energy<T, Ctx>(ctx, a, Lo, X, ldx, E, a.lay.tile);
  }
};

// A persistent block: tiles first, first + stride, ... of the B chains, each through the whole program.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void throughput_program(Ctx& ctx, const BlockArgs<T>& a, T* smem, int64_t first, int64_t stride) {
  const int64_t tiles = (a.B + a.lay.tile - 1) / a.lay.tile;
  for (int64_t t = first; t < tiles; t += stride) {
    block_program<T, Ctx, Eng>(ctx, a, smem, t);
    ctx.sync();  // the next tile zeroes the shared memory this one's last loop read
  }
}

}  // namespace core
}  // namespace hebm
