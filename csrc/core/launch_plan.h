// Which path of the CUDA latent sampler runs a call, from B, the program's size and the device's properties.
// Host code, shared by the CUDA launcher (real device properties) and the CPU emulation (an H200's by default), so
// the tests see the decisions the GPU will make.
//   PATH_RESIDENT (v2): every weight of the program resident in one block's shared memory, 1-4 chains per block.
//   PATH_CLUSTER  (v2): the same with each layer's rows split over a 2- or 4-block cluster (sm_90 and newer; the
//                       cluster size by cluster_step_clk below).
//   PATH_STREAMED (v2): every layer's rows streamed from L2 in chunks through a double-buffered cp.async stage
//                       (streamed_linear.h; sm_80 and newer), when the weights fit neither of the above.
//   PATH_STAGED   (v1): weights staged per layer in chunks; taken only when no v2 path fits, with the reason.
//   PATH_THROUGHPUT (v2, large B): persistent blocks over tiles of up to 32 chains, register-tiled GEMMs on
//                 weight panels staged from L2 (csrc/core/tile_linear.h); taken when B is more than one wave of
//                 the latency paths (B > SMs x 4 chains) and a tile of at least 4 chains fits (tf32 / bf16: its
//                 tensor-core GEMM, tile_mma.h, tiles of 16 or 32 chains).
// Precision tf32 / bf16 runs on the throughput path and on the two resident latency paths (WarpEngine: operands
// rounded, bf16 weights resident as packed pairs, half the bytes), chosen by B as fp32 is; the streamed and
// staged paths are fp32 only, so a reduced-precision program that fits neither resident nor a cluster takes the
// throughput path at any B.
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "block_sampler.h"
#include "streamed_linear.h"
#include "tile_linear.h"
#include "warp_linear.h"

namespace hebm {
namespace core {

enum LatentPath : int { PATH_STAGED = 0, PATH_RESIDENT = 1, PATH_CLUSTER = 2, PATH_STREAMED = 3, PATH_THROUGHPUT = 4 };

struct DeviceProps {
  int sms;          // multiprocessors
  int smem_optin;   // bytes of shared memory one block may opt in to
  int cc_major;     // compute capability (cp.async from 8, clusters from 9)
};

inline DeviceProps h200_props() { return DeviceProps{132, 232448, 9}; }

struct LaunchPlan {
  int path;
  int tile;        // chains per block (per cluster on PATH_CLUSTER)
  int cluster;     // blocks per cluster
  int threads;     // per block
  int64_t tiles;   // tiles of chains
  int64_t blocks;  // blocks launched: tiles * cluster, or (PATH_THROUGHPUT, persistent) min(tiles, SMs)
  BlockLayout lay;
  int64_t smem_bytes;
  char why[400];   // PATH_STAGED: why the v2 paths do not take the program
};

constexpr int kWarpThreads = 256;   // 8 warps: rows of a 200-wide layer are 25 per warp
constexpr int kStagedThreads = 256;
constexpr int kStreamL2Share = 3;   // streamed: about sms / 3 blocks saturate the L2 (see want_streamed)

// The weights a v2 path keeps resident (elements of 4 bytes for float chains, with the row padding), over
// `cluster` blocks.
inline int64_t resident_weight_elems(const ProgramDesc& p, int cluster, int precision = kPrecisionFp32) {
  const BlockLayout L = block_layout(p, 1, 0, true, cluster, 8, precision);
  int64_t n = 0;
  for (int j = 0; j < p.n_lin; ++j)
    if (L.w[j] >= 0) n += int64_t(L.rows[j]) * L.ldw[j];
  return n;
}

// The planner's model of one Langevin step of a cluster block (clock cycles, H200; docs/CUDA_KERNELS.md, "the
// cluster size"): what differs between cluster sizes for the same B (cs = 1: the resident path, its barriers
// block barriers). Per resident linear: its weights read twice (forward, backward) at 128 B per clock (the
// precision's bytes: bf16 rows are half the fp32 rows, BlockLayout::ldw); the row-owner backward's per-warp partial sums written and read back
// (2 x backward_warps x C x in floats: 4 of the launcher's 8 warps) and this rank's slot stored into the
// consumer blocks (G: all CS; DOUT: one); the forward's epilogue stores of H into every block (one instruction per
// batch of rows and block); one exchange per backward and per forward (WarpEngine::sync: the mbarriers' release
// ~250 clk after the last warp's arrive, DSMEM one way + a poll, on 2 and 4 blocks alike; each warp's 2 or 4
// remote arrives are a few clk), but a block barrier (~100 clk) after
// the forward of a head's last hidden layer, which (untraced, the default modelled here) stores only its DH, in
// this block (block_head: its row-owner backward reads only the block's own rows; only the traced energy reads
// that H); fused with its backward (head_fuses_last: WarpEngine::forward_backward, docs/CUDA_KERNELS.md cut (e))
// that layer's weights are read once, no barrier and no store follows its forward, and its per-warp partial sums
// are every warp's (8, not 4). The FMA work per SM is the same (C x rows per block is B / clusters x out / CS
// either way) and is left out.
inline double cluster_step_clk(const ProgramDesc& p, int C, int cs, int warps = 8, int precision = kPrecisionFp32) {
  const BlockLayout L = block_layout(p, C, 0, true, cs, warps, precision);
  double clk = 0;
  for (int j = 0; j < p.n_lin; ++j) {
    if (L.w[j] < 0) continue;
    const LinearDesc& l = p.lin[j];
    const double rows = L.rows[j], in = l.in;
    bool first = false;      // its backward writes G (a net's first linear)
    bool local_fwd = false;  // a head's last hidden layer (block_head: sync_local, no H stores untraced)
    bool fused = false;      // ... with its forward and backward in one pass (WarpEngine::forward_backward)
    for (int n = 0; n < p.n_nets; ++n) {
      const NetDesc& net = p.nets[n];
      first = first || net.first == j;
      const bool last = net.role == NET_HEAD && net.n_lin >= 2 && j == net.first + net.n_lin - 2;
      local_fwd = local_fwd || last;
      fused = fused || (last && head_fuses_last(p, net, precision));
    }
    const double exchange = cs > 1 ? 250 : 100;  // one block: block barriers
    const int R = C <= 2 ? 8 : 2;  // WarpEngine::forward_rows's rows per batch
    const double batches = double(((int(rows) + warps - 1) / warps + R - 1) / R * warps);
    clk += (fused ? 1 : 2) * rows * L.ldw[j] * 4 / 128                            // weights: forward + backward
           + 2.0 * (fused ? warps : backward_warps(warps)) * C * in * 4 / 128  // per-warp slots: stored, read back
           + C * in * 4 / 128 * (first ? cs : 1)  // the rank slot into the consumer blocks
           + (fused ? 0 : batches * (local_fwd ? 1 : cs))  // the forward's H stores into every block (or DH)
           + (fused ? 0 : local_fwd ? 100 : exchange) + exchange;  // the forward's and the backward's barrier
  }
  return clk;
}

// path_request: -1 choose, else the path to take (the emulation tests force each one); tile_request: 0 choose.
// cluster_request: PATH_CLUSTER's blocks per cluster (2 or 4; 0 choose); warps: per block in the layout (the
// launcher's 8; the emulation runs other block sizes).
// precision (core::Precision): tf32 / bf16 choose by B as fp32 does between the throughput path (its tensor-core
// GEMM, tiles of 16 or 32 chains) and the resident / cluster paths (WarpEngine's rounded operands, bf16 weights
// at half the bytes, so the layouts and cluster_step_clk count the precision's bytes); the streamed and staged
// paths are fp32 only: a reduced-precision program that fits neither resident nor a cluster takes the throughput
// path at any B, with P.tile = 0 when not even 16 chains fit (the callers report it, naming the precision).
inline LaunchPlan plan_launch(const ProgramDesc& p, int64_t B, const DeviceProps& d, int elem, int path_request = -1,
                              int tile_request = 0, int cluster_request = 0, int warps = kWarpThreads / 32,
                              int precision = kPrecisionFp32) {
  LaunchPlan P;
  P.why[0] = 0;
  P.threads = kWarpThreads;
  const int64_t budget = d.smem_optin;
  auto want = [&](int blocks_per_tile) {
    // chains per block so that one wave of tiles covers B: the latency path keeps every chain on its own SM
    const int64_t tiles_per_wave = d.sms / blocks_per_tile > 0 ? d.sms / blocks_per_tile : 1;
    int64_t c = (B + tiles_per_wave - 1) / tiles_per_wave;
    c = c < 1 ? 1 : (c > kWarpMaxChains ? kWarpMaxChains : c);
    return tile_request > 0 ? tile_request : int(c);
  };
  auto make = [&](int path, int c, int cs) {
    P.path = path;
    P.tile = c;
    P.cluster = cs;
    P.lay = block_layout(p, c, 0, true, cs, warps, precision);
    P.tiles = (B + c - 1) / c;
    P.blocks = P.tiles * cs;
    P.smem_bytes = int64_t(P.lay.total) * elem;
    return P.smem_bytes <= budget;
  };
  // Streamed: every block reads every weight from L2 twice per step, so the L2's bandwidth is shared by the blocks
  // that stream: more chains per block (fewer blocks) until about sms / kStreamL2Share blocks run, where the L2
  // (~5.5 TB/s) stops being the limit and one SM's L2 port (~64 B/clk, ~127 GB/s) is (docs/CUDA_KERNELS.md).
  auto want_streamed = [&]() {
    const int64_t blocks = d.sms / kStreamL2Share > 0 ? d.sms / kStreamL2Share : 1;
    int64_t c = (B + blocks - 1) / blocks;
    c = c < 1 ? 1 : (c > kWarpMaxChains ? kWarpMaxChains : c);
    return tile_request > 0 ? tile_request : int(c);
  };
  // Stages of kStreamStageBytes, smaller when the budget is tight, never less than one row of the widest layer.
  const int max_ldw = streamed_max_ldw(p);
  auto make_streamed = [&](int c, bool forced) {
    const int state = block_layout(p, c, 0).total + streamed_part_elems(c, p.max_width);
    int stage = kStreamStageBytes / elem;
    const int64_t room = (budget / elem - state) / 2 / 4 * 4;
    if (!forced && room < stage) stage = int(room);
    if (stage < max_ldw) stage = max_ldw;
    P.path = PATH_STREAMED;
    P.tile = c;
    P.cluster = 1;
    P.lay = streamed_layout(p, c, stage);
    P.tiles = (B + c - 1) / c;
    P.blocks = P.tiles;
    P.smem_bytes = int64_t(P.lay.total) * elem;
    return P.smem_bytes <= budget;
  };
  // Large B: the latency paths would run more than one wave of blocks, the step is compute-bound, the
  // throughput path's register-tiled GEMMs over tiles of up to 32 chains win (docs/CUDA_KERNELS.md).
  const bool mma = precision != kPrecisionFp32;
  auto make_throughput = [&](int t) {
    P.path = PATH_THROUGHPUT;
    P.tile = t;
    P.cluster = 1;
    P.threads = kTileThreads;
    P.lay = throughput_layout(p, t > 0 ? t : tile_quantum(precision));
    P.tiles = t > 0 ? (B + t - 1) / t : 0;
    P.blocks = P.tiles < d.sms ? P.tiles : d.sms;
    P.smem_bytes = int64_t(P.lay.total) * elem;
  };
  const int t_req = tile_request > 0 ? tile_request : 0;
  if (path_request == PATH_THROUGHPUT || (path_request < 0 && B > int64_t(d.sms) * kWarpMaxChains)) {
    const int t = t_req > 0 ? t_req : throughput_tile(p, B, d.sms, budget, elem, precision);
    if (t > 0 || path_request == PATH_THROUGHPUT) {
      make_throughput(t);
      return P;
    }
    // not even a tile (4 chains; tf32 / bf16: 16) fits one block with its panels: the latency paths below take it
  }
  // v2 on one block, then on a 2-block cluster, then streamed: the most chains per block (up to one wave's need)
  // that fit; a forced path (the emulation's tests) takes the requested tile whatever the budget.
  if (path_request == PATH_RESIDENT || path_request == PATH_CLUSTER) {
    const int cs = path_request == PATH_CLUSTER ? (cluster_request > 0 ? cluster_request : 2) : 1;
    make(path_request, want(cs), cs);
    return P;
  }
  if (path_request == PATH_STREAMED) {
    make_streamed(want_streamed(), true);
    return P;
  }
  if (path_request < 0) {
    // the most chains per block (up to one wave's need) that fit one block, 2 and 4 blocks (clusters: sm_90);
    // of the clusters, the cheaper launch by cluster_step_clk x waves (4 blocks: half the weights per SM, twice
    // the chains per block for the same B; more than one wave once B > SMs chains). fp32 takes one block
    // whenever it fits (its plans as before); tf32 / bf16 weigh one block against the clusters by the same model
    // (bf16 fits programs on one block that fp32 splits: LEBM's 121 KB, where a 4-block cluster's quarter of
    // the rows per block is the cheaper step: docs/CUDA_KERNELS.md, "Reduced precision on the latency paths").
    int best = 0, bc = 0;
    double bclk = 0;
    for (int c = want(1); c >= 1; --c) {
      if (make(PATH_RESIDENT, c, 1)) {
        if (!mma) return P;
        const int64_t waves = (P.blocks + d.sms - 1) / (d.sms > 0 ? d.sms : 1);
        best = 1, bc = c, bclk = cluster_step_clk(p, c, 1, warps, precision) * double(waves);
        break;
      }
      if (tile_request > 0) break;
    }
    if (d.cc_major >= 9) {
      for (int cs = 2; cs <= 4; cs += 2) {
        if (cluster_request > 0 && cs != cluster_request) continue;
        for (int c = want(cs); c >= 1; --c) {
          if (make(PATH_CLUSTER, c, cs)) {
            const int64_t waves = (P.blocks + d.sms - 1) / (d.sms > 0 ? d.sms : 1);
            const double clk = cluster_step_clk(p, c, cs, warps, precision) * double(waves);
            if (best == 0 || clk < bclk) best = cs, bc = c, bclk = clk;
            break;
          }
          if (tile_request > 0) break;
        }
      }
    }
    if (best > 0) {
      make(best > 1 ? PATH_CLUSTER : PATH_RESIDENT, bc, best);
      return P;
    }
    // tf32 / bf16: the streamed and staged paths are fp32 only
    if (mma) {
      make_throughput(t_req > 0 ? t_req : throughput_tile(p, B, d.sms, budget, elem, precision));
      return P;
    }
    if (d.cc_major >= 8)
      for (int c = want_streamed(); c >= 1; --c) {
        if (make_streamed(c, false)) return P;
        if (tile_request > 0) break;
      }
  }
  // v1
  const int64_t w1 = resident_weight_elems(p, 1) * elem, w2 = resident_weight_elems(p, 2) * elem;
  const int kb = budget / 1024 > 0 ? int(budget / 1024) : 0;
  const int64_t one = (int64_t(block_layout(p, 1, 0).total) + streamed_part_elems(1, p.max_width) + 2 * max_ldw) *
                      elem;
  char cl[80] = "";
  if (d.cc_major >= 9) snprintf(cl, sizeof(cl), ", %lld KB per block of a 2-block cluster", (long long)(w2 / 1024));
  if (d.cc_major >= 8)
    snprintf(P.why, sizeof(P.why),
             "the program's weights (%lld KB fp32 resident%s, plus the chains' state) do not fit in the %d KB of "
             "shared memory a block may use, and the streamed v2 variant needs %lld KB for one chain (its state and "
             "two stage rows of the widest layer, %d inputs)",
             (long long)(w1 / 1024), cl, kb, (long long)((one + 1023) / 1024), max_ldw);
  else
    snprintf(P.why, sizeof(P.why),
             "the program's weights (%lld KB fp32 resident, plus the chains' state) do not fit in the %d KB of shared "
             "memory a block may use, and this device (compute capability %d) has neither thread-block clusters "
             "(9.0) nor cp.async for the streamed v2 variant (8.0)",
             (long long)(w1 / 1024), kb, d.cc_major);
  P.path = PATH_STAGED;
  P.cluster = 1;
  P.threads = kStagedThreads;
  const int per_chain = block_elems_per_chain(p);
  const int max_elems = int(budget / elem);
  int stage_rows = kBlockMaxJC;
  int stage = block_stage_elems(p, stage_rows);
  while (stage_rows > 4 && stage + per_chain > max_elems) stage = block_stage_elems(p, stage_rows /= 2);
  const int fit = (max_elems - stage - 64) / (per_chain + 16);
  int tile = tile_request > 0 ? tile_request : int((B + d.sms - 1) / d.sms);
  tile = tile < 1 ? 1 : (tile > kBlockMaxTile ? kBlockMaxTile : tile);
  if (tile_request <= 0) tile = tile > fit ? fit : tile;
  P.tile = tile < 1 ? 0 : tile;  // 0: not even one chain fits (the launcher reports it)
  P.lay = block_layout(p, P.tile > 0 ? P.tile : 1, stage, false, 1);
  P.tiles = P.tile > 0 ? (B + P.tile - 1) / P.tile : 0;
  P.blocks = P.tiles;
  P.smem_bytes = int64_t(P.lay.total) * elem;
  return P;
}

// Why plan P cannot run `precision` (a message naming it, written into buf), or nullptr: tf32 / bf16 run on the
// throughput path's tensor-core GEMM (mma.sync), on tiles of 16 or 32 chains, and on the resident and cluster
// paths (WarpEngine's rounded SIMT operands); compute capability 8.0 and newer (mma.sync, cvt.rn.bf16x2: the
// kernels are built for sm_80 and sm_90). The streamed and staged paths are fp32 only (plan_launch never picks
// them at reduced precision; a forced path, the emulation's tests, gets this error). The CUDA launcher and the
// emulation both ask it, so the tests see the launcher's errors.
inline const char* precision_plan_error(const LaunchPlan& P, const ProgramDesc& p, const DeviceProps& d, int elem,
                                        int precision, char* buf, size_t n) {
  if (precision == kPrecisionFp32) return nullptr;
  const char* name = precision == kPrecisionTf32 ? "tf32" : "bf16";
  if (d.cc_major < 8)
    snprintf(buf, n, "precision='%s' needs compute capability 8.0 or newer (tensor cores with mma.sync, bf16 "
             "conversions), this device is %d.x: use precision='fp32'", name, d.cc_major);
  else if (P.path == PATH_STREAMED || P.path == PATH_STAGED)
    snprintf(buf, n, "precision='%s' runs on the throughput, resident and cluster paths; the %s path is fp32 only: "
             "use precision='fp32' for it", name, P.path == PATH_STREAMED ? "streamed" : "staged");
  else if (P.path == PATH_THROUGHPUT && (P.tile < kMmaM || P.tile % kMmaM != 0))
    snprintf(buf, n, "precision='%s' runs the throughput path on tiles of a multiple of %d chains (the mma's rows); "
             "%s (%lld bytes of shared memory for %d chains, the device has %d per block): use precision='fp32'",
             name, kMmaM, P.tile == 0 ? "not even 16 chains of this program fit with the weight panels" :
             "the tile asked for is not one", (long long)(int64_t(throughput_layout(p, kMmaM).total) * elem), kMmaM,
             d.smem_optin);
  else
    return nullptr;
  return buf;
}

}  // namespace core
}  // namespace hebm
