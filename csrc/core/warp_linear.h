// v2 linear layers of the block program (block_sampler.h): weights resident in shared memory, warp-level
// arithmetic. C chains per block (1-4, a template parameter: per-chain values stay in registers), CS blocks per
// cluster (1, 2 or 4: block rank r holds rows [r * rows, (r + 1) * rows) of every layer and the chains' state is
// replicated in every block).
//   forward:  warps own contiguous output rows, R at a time (8 for 1-2 chains, 2 for 3-4); lane l owns inputs
//             k = 128 m + 4 l + q (q < 4), so a row is read with 16-byte vector loads; the lane's inputs of every
//             chain are held in registers for all rows of the layer (inputs <= 256; wider layers reload them per
//             row batch); the R x C sums are reduced by one scatter butterfly (warp_sum_scatter: one shuffle
//             per sum, not five), after which R x C lanes finish one (row, chain) each (bias, time bias,
//             activation) and write H to every block of the cluster (DH only where every block reads it: a
//             ladder conditional's output; the backward reads DH of the rows its block owns; no H at all for an
//             untraced head's last hidden layer: only the energy reads it). backward_reads_own_rows(): the
//             barrier between a head's last hidden forward and its backward is a block barrier (block_head).
//   backward (row owner, backward_rows): the first backward_warps() warps (4 of 8: one per scheduler) own
//             contiguous rows o of the block's tile (the weight rows W[o][:]) and lane l owns inputs
//             i = 128 m + 4 l + q (16-byte loads of W[o][4l .. 4l+3], two 128-column passes in registers, more
//             passes over the rows when in > 256); the C deltas of up to 32 rows are loaded once, lane t holding
//             row t's (conflict-free consecutive words), and broadcast by one shuffle per (row, chain). Each of
//             those warps stores its C x in partial sums into its own slot (wpart, 16-byte stores), a named
//             barrier (every thread of the block: the other warps wait there, then help add), then the block adds
//             the slots in warp order: on one
//             block into DOUT (times DHprev) or G (times -alpha); on a cluster into this rank's slot of the
//             consumer blocks (remote stores: G into every block, DOUT into the blocks owning those rows of the
//             next layer), and the result stays pending across the walk's barrier that follows: the consumer
//             adds the CS rank slots in rank order (bit-identical in every block) - the next backward as its
//             input deltas (times its DHprev rows, local), the update (pending_grad4) or settle() as the
//             gradient. No remote loads, one named barrier and one walk barrier per backward.
//   backward_column (the streamed path's core, streamed_linear.h): lanes own input columns, 4 rows at a time.
//   energy:   warp c reduces chain c's output row (a head's energy) by a shuffle sum.
//   precision (BlockArgs::precision, a run-time branch uniform over the launch: no more instantiations; float
//             chains only): the products' operands rounded as the eager reference's matmuls round them
//             (reference.py _ReducedPrecisionMatmuls) and as the throughput path's tensor-core GEMM does
//             (tile_mma.h), with the same rounding functions (simt.h: round_operand, pack_bf16x2) and fp32 sums:
//             the forward's inputs X and the backward's incoming deltas (the linear's output gradient, after
//             the chain rule's DHprev and a cluster's rank sum) when a lane loads them into registers, the
//             weights once in load(). tf32: resident weights fp32, rounded to tf32. bf16: resident as packed
//             pairs (pack_bf16x2, lower k in bits 0-15; BlockLayout::ldw in words), a pass of n <= 256 inputs as
//             lane chunks: n > 128, chunk l 16 bytes holding inputs 4 l .. 4 l + 3 and hh + 4 l .. hh + 4 l + 3
//             (bf16_half: hh = 4 ceil(n / 8); fp32 rows: hh = 128), so lane l's one 16-byte load of a row gives
//             its 8 inputs, while its inputs X and partial sums stay two runs of consecutive 16-byte words
//             (conflict-free, as fp32's), lanes l >= hh / 4 holding none; n <= 128 (bf16_narrow), chunk l 8
//             bytes holding 4 l .. 4 l + 3, fp32's lane map (4 inputs a lane: 8 would double the FMA and unpack
//             instructions per row on half the lanes for no fewer wavefronts). Either way half the fp32 rows'
//             weight wavefronts (in = 100: 2 a row, not 4; 200: 4, not 7). As on the throughput path, what is
//             not a resident linear stays fp32: a head's output row (the energy and the delta dh * w_out), the
//             time biases, the elementwise parts. bf16 with 4 chains a block: the forward on the tensor cores
//             (forward_rows_mma: mma.sync m16n8k16 over the resident words, the k-order the chunk map's); the
//             backward and fewer chains keep the lane-chunk rows.
#pragma once

#include "block_sampler.h"
#include "tile_mma.h"

namespace hebm {
namespace core {

#if defined(__CUDACC__)
#define HEBM_UNROLL4 _Pragma("unroll 4")
#else
#define HEBM_UNROLL4
#endif

// forward_rows_mma out of line on the GPU: inlined into each activation's forward beside the SIMT rows it
// pushed the 4-chain kernels past 255 registers (spills); its own call keeps its registers its own.
#if defined(__CUDACC__)
#define HEBM_MMA_ROWS_FN __device__ __noinline__
#else
#define HEBM_MMA_ROWS_FN inline
#endif

constexpr int kWarpMaxChains = 4;
constexpr int kWarpInputsInRegs = 256;  // inputs per lane pass: 2 x 128 (32 lanes x float4)

template <typename T, class Ctx, int C, int CS>
struct WarpEngine : EngineJobs<T, Ctx> {
  static_assert(C >= 1 && C <= kWarpMaxChains, "1-4 chains per block");
  static_assert(CS == 1 || CS == 2 || CS == 4, "clusters of 1, 2 or 4 blocks");
  enum { PEND_NONE = 0, PEND_DOUT = 1, PEND_G = 2 };
  static constexpr bool kFusesLast = true;  // forward_backward (a head's last hidden layer in one pass)
  int rank;
  mutable int parity = 0;  // which partial-sum buffer pair the next cluster backward fills
  // A cluster backward's pending result: the CS ranks' partial sums in this block's buffer group `pend_part`,
  // for DOUT (read by the next backward as its DIN, times pend_dh: the chain rule's DHprev) or for
  // G[c * pend_ldg + pend_goff + i], i < pend_n.
  mutable int pend = PEND_NONE;
  mutable const T* pend_part = nullptr;
  mutable const T* pend_out = nullptr;
  mutable const T* pend_dh = nullptr;
  mutable T* pend_g = nullptr;
  mutable int pend_ldg = 0, pend_goff = 0, pend_n = 0;
  // The walk's exchanges on a cluster (sync): exchange n on mbarrier mbar[n & 1] of every block, its phase n >> 1.
  mutable uint64_t* mbar = nullptr;
  mutable int xn = 0;

  HEBM_BLOCK_FN explicit WarpEngine(Ctx& ctx) : rank(CS > 1 ? ctx.cluster_rank() : 0) {}
  HEBM_BLOCK_FN bool leader() const { return rank == 0; }
  // A walk barrier; on a cluster an exchange through mbarriers with the scheduled noise draw between arrive and
  // wait (it writes only this block's noise buffer, which no other thread touches before its arrive). Each warp,
  // after __syncwarp (which orders its lanes' accesses before lane 0's arrive: one arrival per warp, not 32 remote
  // arrives per warp), arrives with release at cluster scope on the exchange's mbarrier of every block, its own
  // included (CS x warps arrivals a phase), then waits (acquire) on its own block's. A wait returns once every
  // warp of the cluster arrived, so this is a cluster-wide barrier like barrier.cluster arrive / wait, without
  // its all-thread hardware round: every write-after-read argument made for the cluster barriers holds as it
  // was (block_head, block_step). Two mbarriers alternate: a warp that passed exchange n may arrive for n + 1
  // before a slower peer warp's arrive for n reached a third block; its arrive for n + 2 follows its wait for
  // n + 1, which follows every warp's arrives for n (each warp arrives everywhere before it waits).
  HEBM_BLOCK_FN void sync(Ctx& ctx) const {
    if (CS > 1) {
      uint64_t* bar = mbar + (xn & 1);
      ctx.syncwarp();
      if (ctx.lane() == 0) {
        HEBM_UNROLL
        for (int q = 0; q < CS; ++q) ctx.mbar_arrive_cluster(bar, (rank + q) % CS);
      }
      this->run_job(ctx);
      ctx.mbar_wait_parity(bar, (xn >> 1) & 1);
      ++xn;
    } else {
      this->run_job(ctx);
      ctx.sync();
    }
  }
  // The hardware cluster barrier (a block barrier on one block): after the weight load, which also makes the
  // mbarriers' init visible to the peers before their first arrive.
  HEBM_BLOCK_FN void sync_cluster(Ctx& ctx) const {
    this->run_job(ctx);
    if (CS > 1)
      ctx.cluster_sync();
    else
      ctx.sync();
  }
  // The kernel's last barrier: no block exits (its shared memory gone) while a peer may still store into it or
  // arrive on its mbarriers (the last exchange's remote arrives need not have landed everywhere).
  HEBM_BLOCK_FN void exit_barrier(Ctx& ctx) const {
    if (CS > 1) ctx.cluster_sync();
  }
  // The update's barrier: a block barrier also on a cluster. The update reads and writes only this block's copy
  // of the chains (y, yc, g, e, the noise, the pending partial sums); what the peer writes next (the next step's
  // first forward rows, or a backward's partial sums into the other buffer pair) is nothing the update touches.
  HEBM_BLOCK_FN void sync_local(Ctx& ctx) const {
    this->run_job(ctx);
    ctx.sync();
  }

  // The row-owner backward (backward_rows) reads this block's rows of W and of its input delta only: on a cluster
  // the DH the block's own forward wrote, or the rank slots the peers stored before the walk's exchange.
  HEBM_BLOCK_FN bool backward_reads_own_rows() const { return true; }

  HEBM_BLOCK_FN int slot(const BlockArgs<T>& a) const { return part_slot(a.lay.tile, a.prog.max_width); }
  // The matmuls' precision (core::Precision); fp32 for double chains (the callers reject reduced precision there).
  static HEBM_BLOCK_FN int prec(const BlockArgs<T>& a) { return sizeof(T) == 4 ? a.precision : kPrecisionFp32; }
  // bf16 rows (the header): whether pass `pass` holds at most 128 inputs (8-byte lane chunks, fp32's lane map),
  // and the offset of a pass's second input half in a lane's registers (fp32 rows and narrow passes 128; wide
  // bf16 passes 4 ceil(n / 8) for the pass's n inputs, chunk l holding 4 l .. 4 l + 3 and hh + 4 l .. hh + 4 l + 3).
  static HEBM_BLOCK_FN bool bf16_narrow(int in, int pass) { return in - pass * kWarpInputsInRegs <= 128; }
  static HEBM_BLOCK_FN int bf16_half(int in, int pass, bool wb) {
    if (!wb || bf16_narrow(in, pass)) return 128;
    const int n = in - pass * kWarpInputsInRegs;
    return ((n < kWarpInputsInRegs ? n : kWarpInputsInRegs) + 7) / 8 * 4;
  }
  // The lower input k of word wd of a resident bf16 row (the pair k, k + 1; the chunk map of the header: pass
  // wd / 128, lane chunk l, word e of the chunk). load() packs by it; forward_rows_mma takes its B pairs' offsets
  // from it (linear in the word within a pass, at the lane's word t, t + 4 and t + 8).
  static HEBM_BLOCK_FN int bf16_word_input(int in, int wd) {
    const int pass = wd / 128;
    const bool nar = bf16_narrow(in, pass);
    const int l = (wd % 128) / (nar ? 2 : 4), e = wd % (nar ? 2 : 4);
    return pass * kWarpInputsInRegs + (e < 2 ? 0 : bf16_half(in, pass, true)) + 4 * l + 2 * (e & 1);
  }
  // Lane l's bf16 weights of pass `pass` of the resident row at Wr (words): w[m][q] is input kin(pass, m) + q
  // (forward_rows); a narrow pass one 8-byte load (w[1] left unset), a wide one a 16-byte load.
  HEBM_BLOCK_FN void bf16_weights(Ctx& ctx, const uint32_t* Wr, int pass, bool narrow, T w[2][4]) const {
    const int lane = ctx.lane();
    if (narrow) {
      const uint64_t v = ctx.sh(reinterpret_cast<const uint64_t*>(Wr + pass * 128 + 2 * lane));
      const uint32_t u0 = uint32_t(v), u1 = uint32_t(v >> 32);
      w[0][0] = bf16_lo(u0), w[0][1] = bf16_hi(u0), w[0][2] = bf16_lo(u1), w[0][3] = bf16_hi(u1);
    } else {
      const Vec4<uint32_t> u = ctx.ld4(Wr + pass * 128 + 4 * lane);
      w[0][0] = bf16_lo(u.x), w[0][1] = bf16_hi(u.x), w[0][2] = bf16_lo(u.y), w[0][3] = bf16_hi(u.y);
      w[1][0] = bf16_lo(u.z), w[1][1] = bf16_hi(u.z), w[1][2] = bf16_lo(u.w), w[1][3] = bf16_hi(u.w);
    }
  }

  // Adds a pending gradient into its G (every thread its share; the caller puts a barrier before G is read).
  HEBM_BLOCK_FN bool settle(Ctx& ctx, const BlockArgs<T>& a) const {
    if (CS == 1 || pend != PEND_G) return false;
    const int sl = slot(a);
    for (int idx = ctx.tid(); idx < C * pend_n; idx += ctx.nthreads()) {
      const int c = idx / pend_n, i = idx - c * pend_n;
      T v = ctx.sh(pend_part + idx);
      HEBM_UNROLL
      for (int s = 1; s < CS; ++s) v += ctx.sh(pend_part + s * sl + idx);
      ctx.sh(pend_g + c * pend_ldg + pend_goff + i) += v;
    }
    pend = PEND_NONE;
    return true;
  }
  // The pending gradient of G[r][d .. d + 3] (zeros when none is pending for G), for the update.
  HEBM_BLOCK_FN Vec4<T> pending_grad4(Ctx& ctx, const BlockArgs<T>& a, const T* G, int r, int d) const {
    Vec4<T> v = {T(0), T(0), T(0), T(0)};
    if (CS == 1 || pend != PEND_G || G != pend_g || d + 4 <= pend_goff || d >= pend_goff + pend_n) return v;
    const int o = r * pend_n + d - pend_goff;
    if (pend_goff % 4 == 0 && pend_n % 4 == 0) {  // 16-byte loads: scalars at stride 4 conflict 4-way
      v = ctx.ld4(pend_part + o);
      HEBM_UNROLL
      for (int s = 1; s < CS; ++s) {
        const Vec4<T> p = ctx.ld4(pend_part + s * slot(a) + o);
        v = Vec4<T>{v.x + p.x, v.y + p.y, v.z + p.z, v.w + p.w};
      }
    } else {
      v.x = pending_grad(ctx, a, G, r, d);
      v.y = pending_grad(ctx, a, G, r, d + 1);
      v.z = pending_grad(ctx, a, G, r, d + 2);
      v.w = pending_grad(ctx, a, G, r, d + 3);
    }
    return v;
  }
  HEBM_BLOCK_FN T pending_grad(Ctx& ctx, const BlockArgs<T>& a, const T* G, int r, int d) const {
    if (CS == 1 || pend != PEND_G || G != pend_g || d < pend_goff || d >= pend_goff + pend_n) return T(0);
    const int o = r * pend_n + d - pend_goff;
    T v = ctx.sh(pend_part + o);
    HEBM_UNROLL
    for (int s = 1; s < CS; ++s) v += ctx.sh(pend_part + s * slot(a) + o);
    return v;
  }
  HEBM_BLOCK_FN void drop_pending() const { pend = PEND_NONE; }

  // This block's rows of every resident linear, zero-padded to the row stride (once per launch): tf32 rounded,
  // bf16 packed pairs in the lane chunks of the header (bf16_narrow, bf16_half).
  // On a cluster also the exchanges' mbarriers (thread 0; the walk's cluster barrier after the load orders the init
  // before the peers' first arrive).
  HEBM_BLOCK_FN void load(Ctx& ctx, const BlockArgs<T>& a, T* smem) const {
    if (CS > 1) {
      mbar = reinterpret_cast<uint64_t*>(smem + a.lay.mbar);
      if (ctx.tid() == 0) {
        ctx.mbar_init(mbar, CS * ctx.nwarps());
        ctx.mbar_init(mbar + 1, CS * ctx.nwarps());
      }
    }
    for (int j = 0; j < a.prog.n_lin; ++j) {
      if (a.lay.w[j] < 0) continue;
      const LinearDesc& L = a.prog.lin[j];
      const int r0 = rank * a.lay.rows[j];
      int n = (L.out - r0) < a.lay.rows[j] ? (L.out - r0) : a.lay.rows[j];
      if (n < 0) n = 0;
      const int ld = a.lay.ldw[j], pr = prec(a);
      const T* W = a.params + L.w + (int64_t)r0 * L.in;
      if (pr == kPrecisionBf16) {
        uint32_t* Wsh = reinterpret_cast<uint32_t*>(smem + a.lay.w[j]);
        for (int idx = ctx.tid(); idx < n * ld; idx += ctx.nthreads()) {
          // word wd of row rr: inputs (k, k + 1)
          const int rr = idx / ld, wd = idx - rr * ld, k = bf16_word_input(L.in, wd);
          const T* w = W + (int64_t)rr * L.in + k;
          ctx.sh(Wsh + idx) = pack_bf16x2(k < L.in ? float(w[0]) : 0.f, k + 1 < L.in ? float(w[1]) : 0.f);
        }
      } else {
        for (int idx = ctx.tid(); idx < n * ld; idx += ctx.nthreads()) {
          const int rr = idx / ld, k = idx - rr * ld;
          ctx.sh(smem + a.lay.w[j] + idx) = k < L.in ? round_operand(W[(int64_t)rr * L.in + k], pr) : T(0);
        }
      }
    }
  }

  // The output rows [r0, r1) of linear jl whose weights this block holds (all of them on one block; its half on a
  // cluster rank).
  HEBM_BLOCK_FN void own_rows(const BlockArgs<T>& a, int jl, int& r0, int& r1) const {
    const int rows = a.lay.rows[jl], out = a.prog.lin[jl].out;
    r0 = rank * rows;
    r1 = (out - r0) < rows ? out : r0 + rows;
    if (r1 < r0) r1 = r0;  // a rank past the last row (out < CS rows): none
  }

  // The activation kind is a template parameter here: the epilogue runs in lanes 0..C-1 with the row sums in
  // registers, one instantiation per kind (no spill: docs/CUDA_KERNELS.md).
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope, int act, const T* dyw = nullptr) const {
    HEBM_DISPATCH_ACT(act, A, (forward_k<A>(ctx, a, smem, jl, X, ldx, H, DH, trow, slope, dyw)));
  }

  template <int A>
  HEBM_BLOCK_FN void forward_k(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                               const int* trow, T slope, const T* dyw) const {
    int r0, r1;
    own_rows(a, jl, r0, r1);
    forward_rows<A>(ctx, a, smem, jl, smem + a.lay.w[jl], r0, r1 - r0, X, ldx, H, DH, trow, slope, dyw, prec(a));
  }

  // Lane l's inputs k0 .. k0 + 3 of half m of a pass (bf16: both halves in one packed 16-byte chunk).
  static HEBM_BLOCK_FN int lane_input(int in, int pass, int m, bool wb, int lane) {
    return pass * kWarpInputsInRegs + m * bf16_half(in, pass, wb) + 4 * lane;
  }
  // Whether the inputs' rows start 16-byte aligned (hidden layers; a head's slice when its offset and D are
  // multiples of 4).
  static HEBM_BLOCK_FN bool inputs_vec(const T* smem, const T* X, int ldx) {
    return ((X - smem) % 4) == 0 && ldx % 4 == 0;
  }
  // Lane l's inputs of pass `pass` of every chain (xr[c][m][q]: input lane_input(m) + q of chain c; zeros past
  // L.in and in a lane without inputs), rounded to the precision pr as they are loaded.
  HEBM_BLOCK_FN void load_inputs(Ctx& ctx, const LinearDesc& L, const T* X, int ldx, bool xvec, int pass, bool wb,
                                 int pr, T xr[C][2][4]) const {
    const int lane = ctx.lane();
    const bool on = 4 * lane < bf16_half(L.in, pass, wb);  // (fp32: every lane)
    HEBM_UNROLL
    for (int m = 0; m < 2; ++m) {
      const int k0 = on ? lane_input(L.in, pass, m, wb, lane) : L.in;  // a lane without inputs: zeros
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
        if (pr != kPrecisionFp32) {
          HEBM_UNROLL
          for (int q = 0; q < 4; ++q) xr[c][m][q] = round_operand(xr[c][m][q], pr);
        }
      }
    }
  }
  // One batch of R fp32 rows i0 .. i0 + R - 1 (those below jend) of the resident tile at Ws: the lane's 4 + 4
  // weights of each (16-byte loads at k0 and k0 + 128, k0 = lane_input(pass, 0)) into wr[t][m] (zeros for a row
  // past jend or an input half past L.in) and acc[t * C + c] += their products with the lane's inputs xr.
  template <int R, int NP>
  HEBM_BLOCK_FN void row_batch(Ctx& ctx, const LinearDesc& L, const T* Ws, int ldw, int k0, int i0, int jend,
                               const T xr[C][2][4], T (&acc)[NP], Vec4<T> (&wr)[R][2]) const {
    HEBM_UNROLL
    for (int m = 0; m < 2; ++m) {
      const int k = k0 + 128 * m;
      HEBM_UNROLL
      for (int t = 0; t < R; ++t) {
        const int jr = i0 + t;
        wr[t][m] = Vec4<T>{T(0), T(0), T(0), T(0)};
        if (k < L.in && jr < jend) {
          const Vec4<T> w = ctx.ld4(Ws + jr * ldw + k);
          wr[t][m] = w;
          HEBM_UNROLL
          for (int c = 0; c < C; ++c)
            acc[t * C + c] += w.x * xr[c][m][0] + w.y * xr[c][m][1] + w.z * xr[c][m][2] + w.w * xr[c][m][3];
        }
      }
    }
  }
  // The fp32 forward's row batches (forward_rows, fused_rows): R rows x C chains of dot products at a time (R = 8
  // at C <= 2: a 100-row half layer is 2 batches per warp, not 4), their NP sums reduced by one scatter butterfly;
  // each warp's rows a contiguous range [jbeg, jend) of ceil(nrows / nwarps).
  static constexpr int kBatchRows = C <= 2 ? 8 : 2;
  static constexpr int kBatchSums = kBatchRows * C <= 8 ? 8 : (kBatchRows * C <= 16 ? 16 : 32);
  static HEBM_BLOCK_FN void warp_rows(Ctx& ctx, int nrows, int& jbeg, int& jend) {
    const int rpw = (nrows + ctx.nwarps() - 1) / ctx.nwarps();
    jbeg = ctx.warp() * rpw;
    jend = nrows < jbeg + rpw ? nrows : jbeg + rpw;
  }

  // The backward's per-lane sums acc[c][m][q] (chain c, the lane's inputs of half m): zeroed; += d[c] * w (one
  // 16-byte group of a weight row's half m); stored into a warp's slot wp (row stride ldi) at input k0 of half m.
  static HEBM_BLOCK_FN void zero_sums(T (&acc)[C][2][4]) {
    HEBM_UNROLL
    for (int c = 0; c < C; ++c)
      HEBM_UNROLL
      for (int m = 0; m < 2; ++m)
        HEBM_UNROLL
        for (int q = 0; q < 4; ++q) acc[c][m][q] = T(0);
  }
  static HEBM_BLOCK_FN void add_sums(T (&acc)[C][2][4], int m, const T (&d)[C], const Vec4<T>& w) {
    HEBM_UNROLL
    for (int c = 0; c < C; ++c) {
      acc[c][m][0] += d[c] * w.x;
      acc[c][m][1] += d[c] * w.y;
      acc[c][m][2] += d[c] * w.z;
      acc[c][m][3] += d[c] * w.w;
    }
  }
  static HEBM_BLOCK_FN void store_sums(Ctx& ctx, T* wp, int ldi, int k0, int m, const T (&acc)[C][2][4]) {
    HEBM_UNROLL
    for (int c = 0; c < C; ++c)
      ctx.st4(wp + c * ldi + k0, Vec4<T>{acc[c][m][0], acc[c][m][1], acc[c][m][2], acc[c][m][3]});
  }

  // The forward core: output rows [r0, r0 + nrows) of linear jl, row r0 + jr of the weights at Ws + jr * ldw in
  // shared memory (the resident tile, or a streamed chunk: streamed_linear.h); H[c][j] = act(X[c] . W[j] + b[j]
  // (+ tb[t_c][j])), DH = act' (* dyw[j] when given; H may be null: an untraced head's last hidden layer, whose H
  // nothing reads, block_head); on a cluster H also into every other block, DH only when jl
  // is a net's output linear (a ladder conditional's mu / sigma, read elementwise by every block; a hidden layer's
  // DH is read by the row-owner backward for the rows this block owns). pr: the precision (X rounded at load;
  // bf16: Ws packed pairs in chunks, bf16_half, row stride ldw words; the streamed engine's fp32 chunks: fp32).
  template <int A>
  HEBM_BLOCK_FN void forward_rows(Ctx& ctx, const BlockArgs<T>& a, const T* smem, int jl, const T* Ws, int r0,
                                  int nrows, const T* X, int ldx, T* H, T* DH, const int* trow, T slope,
                                  const T* dyw, int pr = kPrecisionFp32) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl];
    const int lane = ctx.lane();
    const bool wb = pr == kPrecisionBf16;
    // float chains, 4 a block: bf16 rows on the tensor cores (prec() is fp32 for double). With fewer chains the
    // mma's B columns and C lanes are mostly idle and each m16 tile reloads the inputs: more wavefronts than the
    // lane-chunk rows below (measured: LEBM 2-block, 2 chains 1,884 against 1,745; one block, 1 chain 2,961
    // against 2,745), so they keep those.
    if constexpr (sizeof(T) == 4 && C == kWarpMaxChains) {
      if (wb) {
        forward_rows_mma<A>(ctx, a, smem, jl, reinterpret_cast<const uint32_t*>(Ws), r0, nrows, X, ldx, H, DH, trow,
                            slope, dyw);
        return;
      }
    }
    auto kin = [&](int pass, int m) { return lane_input(L.in, pass, m, wb, lane); };
    const int npass = (L.in + kWarpInputsInRegs - 1) / kWarpInputsInRegs;
    T xr[C][2][4];
    const bool xvec = inputs_vec(smem, X, ldx);
    // This warp's rows, R at a time: R x C independent dot products, their loads in flight together and their
    // sums reduced by one scatter butterfly (NP shuffles for NP sums). Contiguous rows: the NP finishing lanes
    // store consecutive words (conflict-free).
    constexpr int R = kBatchRows, NP = kBatchSums;
    int jbeg, jend;
    warp_rows(ctx, nrows, jbeg, jend);
    for (int i0 = jbeg; i0 < jend; i0 += R) {
      T acc[NP] = {};  // zeros
      for (int pass = 0; pass < npass; ++pass) {
        const bool on = 4 * lane < bf16_half(L.in, pass, wb);  // (fp32: every lane)
        if (npass > 1 || i0 == jbeg) load_inputs(ctx, L, X, ldx, xvec, pass, wb, pr, xr);
        if (wb) {
          const bool narrow = bf16_narrow(L.in, pass);
          if (on && kin(pass, 0) < L.in) {
            HEBM_UNROLL
            for (int t = 0; t < R; ++t) {
              const int jr = i0 + t;
              if (jr < jend) {
                T w[2][4];  // the lane's 4 or 8 weights of row jr
                bf16_weights(ctx, reinterpret_cast<const uint32_t*>(Ws) + jr * ldw, pass, narrow, w);
                HEBM_UNROLL
                for (int m = 0; m < 2; ++m)
                  if (m == 0 || !narrow)
                    HEBM_UNROLL
                    for (int c = 0; c < C; ++c)
                      acc[t * C + c] += w[m][0] * xr[c][m][0] + w[m][1] * xr[c][m][1] + w[m][2] * xr[c][m][2] +
                                        w[m][3] * xr[c][m][3];
              }
            }
          }
        } else {
          Vec4<T> wr[R][2];  // (unused here: the fused forward and backward keeps them)
          row_batch<R>(ctx, L, Ws, ldw, kin(pass, 0), i0, jend, xr, acc, wr);
        }
      }
      // lane l holds sum l / (32 / NP) = t * C + c: the first lane of each group finishes row t of chain c
      const T sum = warp_sum_scatter<T, NP, Ctx>(ctx, acc);
      const int idx = lane / (kWarp / NP), t = idx / C, c = idx - t * C, jr = i0 + t;
      if (lane % (kWarp / NP) == 0 && idx < R * C && jr < jend)
        forward_finish<A>(ctx, a, jl, r0 + jr, c, sum, H, DH, trow, slope, dyw);
    }
  }

  // The forward's epilogue for output row j of linear jl, chain c, from the row sum: bias, time bias, activation
  // and its derivative (times dyw[j]), H and DH here and, on a cluster, in the peers (forward_rows' header).
  // Returns the derivative (DH may be null: the fused forward and backward, which keeps it in registers).
  template <int A>
  HEBM_BLOCK_FN T forward_finish(Ctx& ctx, const BlockArgs<T>& a, int jl, int j, int c, T sum, T* H, T* DH,
                                 const int* trow, T slope, const T* dyw) const {
    const LinearDesc& L = a.prog.lin[jl];
    T y, dy;
    linear_act<A, T, Ctx>(ctx, a, L, j, c, sum, trow, slope, dyw, y, dy);
    if (H) ctx.sh(H + c * L.out + j) = y;
    if (DH) ctx.sh(DH + c * L.out + j) = dy;
    if (CS > 1) {  // the cluster peers' copies (compile-time: nothing on one block)
      bool dh_all = false;
      for (int n = 0; DH && n < a.prog.n_nets; ++n)
        dh_all = dh_all || a.prog.nets[n].first + a.prog.nets[n].n_lin - 1 == jl;
      HEBM_UNROLL
      for (int q = 1; q < CS; ++q) {
        const int pr = (rank + q) % CS;
        if (H) ctx.sh(ctx.map_rank(H, pr) + c * L.out + j) = y;
        if (dh_all) ctx.sh(ctx.map_rank(DH, pr) + c * L.out + j) = dy;
      }
    }
    return dy;
  }

  // The bf16 forward on the tensor cores (forward_rows with resident bf16 rows, float chains): per warp m16
  // tiles of the block's rows (tile w, w + nwarps, ...), mma.sync m16n8k16 with A = 16 weight rows, B = the
  // chains' inputs (column n = chain n; columns >= C zero), C = the row sums of every chain. The k-steps follow
  // the resident words, not the inputs: k-step s of a pass is its words 8 s .. 8 s + 7 of each row (a0 / a1
  // word 8 s + t, a2 / a3 word 8 s + 4 + t: one LDS.32 each, conflict-free where the row stride in words is
  // 4 mod 8, as LEBM's 100 and 52), and B's k-pair for a word is the inputs bf16_word_input gives it (the chunk
  // map; any pairing of the products is the same dot product): in a pass that is k0 = kb + ks s for b0 and
  // k0 + kh for b1, kb = bf16_word_input(word t of the pass), kh and ks its steps to words t + 4 and t + 8 (narrow
  // 8 and 16, wide 4 and 8); loaded as one 8-byte access of fp32 and rounded (pack_bf16x2: round to nearest even, as
  // round_operand). Words past the row stride and inputs past L.in read as zero. Four accumulator sets (k-step
  // s into set s mod 4: four independent mma chains), added in set order; lanes with 2t + i < C finish (row g
  // (+ 8), chain 2t + i) through forward_finish.
  template <int A>
  HEBM_MMA_ROWS_FN void forward_rows_mma(Ctx& ctx, const BlockArgs<T>& a, const T* smem, int jl, const uint32_t* Ws,
                                      int r0, int nrows, const T* X, int ldx, T* H, T* DH, const int* trow,
                                      T slope, const T* dyw) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl];
    const int g = ctx.lane() >> 2, t = ctx.lane() & 3;
    const int mt = (nrows + kMmaM - 1) / kMmaM;
    const bool xv = ((X - smem) % 2) == 0 && ldx % 2 == 0;  // 8-byte input pairs (k is even)
    const int kmax = (L.in - 1) & ~1;                         // the last pair's first input
    for (int tile = ctx.warp(); tile < mt; tile += ctx.nwarps()) {
      // A: rows past nrows not read (a lane's rows are the same in every k-step); words past the stride clamped
      // to the last and zeroed. One statement per register: one access site each (the emulation's bank model
      // pairs the lanes' accesses of a site in order).
      const int rw0 = tile * kMmaM + g, rw1 = rw0 + 8;
      const bool ok0 = rw0 < nrows, ok1 = rw1 < nrows;
      const uint32_t* A0 = Ws + (ok0 ? rw0 : 0) * ldw;
      const uint32_t* A1 = Ws + (ok1 ? rw1 : 0) * ldw;
      const T* Xc = X + (g < C ? g : 0) * ldx;
      float acc[4][4];
      HEBM_UNROLL
      for (int q = 0; q < 4; ++q)
        HEBM_UNROLL
        for (int i = 0; i < 4; ++i) acc[q][i] = 0.f;
      for (int pass = 0; pass * 128 < ldw; ++pass) {
        const int wp = pass * 128, nwp = (ldw - wp) < 128 ? (ldw - wp) : 128;
        const int kb = bf16_word_input(L.in, wp + t);
        const int kh = bf16_word_input(L.in, wp + t + 4) - kb, ks = bf16_word_input(L.in, wp + t + 8) - kb;
        const int nsp = (nwp + 7) / 8;
        for (int s0 = 0; s0 < nsp; s0 += 4) {
          HEBM_UNROLL
          for (int q = 0; q < 4; ++q) {
            const int s = s0 + q;
            if (s < nsp) {  // uniform over the warp
              uint32_t af[4], bf[2];
              const int w0 = wp + 8 * s + t, w1 = w0 + 4;
              const int c0 = w0 < ldw ? w0 : ldw - 1, c1 = w1 < ldw ? w1 : ldw - 1;
              af[0] = ok0 ? ctx.sh(A0 + c0) : 0u;
              af[1] = ok1 ? ctx.sh(A1 + c0) : 0u;
              af[2] = ok0 ? ctx.sh(A0 + c1) : 0u;
              af[3] = ok1 ? ctx.sh(A1 + c1) : 0u;
              if (w0 >= ldw) af[0] = af[1] = 0u;
              if (w1 >= ldw) af[2] = af[3] = 0u;
              HEBM_UNROLL
              for (int i = 0; i < 2; ++i) {
                const int k = kb + ks * s + kh * i;
                float x0 = 0.f, x1 = 0.f;
                if (g < C) {  // (lanes of chains past C: no access, the same in every k-step)
                  const int kk = k < kmax ? k : kmax;  // a valid pair start (k is even)
                  if (xv) {  // (an odd L.in: X[in] lies inside the row stride, ldx even > in)
                    sh_pair(ctx, Xc + kk, x0, x1);
                  } else {
                    x0 = ctx.sh(Xc + kk);
                    x1 = ctx.sh(Xc + (kk + 1 < L.in ? kk + 1 : kk));
                  }
                  x0 = k < L.in ? x0 : 0.f;
                  x1 = k + 1 < L.in ? x1 : 0.f;
                }
                bf[i] = pack_bf16x2(x0, x1);
              }
              ctx.mma_bf16_16816(acc[q], af, bf, acc[q]);
            }
          }
        }
      }
      HEBM_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int row = tile * kMmaM + g + 8 * (i >> 1), c = 2 * t + (i & 1);
        if (c < C && row < nrows) {
          const float sum = ((acc[0][i] + acc[1][i]) + acc[2][i]) + acc[3][i];
          forward_finish<A>(ctx, a, jl, r0 + row, c, T(sum), H, DH, trow, slope, dyw);
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
  // d_o * W[o][i], d_o = din0[c][o] (+ din1[c][o]: a cluster's two pending partial sums),
  // row o of the weights at Ws + (o - o0) * ldw in shared memory (the resident tile or a streamed chunk); 4 rows at
  // a time with one 16-byte broadcast load of each chain's 4 deltas when o0 and L.out are multiples of 4.
  HEBM_BLOCK_FN void backward_column(Ctx& ctx, const LinearDesc& L, const T* Ws, int ldw, int o0, int o1,
                                     const T* din0, const T* din1, int i, bool ok, T* acc) const {
    const bool vec = o0 % 4 == 0 && L.out % 4 == 0;  // the delta arrays start 16-byte aligned (block_layout)
    int o = o0;
    if (vec) {
      for (; o + 4 <= o1; o += 4) {
        T w[4];
        HEBM_UNROLL
        for (int q = 0; q < 4; ++q) w[q] = ok ? ctx.sh(Ws + (o + q - o0) * ldw + i) : T(0);
        HEBM_UNROLL
        for (int c = 0; c < C; ++c) {
          Vec4<T> d = ctx.ld4(din0 + c * L.out + o);
          if (CS > 1 && din1) {
            const Vec4<T> e = ctx.ld4(din1 + c * L.out + o);
            d = Vec4<T>{d.x + e.x, d.y + e.y, d.z + e.z, d.w + e.w};
          }
          acc[c] += d.x * w[0] + d.y * w[1] + d.z * w[2] + d.w * w[3];
        }
      }
    }
    for (; o < o1; ++o) {
      T w = ok ? ctx.sh(Ws + (o - o0) * ldw + i) : T(0);
      HEBM_UNROLL
      for (int c = 0; c < C; ++c) {
        T d = ctx.sh(din0 + c * L.out + o);
        if (CS > 1 && din1) d += ctx.sh(din1 + c * L.out + o);
        acc[c] += d * w;
      }
    }
  }

  // The row-owner backward core: warp w < nw's contiguous share of rows [0, nrows) of linear L (row r0 + jr at
  // Ws + jr * ldw), lane l owning inputs i = 256 pass + 128 m + 4 l + q; stores acc[c][i] = sum over the warp's
  // rows o (in order) of d_c[o] W[o][i] into the warp's slot wp[c * ldi + i], i < ldi = L.in rounded up to 4 (zeros for
  // a warp without rows). Called by warps 0 .. nw - 1 only (nw = backward_warps: the slots' count). d_c[o] = DIN[c][o], or with pp (a cluster's pending result) sum_s pp[s][c][o] in rank
  // order, times dsc[c][o] when given (the chain rule's DHprev, applied by the consumer for the rows it owns).
  // The deltas of up to 32 rows are loaded once (lane t: row t, consecutive words) and broadcast by shuffles.
  // pr: the precision (d_c[o] rounded once loaded; bf16: Ws packed pairs in chunks, bf16_half).
  HEBM_BLOCK_FN void backward_rows(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& L, const T* Ws, int ldw, int r0,
                                   int nrows, const T* DIN, const T* pp, const T* dsc, T* wp, int nw, int pr) const {
    const int lane = ctx.lane(), ldi = (L.in + 3) / 4 * 4, sl = slot(a);
    const bool wb = pr == kPrecisionBf16;
    auto kin = [&](int pass, int m) {  // as forward_rows: the lane's inputs k0 .. k0 + 3 of half m
      return pass * kWarpInputsInRegs + m * bf16_half(L.in, pass, wb) + 4 * lane;
    };
    const int rpw = (nrows + nw - 1) / nw;
    const int jbeg = ctx.warp() * rpw < nrows ? ctx.warp() * rpw : nrows;
    const int jend = nrows < jbeg + rpw ? nrows : jbeg + rpw;
    const int npass = (L.in + kWarpInputsInRegs - 1) / kWarpInputsInRegs;
    for (int pass = 0; pass < npass; ++pass) {
      const bool on = 4 * lane < bf16_half(L.in, pass, wb);  // (fp32: every lane)
      const bool narrow = wb && bf16_narrow(L.in, pass);
      T acc[C][2][4];
      zero_sums(acc);
      for (int b0 = jbeg; b0 < jend; b0 += kWarp) {
        const int nb = (jend - b0) < kWarp ? (jend - b0) : kWarp;
        T dl[C];
        const int o = r0 + b0 + lane;
        HEBM_UNROLL
        for (int c = 0; c < C; ++c) {
          T d = T(0);
          if (lane < nb) {
            if (pp) {
              d = ctx.sh(pp + c * L.out + o);
              HEBM_UNROLL
              for (int s = 1; s < CS; ++s) d += ctx.sh(pp + s * sl + c * L.out + o);
              if (dsc) d *= ctx.sh(dsc + c * L.out + o);
            } else {
              d = ctx.sh(DIN + c * L.out + o);
            }
          }
          dl[c] = round_operand(d, pr);  // the gradient into the linear's output, rounded (_RoundGradient)
        }
        HEBM_UNROLL4
        for (int t = 0; t < nb; ++t) {
          T dv[C];  // row t's deltas, from lane t (all lanes: outside the per-lane branch below)
          HEBM_UNROLL
          for (int c = 0; c < C; ++c) dv[c] = ctx.shfl_idx(dl[c], t);
          const T* wr = Ws + (b0 + t) * ldw;
          if (wb) {
            if (on && kin(pass, 0) < L.in) {
              T w[2][4];
              bf16_weights(ctx, reinterpret_cast<const uint32_t*>(wr), pass, narrow, w);
              HEBM_UNROLL
              for (int m = 0; m < 2; ++m)
                if (m == 0 || !narrow)
                  HEBM_UNROLL
                  for (int c = 0; c < C; ++c)
                    HEBM_UNROLL
                    for (int q = 0; q < 4; ++q) acc[c][m][q] += dv[c] * w[m][q];
            }
          } else {
            HEBM_UNROLL
            for (int m = 0; m < 2; ++m) {
              const int k0 = kin(pass, m);
              if (k0 < L.in)  // (uniformly false for m = 1 when in <= 128: no FMAs on padding)
                add_sums(acc, m, dv, ctx.ld4(wr + k0));
            }
          }
        }
      }
      HEBM_UNROLL
      for (int m = 0; m < 2; ++m) {
        const int k0 = kin(pass, m);
        if (on && k0 < L.in) store_sums(ctx, wp, ldi, k0, m, acc);
      }
    }
  }

  // With d_o = DIN[r][o]: DOUT[r][i] = (sum_o d_o W[o][i]) * (DHprev ? DHprev[r][i] : 1),
  // or G[r][goff + i] += (alpha ? -alpha_r : 1) * sum_o d_o W[o][i]; on a cluster the result is left pending.
  // DOUT is the input delta of linear jl, read only by the backward of linear jl - 1 (block_backward_chain).
  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    int r0, r1;
    own_rows(a, jl, r0, r1);
    // the input deltas: DIN, or on a cluster the CS partial sums the previous backward left for it
    const T* pp = nullptr;
    const T* dsc = nullptr;
    T* part = backward_begin(ctx, a, smem, DIN, pp, dsc);
    // the backward warps' slots [warp][c][ldi]: consecutive threads below read consecutive 16-byte words
    const int ldi = (L.in + 3) / 4 * 4, nw = backward_warps(ctx.nwarps());
    if (ctx.warp() < nw)
      backward_rows(ctx, a, L, smem + a.lay.w[jl], a.lay.ldw[jl], r0, r1 - r0, DIN, pp, dsc,
                    smem + a.lay.wpart + ctx.warp() * C * ldi, nw, prec(a));
    backward_end(ctx, a, smem, jl, nw, part, DOUT, DHprev, G, ldg, goff, alpha_rows);
  }

  // A backward's start on a cluster: an earlier backward's pending gradient added into G now (no thread reads G
  // before this backward's barrier); the input deltas (pp, dsc) when the pending result is DIN's; this rank's
  // slot of the partial-sum buffer group the result goes to (null on one block).
  HEBM_BLOCK_FN T* backward_begin(Ctx& ctx, const BlockArgs<T>& a, T* smem, const T* DIN, const T*& pp,
                                  const T*& dsc) const {
    if (CS == 1) return nullptr;
    settle(ctx, a);
    if (DIN && pend == PEND_DOUT && DIN == pend_out) {
      pp = pend_part;
      dsc = pend_dh;
    }
    pend = PEND_NONE;
    return smem + a.lay.part + parity * CS * slot(a) + rank * slot(a);
  }

  // A backward's end, after warps 0 .. nw - 1 stored their slots (smem + wpart, [warp][c][ldi]): the slots added
  // in warp order into DOUT (times DHprev) or G (times -alpha) on one block; on a cluster into this rank's slot
  // `part` of the consumer blocks, the result left pending (backward's header).
  HEBM_BLOCK_FN void backward_end(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, int nw, T* part, T* DOUT,
                                  const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldi = (L.in + 3) / 4 * 4;
    const T* wpart = smem + a.lay.wpart;
    // every backward warp's slot written (bar.sync 1: the walk's barriers are 0); all the block's threads arrive,
    // the other warps to wait for the slots they help add below
    ctx.named_sync(1, ctx.nthreads());
    // The backward warps' slots added in warp order, 4 inputs per thread (16-byte accesses where the rows allow).
    const int n4 = (L.in + 3) / 4;
    const bool v4 = L.in % 4 == 0;
    const int rows_next = jl > 0 ? a.lay.rows[jl - 1] : 1;  // DOUT's consumer: linear jl - 1's row split
    for (int idx = ctx.tid(); idx < C * n4; idx += ctx.nthreads()) {
      const int c = idx / n4, i0 = 4 * (idx - c * n4);
      Vec4<T> v = ctx.ld4(wpart + c * ldi + i0);
      for (int w = 1; w < nw; ++w) {
        const Vec4<T> p = ctx.ld4(wpart + (w * C + c) * ldi + i0);
        v = Vec4<T>{v.x + p.x, v.y + p.y, v.z + p.z, v.w + p.w};
      }
      if (G && alpha_rows) {
        const T s = neg_alpha<T, Ctx>(ctx, a, alpha_rows, c);
        v = Vec4<T>{s * v.x, s * v.y, s * v.z, s * v.w};
      }
      const T vq[4] = {v.x, v.y, v.z, v.w};
      if (CS == 1) {
        T* dst = G ? G + c * ldg + goff + i0 : DOUT + c * L.in + i0;
        if (v4 && (!G || (ldg % 4 == 0 && goff % 4 == 0))) {  // 16-byte: scalars at stride 4 conflict 4-way
          if (G) {
            const Vec4<T> g = ctx.ld4(dst);
            ctx.st4(dst, Vec4<T>{g.x + v.x, g.y + v.y, g.z + v.z, g.w + v.w});
          } else if (DHprev) {
            const Vec4<T> h = ctx.ld4(DHprev + c * L.in + i0);
            ctx.st4(dst, Vec4<T>{v.x * h.x, v.y * h.y, v.z * h.z, v.w * h.w});
          } else {
            ctx.st4(dst, v);
          }
        } else {
          HEBM_UNROLL
          for (int q = 0; q < 4; ++q) {
            if (i0 + q >= L.in) continue;
            if (G)
              ctx.sh(dst + q) += vq[q];
            else
              ctx.sh(dst + q) = DHprev ? vq[q] * ctx.sh(DHprev + c * L.in + i0 + q) : vq[q];
          }
        }
      } else {
        // this rank's slot in the consumer blocks: G's in every block (each runs the whole update), DOUT's in the
        // blocks owning rows i0 .. i0 + 3 of linear jl - 1 (the next backward reads only its own rows)
        int p0 = 0, p1 = CS - 1;
        if (!G) {
          p0 = i0 / rows_next;
          p1 = (i0 + 3 < L.in ? i0 + 3 : L.in - 1) / rows_next;
          p1 = p1 < CS - 1 ? p1 : CS - 1;
        }
        T* dst = part + c * L.in + i0;
        for (int p = p0; p <= p1; ++p) {
          T* d = p == rank ? dst : ctx.map_rank(dst, p);
          if (v4) {
            ctx.st4(d, v);
          } else {
            HEBM_UNROLL
            for (int q = 0; q < 4; ++q)
              if (i0 + q < L.in) ctx.sh(d + q) = vq[q];
          }
        }
      }
    }
    if (CS > 1) {
      // the buffer groups alternate: the next backward's stores cannot reach the group this result is read from
      pend_part = smem + a.lay.part + parity * CS * slot(a);
      parity ^= 1;
      if (G) {
        pend = PEND_G;
        pend_g = G;
        pend_ldg = ldg;
        pend_goff = goff;
        pend_n = L.in;
      } else {
        pend = PEND_DOUT;
        pend_out = DOUT;
        pend_dh = DHprev;
      }
    }
  }

  // Whether the walk fuses net's last hidden layer (forward_backward): head_fuses_last, and the layout has a slot
  // for every warp.
  HEBM_BLOCK_FN bool fuses_last(Ctx& ctx, const BlockArgs<T>& a, const NetDesc& net) const {
    return head_fuses_last(a.prog, net, prec(a)) && a.lay.wslots >= ctx.nwarps();
  }

  // A head's last hidden layer jl, forward and backward in one pass over the block's rows (docs/CUDA_KERNELS.md
  // cut (e)): the delta of row o, dh * w_out, is formed in row o's own epilogue, so the warp that has just summed
  // row o goes on with row o's backward while its weights are still in registers. W is read once a step instead of
  // twice and no barrier separates the two; the price: every warp's rows add into a slot of their own (wslots =
  // warps), which backward_end adds. H only where given (traced: the energy, after the backward's exchange); DH
  // not stored (the deltas stay in registers). The result as backward's (DOUT times DHprev, or G).
  HEBM_BLOCK_FN void forward_backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H,
                                      const int* trow, T slope, int act, const T* dyw, T* DOUT, const T* DHprev,
                                      T* G, int ldg, int goff, const int* alpha_rows) const {
    const T* pp = nullptr;
    const T* dsc = nullptr;
    T* part = backward_begin(ctx, a, smem, nullptr, pp, dsc);
    int r0, r1;
    own_rows(a, jl, r0, r1);
    T* wp = smem + a.lay.wpart + ctx.warp() * C * ((a.prog.lin[jl].in + 3) / 4 * 4);
    HEBM_DISPATCH_ACT(act, A, (fused_rows<A>(ctx, a, smem, jl, r0, r1 - r0, X, ldx, H, trow, slope, dyw, wp)));
    backward_end(ctx, a, smem, jl, ctx.nwarps(), part, DOUT, DHprev, G, ldg, goff, alpha_rows);
  }

  // forward_backward's rows: forward_rows' fp32 row batches (the same lane map, inputs once per warp, R rows at a
  // time, one scatter butterfly), then each (row, chain) delta, rounded to the precision as backward_rows rounds
  // it, broadcast from its finishing lane by one shuffle and multiplied into the batch's weights (wr): the
  // backward's sums over the warp's rows in order, as backward_rows adds them, stored into the warp's slot wp.
  template <int A>
  HEBM_BLOCK_FN void fused_rows(Ctx& ctx, const BlockArgs<T>& a, const T* smem, int jl, int r0, int nrows,
                                const T* X, int ldx, T* H, const int* trow, T slope, const T* dyw, T* wp) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl], lane = ctx.lane(), pr = prec(a), ldi = (L.in + 3) / 4 * 4;
    const T* Ws = smem + a.lay.w[jl];
    const int k0 = lane_input(L.in, 0, 0, false, lane);
    T xr[C][2][4];
    load_inputs(ctx, L, X, ldx, inputs_vec(smem, X, ldx), 0, false, pr, xr);
    T bk[C][2][4];
    zero_sums(bk);
    constexpr int R = kBatchRows, NP = kBatchSums;  // forward_rows' batches
    constexpr int LG = kWarp / NP;                   // lanes per sum after the scatter
    int jbeg, jend;
    warp_rows(ctx, nrows, jbeg, jend);
    for (int i0 = jbeg; i0 < jend; i0 += R) {
      T acc[NP] = {};  // zeros
      Vec4<T> wr[R][2];
      row_batch<R>(ctx, L, Ws, ldw, k0, i0, jend, xr, acc, wr);
      const T sum = warp_sum_scatter<T, NP, Ctx>(ctx, acc);
      const int idx = lane / LG, t = idx / C, c = idx - t * C, jr = i0 + t;
      T d = T(0);
      if (lane % LG == 0 && idx < R * C && jr < jend)
        d = round_operand(forward_finish<A>(ctx, a, jl, r0 + jr, c, sum, H, nullptr, trow, slope, dyw), pr);
      HEBM_UNROLL
      for (int tb = 0; tb < R; ++tb) {
        T dv[C];  // row i0 + tb's deltas, from their finishing lanes (every lane: outside the branch below)
        HEBM_UNROLL
        for (int cb = 0; cb < C; ++cb) dv[cb] = ctx.shfl_idx(d, (tb * C + cb) * LG);
        if (i0 + tb < jend) {
          HEBM_UNROLL
          for (int m = 0; m < 2; ++m) add_sums(bk, m, dv, wr[tb][m]);
        }
      }
    }
    HEBM_UNROLL
    for (int m = 0; m < 2; ++m) {
      const int k = k0 + 128 * m;
      if (k < L.in) store_sums(ctx, wp, ldi, k, m, bk);
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
