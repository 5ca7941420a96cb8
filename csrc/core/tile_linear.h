// The throughput path of the CUDA latent sampler (large B): persistent blocks, each running tiles of up to
// kTileMaxChains chains one after another through the program walk (block_sampler.h), the linear layers as
// register-tiled SIMT GEMMs (TileEngine below). docs/CUDA_KERNELS.md has the design's arithmetic.
//   layout:   throughput_layout keeps only the per-chain arrays the program uses (no z / gz without the
//             u-ladder, no go without a ladder, d1 only for a backward chain of 2+ hidden deltas): LEBM
//             100-200-200-1 needs 1,504 floats per chain (200 of them the noise drawn a step ahead) instead of
//             block_layout's ~2,100, so 32 chains and the
//             weight panels fit in 227 KB.
//   GEMM:     C[r][n] = sum_k A[r][k] P[k][n] over the tile's M chains: A is a shared-memory array of the walk
//             (the layer's inputs forward, its output deltas backward), P a panel of kTileKC weight rows staged
//             from global memory (L2) into one of two shared buffers (double-buffered: one barrier per panel).
//             Forward P[k][o] = W[o][k] (the layer transposed), backward P[o][i] = W[o][i] (the layer itself;
//             a head's dh * w_out is formed by the forward's epilogue): the same staged rows, the transposed operand.
//             Every thread owns a kTileTM x kTileTN tile of C in registers (4 chains x 8 outputs: 32
//             accumulators; per 4 k: 4 16-byte loads of A, 8 of the panel, 128 FMAs); the epilogue (bias, time
//             bias, activation and its derivative, or the backward's chain rule / gradient accumulation) runs on
//             the registers.
//   energy:   one warp per chain, shuffle sum.
// Panels are padded to the MMA tile (16 columns: 100 -> 112, 200 -> 208; + 4 so that the 16 rows of a panel do
// not fall in the same banks); the tensor-core variants (bf16 m16n8k16, tf32 m16n8k8) read the same panels.
#pragma once

#include "block_sampler.h"
#include "tile_mma.h"

namespace hebm {
namespace core {

constexpr int kTileTM = 4;           // chains per thread tile
constexpr int kTileTN = 8;           // outputs per thread tile
constexpr int kTileKC = 16;          // weight rows per staged panel (the k of one bf16 MMA)
constexpr int kTileMaxChains = 32;   // chains per block at most
constexpr int kTileThreads = 256;
static_assert(kTileKC == kMmaKC, "a panel is one bf16 k-step (tile_mma.h)");

// Chains per tile come in multiples of this: the fp32 thread tiles' kTileTM, the mma's 16 rows at tf32 / bf16.
HEBM_HD int tile_quantum(int precision) { return precision == kPrecisionFp32 ? kTileTM : kMmaM; }

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
  L.ws = 2 * kTileKC * tile_panel_ld(p);
  L.stage = take(L.ws);
  L.total = o;
  return L;
}

// The most chains per block (a multiple of tile_quantum(precision), at most kTileMaxChains, at most what spreads
// B over every SM) whose layout fits `budget` bytes; 0 when not even one quantum of chains fits.
inline int throughput_tile(const ProgramDesc& p, int64_t B, int sms, int64_t budget, int elem,
                           int precision = kPrecisionFp32) {
  const int q = tile_quantum(precision);
  const int64_t per_sm = (B + sms - 1) / (sms > 0 ? sms : 1);
  int t = per_sm < kTileMaxChains ? tile_pad(int(per_sm), q) : kTileMaxChains;
  if (t < q) t = q;
  for (; t >= q; t -= q)
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

// PREC (core::Precision): fp32 runs the register-tiled SIMT GEMM below; tf32 / bf16 the tensor-core GEMM of
// tile_mma.h on the same panels and epilogues (float32 chains, tiles a multiple of 16 chains).
template <typename T, class Ctx, int PREC = kPrecisionFp32>
struct TileEngine : LocalEngine<T, Ctx> {
  HEBM_BLOCK_FN explicit TileEngine(Ctx&) {}

  // C = A P over the tile (M = tile chains, N columns, K reduction), P staged kTileKC rows at a time by
  // stage(P, ldp, k0, kc) (every thread takes part; it zero-fills the columns [N, pad(N, kTileTN))), then
  // epi(r, n, c) for every r < M, n < N. Ends without a barrier (the walk's follows).
  template <class Stage, class Epi>
  HEBM_BLOCK_FN void gemm(Ctx& ctx, const BlockArgs<T>& a, T* smem, const T* A, int lda, int N, int K,
                          const Stage& stage, const Epi& epi) const {
    if constexpr (PREC != kPrecisionFp32) {
      gemm_mma<PREC>(ctx, a.lay.tile, smem + a.lay.stage, tile_panel_ld(a.prog), A, lda, N, K, stage, epi);
      return;
    }
    constexpr int TM = kTileTM, TN = kTileTN;
    const int M = a.lay.tile;  // a multiple of TM (throughput_tile)
    const int mg = M / TM;     // row groups: the thread with row group g owns rows g, g + mg, ..., g + (TM-1) mg
    const int ldp = tile_panel_ld(a.prog);
    T* const panels = smem + a.lay.stage;
    const int ntn = (N + TN - 1) / TN, items = mg * ntn;
    const int nchunks = (K + kTileKC - 1) / kTileKC;
    // A's rows start 16-byte aligned (the walk's arrays; a head's slice when its offset and D are multiples of 4)
    const bool avec = lda % 4 == 0 && ((A - smem) % 4) == 0;
    for (int base = 0; base < items; base += ctx.nthreads()) {
      const int item = base + ctx.tid();
      const bool active = item < items;
      // row groups fastest: a warp's lanes share a few column groups (the panel loads are broadcasts, 1
      // wavefront) and read consecutive rows of A (conflict-free but for rows lda apart in the same banks)
      const int rg = active ? item % mg : 0;
      const int n0 = active ? (item / mg) * TN : 0;
      T acc[TM][TN];
      HEBM_UNROLL
      for (int m = 0; m < TM; ++m) {
        HEBM_UNROLL
        for (int n = 0; n < TN; ++n) acc[m][n] = T(0);
      }
      for (int c = 0; c < nchunks; ++c) {
        // double buffer: panel c is written while laggards may still read panel c - 1 (the other buffer); the
        // barrier after staging c also orders every read of panel c - 2 (this buffer) before the next write
        T* const P = panels + (c & 1) * kTileKC * ldp;
        const int k0 = c * kTileKC;
        const int kc = (K - k0) < kTileKC ? (K - k0) : kTileKC;
        stage(P, ldp, k0, kc);
        ctx.sync();
        if (!active) continue;
        const T* Ar = A + rg * lda + k0;
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
              const Vec4<T> v = ctx.ld4(Ar + m * mg * lda + kk);
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
          for (int m = 0; m < TM; ++m) x[m] = ctx.sh(Ar + m * mg * lda + kk);
          rank1(kk, x);
        }
      }
      if (active) {
        HEBM_UNROLL
        for (int m = 0; m < TM; ++m) {
          HEBM_UNROLL
          for (int n = 0; n < TN; ++n)
            if (n0 + n < N) epi(rg + m * mg, n0 + n, acc[m][n]);
        }
      }
      if (base + ctx.nthreads() < items) ctx.sync();  // the next pass restages panel 0
    }
  }

  // H[r][j] = act(X[r] . W[j] + b[j] (+ tb[t_r][j])); DH = act' (* dyw[j] when given). Panel k-rows:
  // P[kk][o] = W[o][k0 + kk]. One instantiation per activation kind (the epilogue runs on the registers).
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope, int act, const T* dyw = nullptr) const {
    HEBM_DISPATCH_ACT(act, A, (forward_k<A>(ctx, a, smem, jl, X, ldx, H, DH, trow, slope, dyw)));
  }

  template <int ACT>
  HEBM_BLOCK_FN void forward_k(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                               const int* trow, T slope, const T* dyw) const {
    const LinearDesc& L = a.prog.lin[jl];
    const T* W = a.params + L.w;
    const int np = tile_pad(L.out, kTileTN);
    auto stage = [&](T* P, int ldp, int k0, int kc) {
      // kk fastest: a warp reads runs of kTileKC consecutive weights of a row (L2 sectors used whole)
      for (int idx = ctx.tid(); idx < kTileKC * np; idx += ctx.nthreads()) {
        const int o = idx / kTileKC, kk = idx - o * kTileKC;
        ctx.sh(P + kk * ldp + o) = (o < L.out && kk < kc) ? W[(int64_t)o * L.in + k0 + kk] : T(0);
      }
    };
    auto epi = [&](int r, int j, T acc) {
      T v = acc + (L.b >= 0 ? a.params[L.b + j] : T(0));
      if (L.tb >= 0) v += a.params[L.tb + (int64_t)ctx.sh(trow + r) * L.out + j];
      T y, dy;
      act_value_grad<ACT, T>(v, slope, y, dy);
      if (dyw) dy *= dyw[j];
      ctx.sh(H + r * L.out + j) = y;
      ctx.sh(DH + r * L.out + j) = dy;
    };
    gemm(ctx, a, smem, X, ldx, L.out, L.in, stage, epi);
  }

  // With d_o = DIN[r][o]: DOUT[r][i] = (sum_o d_o W[o][i]) * (DHprev ? DHprev[r][i] : 1),
  // or, when G is given, G[r][goff + i] += (alpha ? -alpha_r : 1) * sum_o d_o W[o][i]. Panel rows: W's rows.
  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const T* W = a.params + L.w;
    const int np = tile_pad(L.in, kTileTN);
    auto stage = [&](T* P, int ldp, int k0, int kc) {
      for (int idx = ctx.tid(); idx < kTileKC * np; idx += ctx.nthreads()) {
        const int kk = idx / np, i = idx - kk * np;
        const int o = k0 + kk;
        ctx.sh(P + kk * ldp + i) =
            (i < L.in && kk < kc) ? W[(int64_t)o * L.in + i] : T(0);
      }
    };
    auto epi = [&](int r, int i, T acc) {
      if (G)
        ctx.sh(G + r * ldg + goff + i) += (alpha_rows ? neg_alpha<T, Ctx>(ctx, a, alpha_rows, r) : T(1)) * acc;
      else
        ctx.sh(DOUT + r * L.in + i) = DHprev ? acc * ctx.sh(DHprev + r * L.in + i) : acc;
    };
    gemm(ctx, a, smem, DIN, L.out, L.in, L.out, stage, epi);
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
