// The CUDA fused latent sampler, written once as a "block program" over the SIMT primitive layer (simt.h): one
// thread block (or a 2-block cluster) owns a tile of chains that stays in shared memory through every step of
// every timestep. The program walk below (heads, ladders, the step, the timesteps) is shared by every path; the
// linear layers run on an engine:
//   - StagedEngine (v1, below): weights re-staged from global memory in chunks per layer, block-stride loops,
//     one thread per dot product. The fallback for programs the v2 engines do not take.
//   - WarpEngine (v2, warp_linear.h): all weights resident in shared memory for the whole launch (split by rows
//     over a 2-block cluster when one block's shared memory is too small), warps own output rows and lanes own
//     k-ranges with vector loads and a shuffle reduction, the backward reads the same tile with lanes owning input
//     columns.
// The same source runs on the GPU (DeviceCtx) and on the CPU lane by lane (csrc/cpu/simt_emulation.h), which is
// how machines without a GPU test the kernels' indexing, barriers and shuffles against the eager reference.
// Every shared-memory access goes through ctx.sh / ld4 (free on the GPU, checked in the emulation).
//
// Barriers per Langevin step (sync() on one block, on a cluster an exchange through mbarriers, WarpEngine::sync: a
// cluster-wide barrier): one per hidden layer forward,
// one per layer backward, one for the update (a block barrier also on a cluster: the update touches only the
// block's own copy of the chains); the forward of a head's last hidden layer ends in a block barrier also on a
// cluster when the engine's backward reads only the block's own rows (WarpEngine: block_head, the energy waits for
// the backward's exchange); a ladder adds one per conditional for its head transform and one per
// conditional for its elementwise gradient, a u-ladder on a cluster one per conditional to settle the pending
// gradient it reads, the trace one (two on a cluster: settle, end). LEBM (one head 100-200-200-1, Gaussian base):
// 5 per step on one block, 3 exchanges + 2 block barriers on a cluster (and per launch 2 cluster barriers: after the
// load, before the exit). Step k+1's Philox noise is drawn at the first barrier of step k (between the exchange's
// arrive and wait), into the other half of a double
// buffer the update reads. The energy (and a head's last hidden H, its only input) is computed only when traced.
#pragma once

#include <stdint.h>

#include "activations.h"
#include "macros.h"
#include "philox.h"
#include "program.h"
#include "schedule.h"
#include "simt.h"

#if defined(__CUDACC__)
#define HEBM_UNROLL _Pragma("unroll")
#else
#define HEBM_UNROLL
#endif

namespace hebm {
namespace core {

constexpr int kBlockMaxTile = 32;  // chains per block at most
constexpr int kBlockMaxJC = 64;    // weight rows staged per chunk at most (StagedEngine)

// Shared-memory layout of one block, in elements of T (offsets), computed on the host.
struct BlockLayout {
  int tile;   // chains per block
  int ws;     // staging area (elements; StagedEngine)
  int y, yc, g, z, gz, e, d0, d1, go, stage, trow;  // trow: int array [tile] stored in T-sized slots
  int noise;  // Philox normals of two steps: [2][tile][4 * ceil(D / 4)] (the update reads step k's half)
  int h[kMaxLinears], dh[kMaxLinears];
  // Resident weights (WarpEngine): block rank r of the cluster holds rows [r * rows[j], ...) of linear j at w[j],
  // row stride ldw[j] (a multiple of 4: vector loads); w[j] = -1 for linears read from global memory (the output
  // row of a head). Precision bf16 (a layout for float chains): the rows as packed bf16 k-pairs, ldw[j] in 32-bit
  // words = ceil(in / 8) x 4 (one 16-byte load: 8 weights), half the fp32 rows' bytes (WarpEngine::load).
  int w[kMaxLinears], ldw[kMaxLinears], rows[kMaxLinears];
  int part;     // cluster: [2 parities][cluster ranks][tile * max_width] partial sums of the backward
  int mbar;     // cluster: the walk's 2 exchange mbarriers (2 x 8 bytes, WarpEngine::sync), or -1
  int wpart;    // resident (WarpEngine): [wslots][tile][wld] the row-owner backward's per-warp partial sums, or -1
  int wslots;   // their count: warps when a head fuses its last hidden layer (head_fuses_last: every warp's rows),
                // else backward_warps(warps); 0 when not resident
  int wld;      // their row stride (max_width rounded up to 4)
  int warps;    // warps per block the layout was made for (the per-warp slots)
  int cluster;  // blocks per cluster (1: none)
  int total;    // elements
};

HEBM_HD int odd_stride(int n) { return n | 1; }

// The warps that run the row-owner backward (WarpEngine::backward_rows): at most one per scheduler (an SM's 4
// sub-partitions; warp w runs on scheduler w % 4), warps 0 .. n-1. Its per-warp slots and their sum are what grows
// with the warps (the weights, FMAs and shuffles are the same in total): the others wait at its named barrier.
constexpr int kBackwardWarps = 4;
HEBM_HD int backward_warps(int warps) { return warps < kBackwardWarps ? warps : kBackwardWarps; }

// Whether a head's last hidden layer runs its forward and backward in one pass over its rows on the resident
// engine (WarpEngine::forward_backward, docs/CUDA_KERNELS.md cut (e)): a head with a hidden layer whose inputs
// fit one register pass (256), at fp32 or tf32 (the bf16 rows are packed pairs or the tensor cores' forward).
HEBM_HD bool head_fuses_last(const ProgramDesc& p, const NetDesc& n, int precision) {
  return n.role == NET_HEAD && n.n_lin >= 2 && p.lin[n.first + n.n_lin - 2].in <= 256 &&
         precision != kPrecisionBf16;
}
HEBM_HD bool program_fuses_last(const ProgramDesc& p, int precision) {
  bool any = false;
  for (int i = 0; i < p.n_nets; ++i) any = any || head_fuses_last(p, p.nets[i], precision);
  return any;
}

// One rank's partial sums of a cluster backward (tile x max_width), padded to 16 bytes: each slot starts aligned.
HEBM_HD int part_slot(int tile, int max_width) { return (tile * max_width + 3) / 4 * 4; }

// Layout of the per-chain state (every path), then the staging area (ws > 0) or the resident weights (and the
// row-owner backward's per-warp partial sums: wslots, 4 or the launcher's 8 warps); precision
// (core::Precision) the resident weights' (bf16: packed pairs, see ldw).
inline BlockLayout block_layout(const ProgramDesc& p, int tile, int ws, bool resident = false, int cluster = 1,
                                int warps = 8, int precision = kPrecisionFp32) {
  BlockLayout L;
  L.tile = tile;
  L.ws = ws;
  L.cluster = cluster;
  L.warps = warps;
  int o = 0;
  auto take = [&](int n) {
    const int at = o;
    o += (n + 3) / 4 * 4;  // 4-element granules: every array starts 16-byte (float) / 32-byte (double) aligned
    return at;
  };
  L.y = take(tile * p.D);
  L.yc = take(tile * p.D);
  L.g = take(tile * p.D);
  L.z = take(tile * p.D);   // z = T(u) (u-parameterised ladder)
  L.gz = take(tile * p.D);
  L.e = take(tile);
  L.trow = take(tile);
  L.noise = take(2 * tile * 4 * ((p.D + 3) / 4));
  L.d0 = take(tile * p.max_width);
  L.d1 = take(tile * p.max_width);
  L.go = take(tile * p.max_width);
  for (int j = 0; j < p.n_lin; ++j) {
    L.h[j] = take(tile * p.lin[j].out);
    L.dh[j] = take(tile * p.lin[j].out);
  }
  L.part = cluster > 1 ? take(2 * cluster * part_slot(tile, p.max_width)) : -1;
  L.mbar = cluster > 1 ? take(4) : -1;  // 16 bytes (float) or 32 (double), 16-byte aligned
  L.wld = (p.max_width + 3) / 4 * 4;
  L.wslots = !resident ? 0 : program_fuses_last(p, precision) ? warps : backward_warps(warps);
  L.wpart = resident ? take(L.wslots * tile * L.wld) : -1;
  for (int j = 0; j < p.n_lin; ++j) {
    L.w[j] = -1;
    L.ldw[j] = resident && precision == kPrecisionBf16 ? (p.lin[j].in + 7) / 8 * 4 : (p.lin[j].in + 3) / 4 * 4;
    L.rows[j] = (p.lin[j].out + cluster - 1) / cluster;
  }
  if (resident) {
    for (int i = 0; i < p.n_nets; ++i) {
      const NetDesc& n = p.nets[i];
      for (int j = n.first; j < n.first + n.n_lin; ++j) {
        if (n.role == NET_HEAD && j == n.first + n.n_lin - 1) continue;  // the energy row: read from global
        L.w[j] = take(L.rows[j] * L.ldw[j]);
      }
    }
  }
  L.stage = take(ws);
  L.total = o;
  return L;
}

// Elements per chain (everything but the staging area and the weights), for choosing the tile on the host.
inline int block_elems_per_chain(const ProgramDesc& p) {
  int n = 5 * p.D + 2 + 3 * p.max_width + 8 * ((p.D + 3) / 4);
  for (int j = 0; j < p.n_lin; ++j) n += 2 * p.lin[j].out;
  return n;
}

// Staging area: enough for at least one odd-strided row of the widest layer (and up to kBlockMaxJC rows).
inline int block_stage_elems(const ProgramDesc& p, int rows) { return rows * odd_stride(p.max_width); }

template <typename T>
struct BlockArgs {
  ProgramDesc prog;
  ScheduleDesc sched;
  BlockLayout lay;
  const T* params;
  const T* y0;
  const T* cond;          // or null
  const int64_t* tsel;    // or null
  const T* noise;         // or null
  const int64_t* rng;     // [seed, offset] (read in the kernel: no host synchronisation), or null with noise
  T* out;
  T* trace;               // or null
  int64_t B;
  int precision = kPrecisionFp32;  // core::Precision (simt.h): the matmuls' precision, the launcher's kernel choice
  // precision bf16: the weights as packed bf16 k-pairs (tile_mma.h, bf16_pair_word; bf16_pair_words(prog) words,
  // 16-byte aligned), which the launcher fills before the kernel; else null
  const uint32_t* bf16_pairs = nullptr;
};

// Step k's Philox normals of the tile's valid rows, drawn ahead into half k & 1 of the noise buffer: the same
// normal4(seed, offset + k, row, group) the update drew itself before, so the stream is unchanged.
// (Plain values, not a pointer to the kernel's BlockArgs: taking the parameter's address would copy all of it to
// local memory, 9 KB of stack frame on sm_90.)
template <typename T>
struct NoiseJob {
  int D, tile, noise;  // the latent dimension, chains per block, the buffer's offset (BlockLayout::noise)
  T* smem;
  int64_t row0;
  int nvalid, k;
  uint64_t seed, offset;
};

template <typename T, class Ctx>
HEBM_BLOCK_FN void draw_noise(Ctx& ctx, const NoiseJob<T>& j) {
  const int groups = (j.D + 3) / 4;
  T* buf = j.smem + j.noise + (j.k & 1) * j.tile * 4 * groups;
  for (int idx = ctx.tid(); idx < j.nvalid * groups; idx += ctx.nthreads()) {
    const int r = idx / groups, gi = idx - r * groups;
    T xi[4];
    normal4<T>(j.seed, j.offset + (uint64_t)j.k, (uint64_t)(j.row0 + r), (uint64_t)gi, xi);
    const Vec4<T> v = {xi[0], xi[1], xi[2], xi[3]};
    ctx.st4(buf + idx * 4, v);
  }
}

// What every engine shares: the noise draw scheduled for the next barrier (block_step sets it).
template <typename T, class Ctx>
struct EngineJobs {
  mutable const NoiseJob<T>* job = nullptr;
  HEBM_BLOCK_FN void run_job(Ctx& ctx) const {
    if (job) {
      draw_noise<T, Ctx>(ctx, *job);
      job = nullptr;
    }
  }
};

// The members of an engine on one block whose results are never left pending (StagedEngine, TileEngine; WarpEngine
// on a cluster leaves a backward's partial sums pending for their consumer): barriers run the scheduled noise draw
// first, nothing to settle.
template <typename T, class Ctx>
struct LocalEngine : EngineJobs<T, Ctx> {
  // Whether the engine has forward_backward (a head's last hidden layer in one pass: WarpEngine, block_head).
  static constexpr bool kFusesLast = false;
  HEBM_BLOCK_FN bool leader() const { return true; }
  HEBM_BLOCK_FN void sync(Ctx& ctx) const {
    this->run_job(ctx);
    ctx.sync();
  }
  HEBM_BLOCK_FN void sync_local(Ctx& ctx) const { sync(ctx); }
  HEBM_BLOCK_FN void sync_cluster(Ctx& ctx) const { sync(ctx); }
  HEBM_BLOCK_FN void exit_barrier(Ctx&) const {}
  // Whether a layer's backward reads only the rows of its input delta that this block's own forward wrote (and
  // this block's weight rows): then the barrier between a head's last hidden forward and that layer's backward
  // may be sync_local (block_head). On one block every barrier is a block barrier either way; false here.
  HEBM_BLOCK_FN bool backward_reads_own_rows() const { return false; }
  HEBM_BLOCK_FN void load(Ctx&, const BlockArgs<T>&, T*) const {}
  HEBM_BLOCK_FN bool settle(Ctx&, const BlockArgs<T>&) const { return false; }
  HEBM_BLOCK_FN Vec4<T> pending_grad4(Ctx&, const BlockArgs<T>&, const T*, int, int) const {
    return Vec4<T>{T(0), T(0), T(0), T(0)};
  }
  HEBM_BLOCK_FN T pending_grad(Ctx&, const BlockArgs<T>&, const T*, int, int) const { return T(0); }
  HEBM_BLOCK_FN void drop_pending() const {}
};

// -alpha of row r's timestep: the factor of the heads' gradient in log p~ (per row: per-chain timesteps).
template <typename T, class Ctx>
HEBM_BLOCK_FN T neg_alpha(Ctx& ctx, const BlockArgs<T>& a, const int* trow, int r) {
  return -T(a.sched.alpha[ctx.sh(trow + r)]);
}

// A linear's epilogue on a row sum (the v2 engines' forward: WarpEngine's rows, TileEngine's GEMMs): output j of
// linear L for chain (row) r, with the bias, the time bias of r's timestep, the activation A and its derivative
// (times dyw[j] when given).
template <int A, typename T, class Ctx>
HEBM_BLOCK_FN void linear_act(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& L, int j, int r, T sum,
                              const int* trow, T slope, const T* dyw, T& y, T& dy) {
  T v = sum + (L.b >= 0 ? a.params[L.b + j] : T(0));
  if (L.tb >= 0) v += a.params[L.tb + (int64_t)ctx.sh(trow + r) * L.out + j];
  act_value_grad<A, T>(v, slope, y, dy);
  if (dyw) dy *= dyw[j];
}

// ----------------------------------------------------------------------------------------------------------------
// v1: weights staged through shared memory in chunks, block-stride loops, one thread per dot product.
template <typename T, class Ctx>
struct StagedEngine : LocalEngine<T, Ctx> {
  HEBM_BLOCK_FN explicit StagedEngine(Ctx&) {}

  // How many staged rows of stride ws fit the stage buffer (at most kBlockMaxJC), for the forward and the backward.
  static HEBM_BLOCK_FN int rows_per_chunk(const BlockArgs<T>& a, int ws) {
    const int c = a.lay.ws / ws;
    return c < kBlockMaxJC ? c : kBlockMaxJC;
  }

  // H[r][j] = act(X[r] . W[j] + b[j] (+ tb[t_r][j])) (H null: not stored); DH = act' (* dyw[j] when given).
  // One instantiation for every activation kind, dispatched per element in the epilogue (the loop is bound by the
  // staging loads, not by that branch): one copy of this body per kind spilled on sm_90 once there were 8 kinds
  // (docs/CUDA_KERNELS.md).
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope, int act, const T* dyw = nullptr) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int tile = a.lay.tile;
    const int ws = odd_stride(L.in);
    T* stage = smem + a.lay.stage;
    const int jc = rows_per_chunk(a, ws);
    const T* W = a.params + L.w;
    for (int j0 = 0; j0 < L.out; j0 += jc) {
      const int n = (L.out - j0) < jc ? (L.out - j0) : jc;
      for (int idx = ctx.tid(); idx < n * L.in; idx += ctx.nthreads()) {
        const int jj = idx / L.in, k = idx - jj * L.in;
        ctx.sh(stage + jj * ws + k) = W[(int64_t)(j0 + jj) * L.in + k];
      }
      ctx.sync();
      for (int item = ctx.tid(); item < tile * n; item += ctx.nthreads()) {
        const int r = item / n, jj = item - r * n, j = j0 + jj;
        T acc = L.b >= 0 ? a.params[L.b + j] : T(0);
        if (L.tb >= 0) acc += a.params[L.tb + (int64_t)ctx.sh(trow + r) * L.out + j];
        for (int k = 0; k < L.in; ++k) acc += ctx.sh(X + r * ldx + k) * ctx.sh(stage + jj * ws + k);
        T y, dy;
        HEBM_DISPATCH_ACT(act, A, (act_value_grad<A, T>(acc, slope, y, dy)));
        if (dyw) dy *= dyw[j];
        if (H) ctx.sh(H + r * L.out + j) = y;
        ctx.sh(DH + r * L.out + j) = dy;
      }
      if (j0 + jc < L.out) ctx.sync();  // the next chunk overwrites the stage (the walk syncs after the last)
    }
  }

  // With d_o = DIN[r][o]: DOUT[r][i] = (sum_o d_o W[o][i]) * (DHprev ? DHprev[r][i] : 1),
  // or, when G is given, G[r][goff + i] += (alpha ? -alpha_r : 1) * sum_o d_o W[o][i].
  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int tile = a.lay.tile;
    const int ws = odd_stride(L.out);
    T* stage = smem + a.lay.stage;
    const int ic = rows_per_chunk(a, ws);
    const T* W = a.params + L.w;
    for (int i0 = 0; i0 < L.in; i0 += ic) {
      const int n = (L.in - i0) < ic ? (L.in - i0) : ic;
      for (int idx = ctx.tid(); idx < n * L.out; idx += ctx.nthreads()) {
        const int o = idx / n, ii = idx - o * n;
        ctx.sh(stage + ii * ws + o) = W[(int64_t)o * L.in + i0 + ii];
      }
      ctx.sync();
      for (int item = ctx.tid(); item < tile * n; item += ctx.nthreads()) {
        const int r = item / n, ii = item - r * n, i = i0 + ii;
        T acc = T(0);
        for (int o = 0; o < L.out; ++o) acc += ctx.sh(DIN + r * L.out + o) * ctx.sh(stage + ii * ws + o);
        if (G) {
          ctx.sh(G + r * ldg + goff + i) += (alpha_rows ? neg_alpha<T, Ctx>(ctx, a, alpha_rows, r) : T(1)) * acc;
        } else {
          ctx.sh(DOUT + r * L.in + i) = DHprev ? acc * ctx.sh(DHprev + r * L.in + i) : acc;
        }
      }
      if (i0 + ic < L.in) ctx.sync();
    }
  }

  // E[r] += X[r] . w + b (a head's output row, from global memory).
  HEBM_BLOCK_FN void energy(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& Lo, const T* X, int ldx, T* E) const {
    const T* w = a.params + Lo.w;
    const T b = Lo.b >= 0 ? a.params[Lo.b] : T(0);
    for (int r = ctx.tid(); r < a.lay.tile; r += ctx.nthreads()) {
      T s = T(0);
      for (int k = 0; k < Lo.in; ++k) s += ctx.sh(X + r * ldx + k) * w[k];
      ctx.sh(E + r) += s + b;
    }
  }
};

// ----------------------------------------------------------------------------------------------------------------
// The program walk, shared by every engine.

// From DIN (the delta of the output of linear jtop) down to the net's input:
// G[r][goff + i] += (alpha_rows ? -alpha_r : 1) * dOut/dx. The deltas alternate between d0 and d1, the first
// written into bufs[nb] (nb = 1 when DIN is d0: after a fused last hidden layer, block_head).
// With energy_after_first (a head whose last hidden forward ended in a block barrier only, block_head): the head's
// energy E[r] += h[jtop][r] . w_out + b right after the first backward's barrier.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_backward_chain(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, const NetDesc& net, T* smem,
                                        int jtop, const T* DIN, T* G, int ldg,
                                        const int* alpha_rows, bool energy_after_first = false, int nb = 0) {
  const BlockLayout& lay = a.lay;
  T* bufs[2] = {smem + lay.d0, smem + lay.d1};
  for (int j = jtop; j >= net.first; --j) {
    if (j > net.first) {
      eng.backward(ctx, a, smem, j, DIN, bufs[nb], smem + lay.dh[j - 1], nullptr, 0, 0, nullptr);
      DIN = bufs[nb];
      nb ^= 1;
    } else {
      eng.backward(ctx, a, smem, j, DIN, nullptr, nullptr, G, ldg, net.in_off, alpha_rows);
    }
    eng.sync(ctx);
    if (energy_after_first && j == jtop)
      eng.energy(ctx, a, a.prog.lin[net.first + net.n_lin - 1], smem + lay.h[jtop], a.prog.lin[jtop].out,
                 smem + lay.e);
  }
}

// One head: E[r] += energy; G[r][slice] += -alpha_r * dE/dz.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_INLINE void block_head(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, const NetDesc& net, T* smem,
                                  const T* Z, T* G, const int* trow) {
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = a.prog.D;
  const T* X = Z + net.in_off;
  int ldx = D;
  const LinearDesc& Lo = a.prog.lin[net.first + net.n_lin - 1];
  const T* w = a.params + Lo.w;
  // On an engine whose backward reads only this block's own rows (WarpEngine's row owner), the barrier after the
  // head's last hidden forward is a block barrier also on a cluster: that backward reads this block's rows of W
  // and of the delta dh * w_out, both written by this block. Only the energy reads every row of h[last] (stored by
  // the peers), and only the trace reads the energy:
  //   - untraced, h[last] is not stored at all (nothing reads it, on any engine: every forward takes a null H)
  //     and no energy is computed;
  //   - traced, the energy waits for the backward's exchange (every peer's H stores precede its arrive
  //     there); it is still done before the barrier ahead of every read of E (the next backward's, or the trace's
  //     settle barrier). No peer overwrites h[last] before it is read: the next store into it is the next step's
  //     forward of this layer, and the trace ends in an exchange (block_step) after every energy.
  // The parity-alternated partial sums that backward stores into the peers were last read before the previous
  // backward's exchange (every backward is followed by one).
  // Fused (WarpEngine, head_fuses_last): the last hidden layer's forward and backward in one pass
  // (forward_backward), then its exchange (the backward's: the energy after it, as below) and the layers under it.
  const int last = net.first + net.n_lin - 2;
  const bool traced = a.trace != nullptr;
  const bool own = eng.backward_reads_own_rows();
  const bool local_last = own && net.n_lin >= 2;
  for (int j = net.first; j < net.first + net.n_lin - 1; ++j) {
    const LinearDesc& L = a.prog.lin[j];
    const T param = L.param >= 0 ? a.params[L.param] : T(0);  // the activation's slope / alpha / beta
    // the last hidden layer's delta dh * w_out is formed in its forward's epilogue (not in the backward's loop)
    const T* dyw = j == last ? w : nullptr;
    T* H = j == last && !traced ? nullptr : smem + lay.h[j];
    if constexpr (Eng::kFusesLast) {
      if (j == last && eng.fuses_last(ctx, a, net)) {
        const bool into_g = j == net.first;  // one hidden layer: straight into G
        eng.forward_backward(ctx, a, smem, j, X, ldx, H, trow, param, L.act, w, into_g ? nullptr : smem + lay.d0,
                             into_g ? nullptr : smem + lay.dh[j - 1], into_g ? G : nullptr, D, net.in_off,
                             into_g ? trow : nullptr);
        eng.sync(ctx);
        if (traced) eng.energy(ctx, a, Lo, smem + lay.h[j], L.out, smem + lay.e);
        if (!into_g)
          block_backward_chain<T, Ctx, Eng>(ctx, eng, a, net, smem, j - 1, smem + lay.d0, G, D, trow, false, 1);
        return;
      }
    }
    eng.forward(ctx, a, smem, j, X, ldx, H, smem + lay.dh[j], trow, param, L.act, dyw);
    if (j == last && local_last)
      eng.sync_local(ctx);
    else
      eng.sync(ctx);
    X = smem + lay.h[j];
    ldx = L.out;
  }
  // (read later by the trace, after at least one more barrier)
  if (traced && !local_last) eng.energy(ctx, a, Lo, X, ldx, smem + lay.e);
  if (net.n_lin == 1) {
    for (int idx = ctx.tid(); idx < tile * net.in_dim; idx += ctx.nthreads()) {
      const int r = idx / net.in_dim, i = idx - r * net.in_dim;
      ctx.sh(G + r * D + net.in_off + i) += neg_alpha<T, Ctx>(ctx, a, trow, r) * w[i];
    }
    eng.sync(ctx);
    return;
  }
  // the delta of the last hidden layer is dh * w_out (formed by its forward)
  block_backward_chain<T, Ctx, Eng>(ctx, eng, a, net, smem, last, smem + lay.dh[last], G, D, trow,
                                    traced && local_last);
}

// ----------------------------------------------------------------------------------------------------------------
// The Gaussian ladder: conditionals mu_l, sigma_l = MLP_l(z_{l-1}), layers top first (csrc/core/program.h).

// Forward of a conditional on its parent rows X (ld D): h[last] holds mu in [0, d) and sigma in [d, 2d) of each
// row (ld 2d), dh[last] dmu/dmu_raw and dsigma/dell_raw. With Zu (u-parameterisation) also the child's
// z = mu + sigma * u into Zu.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_ladder_forward(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, const NetDesc& net, T* smem,
                                        const T* X, const int* trow, T* Zu) {
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = a.prog.D;
  int ldx = D;
  for (int j = net.first; j < net.first + net.n_lin - 1; ++j) {
    const LinearDesc& L = a.prog.lin[j];
    const T param = L.param >= 0 ? a.params[L.param] : T(0);  // the activation's slope / alpha / beta
    eng.forward(ctx, a, smem, j, X, ldx, smem + lay.h[j], smem + lay.dh[j], trow, param, L.act);
    eng.sync(ctx);
    X = smem + lay.h[j];
    ldx = L.out;
  }
  const int jo = net.first + net.n_lin - 1;
  T* O = smem + lay.h[jo];
  T* DO = smem + lay.dh[jo];
  eng.forward(ctx, a, smem, jo, X, ldx, O, DO, trow, T(0), ACT_IDENTITY);
  eng.sync(ctx);
  const int d = net.out_dim / 2;
  const T sigma_min = a.params[a.prog.base_param];
  const bool clamp = a.prog.soft_clamp != 0;
  const T* Y = smem + lay.y;
  for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
    const int r = idx / d, j = idx - r * d;
    T* o = O + r * 2 * d;
    T* g = DO + r * 2 * d;
    T mu, sigma, dmu, dsigma;
    ladder_head<T>(ctx.sh(o + j), ctx.sh(o + d + j), sigma_min, clamp, mu, sigma, dmu, dsigma);
    ctx.sh(o + j) = mu;
    ctx.sh(o + d + j) = sigma;
    ctx.sh(g + j) = dmu;
    ctx.sh(g + d + j) = dsigma;
    if (Zu) ctx.sh(Zu + r * D + net.out_off + j) = mu + sigma * ctx.sh(Y + r * D + net.out_off + j);
  }
  eng.sync(ctx);
}

// Backward of a conditional from GO (gradient w.r.t. (mu_raw, ell_raw), ld 2d) into G[r][net.in_off + i].
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_ladder_backward(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, const NetDesc& net, T* smem,
                                         T* G) {
  block_backward_chain<T, Ctx, Eng>(ctx, eng, a, net, smem, net.first + net.n_lin - 1, smem + a.lay.go, G,
                                    a.prog.D, nullptr);
}

// u-parameterisation: Z = T(Y) top-down.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_ladder_u_forward(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, T* smem, const int* trow) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* Z = smem + lay.z;
  const T sigma_top = a.params[p.base_param + 1];
  const int d0 = p.layer_dim[0];
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    ctx.sh(Z + r * D + j) = sigma_top * ctx.sh(Y + r * D + j);
  }
  eng.sync(ctx);
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    block_ladder_forward<T, Ctx, Eng>(ctx, eng, a, net, smem, Z + net.in_off, trow, Z);
  }
}

// u-parameterisation: G += -Y (the N(0, I) base) + the pull-back of GZ through T.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_ladder_u_backward(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, T* smem) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* G = smem + lay.g;
  T* GZ = smem + lay.gz;
  T* GO = smem + lay.go;
  eng.settle(ctx, a);  // the heads' gradient into GZ (a cluster leaves it pending); read after the barrier below
  for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) ctx.sh(G + idx) -= ctx.sh(Y + idx);
  eng.sync(ctx);
  for (int i = p.n_layers - 2; i >= 0; --i) {
    const NetDesc& net = p.nets[i];
    if (eng.settle(ctx, a)) eng.sync(ctx);  // the previous conditional's gradient into GZ, read below
    const int jo = net.first + net.n_lin - 1, d = net.out_dim / 2;
    const T* O = smem + lay.h[jo];
    const T* DO = smem + lay.dh[jo];
    for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
      const int r = idx / d, j = idx - r * d, c = r * D + net.out_off + j;
      const T gz = ctx.sh(GZ + c);
      ctx.sh(G + c) += gz * ctx.sh(O + r * 2 * d + d + j);
      ctx.sh(GO + r * 2 * d + j) = gz * ctx.sh(DO + r * 2 * d + j);
      ctx.sh(GO + r * 2 * d + d + j) = gz * ctx.sh(Y + c) * ctx.sh(DO + r * 2 * d + d + j);
    }
    eng.sync(ctx);
    block_ladder_backward<T, Ctx, Eng>(ctx, eng, a, net, smem, GZ);
  }
  const T sigma_top = a.params[p.base_param + 1];
  const int d0 = p.layer_dim[0];
  if (eng.settle(ctx, a)) eng.sync(ctx);
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    ctx.sh(G + r * D + j) += sigma_top * ctx.sh(GZ + r * D + j);
  }
  eng.sync(ctx);
}

// z-parameterisation: G += grad of the ladder's log p(z).
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_FN void block_ladder_z_grad(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, T* smem, const int* trow) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* G = smem + lay.g;
  T* GO = smem + lay.go;
  const T sigma_top = a.params[p.base_param + 1];
  const T inv_top2 = T(1) / (sigma_top * sigma_top);
  const int d0 = p.layer_dim[0];
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    ctx.sh(G + r * D + j) -= inv_top2 * ctx.sh(Y + r * D + j);
  }
  // (no barrier: the conditionals below touch G only in rows' child layers, and in parents after barriers)
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    block_ladder_forward<T, Ctx, Eng>(ctx, eng, a, net, smem, Y + net.in_off, trow, nullptr);
    const int jo = net.first + net.n_lin - 1, d = net.out_dim / 2;
    const T* O = smem + lay.h[jo];
    const T* DO = smem + lay.dh[jo];
    for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
      const int r = idx / d, j = idx - r * d, c = r * D + net.out_off + j;
      const T inv_s = T(1) / ctx.sh(O + r * 2 * d + d + j);
      const T eps = (ctx.sh(Y + c) - ctx.sh(O + r * 2 * d + j)) * inv_s;
      ctx.sh(G + c) -= eps * inv_s;
      ctx.sh(GO + r * 2 * d + j) = eps * inv_s * ctx.sh(DO + r * 2 * d + j);
      ctx.sh(GO + r * 2 * d + d + j) = (eps * eps - T(1)) * inv_s * ctx.sh(DO + r * 2 * d + d + j);
    }
    eng.sync(ctx);
    block_ladder_backward<T, Ctx, Eng>(ctx, eng, a, net, smem, G);
  }
}

// One Langevin step of the whole tile; k is the rows' global step index. On entry G (and GZ) are zero.
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_INLINE void block_step(Ctx& ctx, const Eng& eng, const BlockArgs<T>& a, T* smem, int64_t row0, int nvalid,
                                  int k, const int* trow, uint64_t seed, uint64_t offset) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  T* Y = smem + lay.y;
  T* YC = smem + lay.yc;
  T* G = smem + lay.g;
  T* E = smem + lay.e;
  const bool philox = a.noise == nullptr;
  // step k + 1's noise, drawn at this step's first barrier (its arrive-wait window on a cluster)
  const NoiseJob<T> next = {D, tile, lay.noise, smem, row0, nvalid, k + 1, seed, offset};
  if (philox) eng.job = &next;
  // heads read z (= y, or T(u) for the u-parameterised ladder) and accumulate -alpha dE/dz into GZ
  const T* Zp = Y;
  T* GZp = G;
  if (p.base == BASE_LADDER_U) {
    block_ladder_u_forward<T, Ctx, Eng>(ctx, eng, a, smem, trow);
    Zp = smem + lay.z;
    GZp = smem + lay.gz;
  }
  for (int i = 0; i < p.n_nets; ++i)
    if (p.nets[i].role == NET_HEAD) block_head<T, Ctx, Eng>(ctx, eng, a, p.nets[i], smem, Zp, GZp, trow);
  if (p.base == BASE_LADDER_Z) {
    block_ladder_z_grad<T, Ctx, Eng>(ctx, eng, a, smem, trow);
  } else if (p.base == BASE_LADDER_U) {
    block_ladder_u_backward<T, Ctx, Eng>(ctx, eng, a, smem);
  }
  // The Gaussian base's gradient -y / sigma^2 is added where the gradient is read (no pass of its own).
  const T sb = p.base == BASE_GAUSSIAN ? -a.params[p.base_param] : T(0);
  const bool per_chain = a.tsel != nullptr;
  eng.run_job(ctx);  // (a program without a barrier before here)
  if (a.trace) {
    // (both barriers cluster-wide: the last one also orders the heads' energies, which read h[last] of every
    // block, before the peers' next forward stores into it: block_head)
    if (eng.settle(ctx, a)) eng.sync(ctx);
    for (int r = ctx.tid(); r < nvalid; r += ctx.nthreads()) {
      if (per_chain && k >= a.sched.K[ctx.sh(trow + r)]) continue;
      T s = T(0);
      for (int d = 0; d < D; ++d) {
        const T g = ctx.sh(G + r * D + d) + sb * ctx.sh(Y + r * D + d);
        s += g * g;
      }
      if (eng.leader()) {
        T* tr = a.trace + ((int64_t)k * a.B + row0 + r) * 2;
        tr[0] = ctx.sh(E + r);
        tr[1] = detail::sqrt_(s);
      }
    }
    eng.sync(ctx);
  }
  // The update; the same thread then clears the gradient it read (and E), so the next step starts from zero
  // without a pass of its own.
  const int groups = (D + 3) / 4;
  const bool vec = D % 4 == 0;  // rows (and the arrays, block_layout) start 16-byte aligned
  const T* noise_k = smem + lay.noise + (k & 1) * tile * 4 * groups;
  for (int idx = ctx.tid(); idx < tile * groups; idx += ctx.nthreads()) {
    const int r = idx / groups, gi = idx - r * groups;
    const bool active = r < nvalid && (!per_chain || k < a.sched.K[ctx.sh(trow + r)]);
    if (active) {
      const StepCoeffs<T> c = step_coeffs<T>(a.sched, ctx.sh(trow + r));
      const int64_t b = row0 + r;
      T xi[4];
      if (a.noise) {
        HEBM_UNROLL
        for (int q = 0; q < 4; ++q) {
          const int d = 4 * gi + q;
          xi[q] = d < D ? a.noise[((int64_t)k * a.B + b) * D + d] : T(0);
        }
      } else {  // drawn ahead (draw_noise) by this same thread: idx = r * groups + gi
        const Vec4<T> v = ctx.ld4(noise_k + idx * 4);
        xi[0] = v.x;
        xi[1] = v.y;
        xi[2] = v.z;
        xi[3] = v.w;
      }
      if (vec) {  // 16-byte accesses: a thread's four scalars at stride 4 would conflict 4-way across the warp
        const int o = r * D + 4 * gi;
        Vec4<T> y = ctx.ld4(Y + o);
        const Vec4<T> yc = ctx.ld4(YC + o), g0 = ctx.ld4(G + o);
        // plus the gradient a cluster's last backward left pending (the two blocks' partial sums)
        const Vec4<T> gp = eng.pending_grad4(ctx, a, G, r, 4 * gi);
        const Vec4<T> g = {g0.x + gp.x, g0.y + gp.y, g0.z + gp.z, g0.w + gp.w};
        y.x = langevin_update<T>(y.x, yc.x, g.x + sb * y.x, xi[0], c.c1, c.c2, c.h, c.n);
        y.y = langevin_update<T>(y.y, yc.y, g.y + sb * y.y, xi[1], c.c1, c.c2, c.h, c.n);
        y.z = langevin_update<T>(y.z, yc.z, g.z + sb * y.z, xi[2], c.c1, c.c2, c.h, c.n);
        y.w = langevin_update<T>(y.w, yc.w, g.w + sb * y.w, xi[3], c.c1, c.c2, c.h, c.n);
        ctx.st4(Y + o, y);
      } else {
        HEBM_UNROLL
        for (int q = 0; q < 4; ++q) {
          const int d = 4 * gi + q;
          if (d < D) {
            const int o = r * D + d;
            const T y = ctx.sh(Y + o);
            const T g = ctx.sh(G + o) + eng.pending_grad(ctx, a, G, r, d);
            ctx.sh(Y + o) = langevin_update<T>(y, ctx.sh(YC + o), g + sb * y, xi[q], c.c1, c.c2, c.h, c.n);
          }
        }
      }
    }
    if (vec) {
      const Vec4<T> zero = {T(0), T(0), T(0), T(0)};
      ctx.st4(G + r * D + 4 * gi, zero);
      if (p.base == BASE_LADDER_U) ctx.st4(smem + lay.gz + r * D + 4 * gi, zero);
    } else {
      HEBM_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int d = 4 * gi + q;
        if (d < D) {
          ctx.sh(G + r * D + d) = T(0);
          if (p.base == BASE_LADDER_U) ctx.sh(smem + lay.gz + r * D + d) = T(0);
        }
      }
    }
  }
  for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) ctx.sh(E + r) = T(0);
  eng.drop_pending();
  eng.sync_local(ctx);
}

// The whole program for the tile of chains [tile_index * tile, ... + tile), on engine Eng (a cluster's blocks
// all run it for the same tile).
template <typename T, class Ctx, class Eng>
HEBM_BLOCK_INLINE void block_program(Ctx& ctx, const BlockArgs<T>& a, T* smem, int64_t tile_index) {
  const ScheduleDesc& S = a.sched;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = a.prog.D;
  const Eng eng(ctx);
  const int64_t row0 = tile_index * tile;
  const int nvalid = (int)((a.B - row0) < tile ? (a.B - row0) : tile);
  T* Y = smem + lay.y;
  T* YC = smem + lay.yc;
  int* trow = reinterpret_cast<int*>(smem + lay.trow);
  const uint64_t seed = a.rng ? (uint64_t)a.rng[0] : 0;
  const uint64_t offset = a.rng ? (uint64_t)a.rng[1] : 0;

  // Zero the tile (padded rows stay finite, gradients start at zero), then load the chains and the weights.
  for (int idx = ctx.tid(); idx < lay.total; idx += ctx.nthreads()) ctx.sh(smem + idx) = T(0);
  ctx.sync();
  for (int idx = ctx.tid(); idx < nvalid * D; idx += ctx.nthreads()) {
    ctx.sh(Y + idx) = a.y0[row0 * D + idx];
    ctx.sh(YC + idx) = (a.cond ? a.cond : a.y0)[row0 * D + idx];
  }
  eng.load(ctx, a, smem);
  if (a.tsel) {
    for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) {
      int t = r < nvalid ? (int)a.tsel[row0 + r] : 0;
      t = t < 0 ? 0 : (t >= S.T ? S.T - 1 : t);  // validated by the caller; the clamp keeps a bad value in bounds
      ctx.sh(trow + r) = t;
    }
  }
  if (!a.noise) {  // the first step's noise (each step draws the next one's ahead)
    const NoiseJob<T> first = {D, tile, lay.noise, smem, row0, nvalid, 0, seed, offset};
    draw_noise<T, Ctx>(ctx, first);
  }
  eng.sync_cluster(ctx);  // (the weights and, on a cluster, the init of the exchanges' mbarriers)

  // One call site of block_step (inlined: no call boundary for the values live across it): the T stages
  // top down with a shared time per stage, or (tsel) one stage of per-chain times, each row stepping while
  // k < K[its t].
  const int stages = a.tsel ? 1 : S.T;
  int k = 0;
  for (int s = 0; s < stages; ++s) {
    const int t = S.T - 1 - s;
    if (!a.tsel) {
      for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) ctx.sh(trow + r) = t;
      eng.sync(ctx);
    }
    const int steps = a.tsel ? S.max_steps : S.K[t];
    for (int i = 0; i < steps; ++i, ++k) {
      if (a.tsel) {
        bool any = false;  // uniform: every thread reads the same rows
        for (int r = 0; r < nvalid; ++r) any = any || k < S.K[ctx.sh(trow + r)];
        if (!any) break;
      }
      block_step<T, Ctx, Eng>(ctx, eng, a, smem, row0, nvalid, k, trow, seed, offset);
    }
    if (!a.tsel) {
      const T dt = T(S.d[t]);
      for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) {
        const T y = ctx.sh(Y + idx) * dt;
        ctx.sh(Y + idx) = y;
        ctx.sh(YC + idx) = y;
      }
    } else {
      for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads())
        ctx.sh(Y + idx) *= T(S.d[ctx.sh(trow + idx / D)]);
    }
    eng.sync(ctx);
  }
  if (eng.leader())
    for (int idx = ctx.tid(); idx < nvalid * D; idx += ctx.nthreads()) a.out[row0 * D + idx] = ctx.sh(Y + idx);
  eng.exit_barrier(ctx);
}

}  // namespace core
}  // namespace hebm
