// v2 linear layers of the block program (block_sampler.h): weights resident in shared memory, warp-level
// arithmetic. C chains per block (1-4, a template parameter: per-chain values stay in registers), CS blocks per
// cluster (1, or 2: block rank r holds rows [r * rows, (r + 1) * rows) of every layer and the chains' state is
// replicated in both blocks).
//   forward:  warps own output rows, R at a time (4 for 1-2 chains, 2 for 3-4); lane l owns inputs
//             k = 128 m + 4 l + q (q < 4), so a row is read with 16-byte vector loads; the lane's inputs of every
//             chain are held in registers for all rows of the layer (inputs <= 256; wider layers reload them per
//             row batch); the R x C butterfly shuffle sums run interleaved; lane c finishes chain c (bias, time
//             bias, activation) and writes the row to every block of the cluster.
//   backward: lanes own input columns i = 32 cg + l, warps own column groups, every warp runs over the rows this
//             block holds (the same row-major tile: consecutive lanes read consecutive words, no bank conflict);
//             on a cluster each block's partial sums over its rows are exchanged through distributed shared memory.
//   energy:   warp c reduces chain c's output row (a head's energy) by a shuffle sum.
#pragma once

#include "block_sampler.h"

namespace hebm {
namespace core {

constexpr int kWarpMaxChains = 4;
constexpr int kWarpInputsInRegs = 256;  // inputs per lane pass: 2 x 128 (32 lanes x float4)

template <typename T, class Ctx, int C, int CS>
struct WarpEngine {
  static_assert(C >= 1 && C <= kWarpMaxChains, "1-4 chains per block");
  static_assert(CS == 1 || CS == 2, "clusters of 1 or 2 blocks");
  int rank;
  mutable int parity = 0;  // which partial-sum buffer the next cluster backward uses

  HEBM_BLOCK_FN explicit WarpEngine(Ctx& ctx) : rank(CS > 1 ? ctx.cluster_rank() : 0) {}
  HEBM_BLOCK_FN bool leader() const { return rank == 0; }
  HEBM_BLOCK_FN void sync(Ctx& ctx) const {
    if (CS > 1)
      ctx.cluster_sync();
    else
      ctx.sync();
  }

  // This block's rows of every resident linear, zero-padded to the row stride (once per launch).
  HEBM_BLOCK_FN void load(Ctx& ctx, const BlockArgs<T>& a, T* smem) const {
    for (int j = 0; j < a.prog.n_lin; ++j) {
      if (a.lay.w[j] < 0) continue;
      const LinearDesc& L = a.prog.lin[j];
      const int r0 = rank * a.lay.rows[j];
      const int n = (L.out - r0) < a.lay.rows[j] ? (L.out - r0) : a.lay.rows[j];
      const int ld = a.lay.ldw[j];
      const T* W = a.params + L.w + (int64_t)r0 * L.in;
      for (int idx = ctx.tid(); idx < n * ld; idx += ctx.nthreads()) {
        const int rr = idx / ld, k = idx - rr * ld;
        ctx.sh(smem + a.lay.w[j] + idx) = k < L.in ? W[(int64_t)rr * L.in + k] : T(0);
      }
    }
  }

  // The output rows [r0, r1) of linear jl whose weights this block holds (all of them on one block; its half on a
  // cluster rank).
  HEBM_BLOCK_FN void own_rows(const BlockArgs<T>& a, int jl, int& r0, int& r1) const {
    const int rows = a.lay.rows[jl], out = a.prog.lin[jl].out;
    r0 = rank * rows;
    r1 = (out - r0) < rows ? out : r0 + rows;
  }

  template <int A>
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope) const {
    int r0, r1;
    own_rows(a, jl, r0, r1);
    T* Hp = CS > 1 ? ctx.map_rank(H, rank ^ 1) : H;
    T* DHp = CS > 1 ? ctx.map_rank(DH, rank ^ 1) : DH;
    forward_rows<A>(ctx, a, smem, jl, smem + a.lay.w[jl], r0, r1 - r0, X, ldx, H, DH, Hp, DHp, trow, slope);
  }

  // The forward core: output rows [r0, r0 + nrows) of linear jl, row r0 + jr of the weights at Ws + jr * ldw in
  // shared memory (the resident tile, or a streamed chunk: streamed_linear.h); H[c][j] = act(X[c] . W[j] + b[j]
  // (+ tb[t_c][j])), DH = act', written also to Hp / DHp (the cluster peer's copies; = H / DH on one block).
  template <int A>
  HEBM_BLOCK_FN void forward_rows(Ctx& ctx, const BlockArgs<T>& a, const T* smem, int jl, const T* Ws, int r0,
                                  int nrows, const T* X, int ldx, T* H, T* DH, T* Hp, T* DHp, const int* trow,
                                  T slope) const {
    const LinearDesc& L = a.prog.lin[jl];
    // the inputs' rows start 16-byte aligned (hidden layers; a head's slice when its offset and D are multiples of 4)
    const bool xvec = ((X - smem) % 4) == 0 && ldx % 4 == 0;
    const int ldw = a.lay.ldw[jl];
    const int lane = ctx.lane();
    const int npass = (L.in + kWarpInputsInRegs - 1) / kWarpInputsInRegs;
    T xr[C][2][4];
    // This warp's rows r0 + warp + nwarps * i, R at a time: R x C independent dot products, their loads and
    // their shuffle sums in flight together.
    constexpr int R = C <= 2 ? 4 : 2;
    const int nw = ctx.nwarps(), w0 = ctx.warp();
    for (int i0 = 0; w0 + nw * i0 < nrows; i0 += R) {
      T acc[R * C];
      HEBM_UNROLL
      for (int t = 0; t < R * C; ++t) acc[t] = T(0);
      for (int pass = 0; pass < npass; ++pass) {
        if (npass > 1 || i0 == 0) {
          HEBM_UNROLL
          for (int m = 0; m < 2; ++m) {
            const int k0 = pass * kWarpInputsInRegs + m * 128 + 4 * lane;
            HEBM_UNROLL
            for (int c = 0; c < C; ++c) {
              if (xvec && k0 + 4 <= L.in) {  // one 16-byte load: scalar loads at stride 4 would conflict 4-way
                const Vec4<T> v = ctx.ld4(X + c * ldx + k0);
                xr[c][m][0] = v.x;
                xr[c][m][1] = v.y;
                xr[c][m][2] = v.z;
                xr[c][m][3] = v.w;
              } else {
                HEBM_UNROLL
                for (int q = 0; q < 4; ++q) xr[c][m][q] = k0 + q < L.in ? ctx.sh(X + c * ldx + k0 + q) : T(0);
              }
            }
          }
        }
        HEBM_UNROLL
        for (int m = 0; m < 2; ++m) {
          const int k0 = pass * kWarpInputsInRegs + m * 128 + 4 * lane;
          if (k0 < L.in) {
            HEBM_UNROLL
            for (int t = 0; t < R; ++t) {
              const int jr = w0 + nw * (i0 + t);
              if (jr < nrows) {
                const Vec4<T> w = ctx.ld4(Ws + jr * ldw + k0);
                HEBM_UNROLL
                for (int c = 0; c < C; ++c)
                  acc[t * C + c] +=
                      w.x * xr[c][m][0] + w.y * xr[c][m][1] + w.z * xr[c][m][2] + w.w * xr[c][m][3];
              }
            }
          }
        }
      }
      warp_sum_n<T, R * C, Ctx>(ctx, acc);
      HEBM_UNROLL
      for (int t = 0; t < R; ++t) {
        const int jr = w0 + nw * (i0 + t);
        if (jr >= nrows) break;  // warp-uniform
        const int j = r0 + jr;
        const T bias = L.b >= 0 ? a.params[L.b + j] : T(0);
        HEBM_UNROLL
        for (int c = 0; c < C; ++c) {
          if (lane == c) {  // lane c finishes chain c
            T v = acc[t * C + c] + bias;
            if (L.tb >= 0) v += a.params[L.tb + (int64_t)ctx.sh(trow + c) * L.out + j];
            T y, dy;
            act_value_grad<A, T>(v, slope, y, dy);
            ctx.sh(H + c * L.out + j) = y;
            ctx.sh(DH + c * L.out + j) = dy;
            if (CS > 1) {
              ctx.sh(Hp + c * L.out + j) = y;
              ctx.sh(DHp + c * L.out + j) = dy;
            }
          }
        }
      }
    }
  }

  HEBM_BLOCK_FN void finish(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& L, int c, int i, T v, T* DOUT,
                            const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    if (G) {
      ctx.sh(G + c * ldg + goff + i) += (alpha_rows ? neg_alpha<T, Ctx>(ctx, a, alpha_rows, c) : T(1)) * v;
    } else {
      ctx.sh(DOUT + c * L.in + i) = DHprev ? v * ctx.sh(DHprev + c * L.in + i) : v;
    }
  }

  // The backward core, one input column i of linear L (lane-owned): acc[c] += sum over the rows o in [o0, o1) of
  // DIN[c][o] * (dinw ? dinw[o] : 1) * W[o][i], row o of the weights at Ws + (o - o0) * ldw in shared memory.
  HEBM_BLOCK_FN void backward_column(Ctx& ctx, const LinearDesc& L, const T* Ws, int ldw, int o0, int o1,
                                     const T* DIN, const T* dinw, int i, bool ok, T* acc) const {
    for (int o = o0; o < o1; ++o) {
      const T w = ok ? ctx.sh(Ws + (o - o0) * ldw + i) : T(0);
      const T s = dinw ? dinw[o] * w : w;
      HEBM_UNROLL
      for (int c = 0; c < C; ++c) acc[c] += ctx.sh(DIN + c * L.out + o) * s;
    }
  }

  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, const T* dinw, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl];
    int r0, r1;
    own_rows(a, jl, r0, r1);
    const T* Ws = smem + a.lay.w[jl];
    const int lane = ctx.lane();
    const int ncg = (L.in + kWarp - 1) / kWarp;
    T* part = CS > 1 ? smem + a.lay.part + parity * a.lay.tile * a.prog.max_width : nullptr;
    for (int cg = ctx.warp(); cg < ncg; cg += ctx.nwarps()) {
      const int i = cg * kWarp + lane;
      const bool ok = i < L.in;
      T acc[C];
      HEBM_UNROLL
      for (int c = 0; c < C; ++c) acc[c] = T(0);
      backward_column(ctx, L, Ws, ldw, r0, r1, DIN, dinw, i, ok, acc);
      if (!ok) continue;
      HEBM_UNROLL
      for (int c = 0; c < C; ++c) {
        if (CS > 1)
          ctx.sh(part + c * L.in + i) = acc[c];
        else
          finish(ctx, a, L, c, i, acc[c], DOUT, DHprev, G, ldg, goff, alpha_rows);
      }
    }
    if (CS > 1) {
      // Both blocks add the two partial sums in rank order, so their copies stay bit-identical. The buffers
      // alternate: a block that runs ahead into the next backward cannot overwrite what its peer still reads.
      ctx.cluster_sync();
      const T* p0 = ctx.map_rank(static_cast<const T*>(part), 0);
      const T* p1 = ctx.map_rank(static_cast<const T*>(part), 1);
      for (int idx = ctx.tid(); idx < C * L.in; idx += ctx.nthreads()) {
        const int c = idx / L.in, i = idx - c * L.in;
        finish(ctx, a, L, c, i, ctx.sh(p0 + idx) + ctx.sh(p1 + idx), DOUT, DHprev, G, ldg, goff, alpha_rows);
      }
      parity ^= 1;
    }
  }

  HEBM_BLOCK_FN void energy(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& Lo, const T* X, int ldx, T* E) const {
    const T* w = a.params + Lo.w;
    const T b = Lo.b >= 0 ? a.params[Lo.b] : T(0);
    for (int c = ctx.warp(); c < C; c += ctx.nwarps()) {
      T s = T(0);
      for (int k = ctx.lane(); k < Lo.in; k += kWarp) s += ctx.sh(X + c * ldx + k) * w[k];
      s = warp_sum<T, Ctx>(ctx, s);
      if (ctx.lane() == 0) ctx.sh(E + c) += s + b;
    }
  }
};

}  // namespace core
}  // namespace hebm
