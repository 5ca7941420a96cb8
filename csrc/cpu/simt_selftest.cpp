// Test support: small kernels over the SIMT primitive layer run through the emulation, so that the tests can hold
// the emulation's semantics against the CUDA programming guide (shuffles, named barriers, clusters) and see its
// diagnoses (out-of-bounds shared memory, divergence at a shuffle, a barrier that cannot complete) and its bank
// model (wavefronts per access pattern).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "core/simt.h"
#include "cpu/simt_emulation.h"

namespace hebm {
namespace cpu {

namespace {

using emu::EmuCtx;

// Every lane of 2 warps: [xor 1, down 3, up 5, idx 7, warp_sum, xor 16 of lane * 10]
void shuffles(EmuCtx& ctx, float* s) {
  const int l = ctx.lane();
  const float v = float(l) + 100.f * float(ctx.warp());
  float sums[2] = {v, 2 * v};
  core::warp_sum_n<float, 2, EmuCtx>(ctx, sums);
  const float r[6] = {ctx.shfl_xor(v, 1), ctx.shfl_down(v, 3), ctx.shfl_up(v, 5), ctx.shfl_idx(v, 7),
                      core::warp_sum<float, EmuCtx>(ctx, v), sums[1]};
  for (int k = 0; k < 6; ++k) ctx.sh(s + ctx.tid() * 6 + k) = r[k];
}

// Warps 0-3 meet at named barrier 1 (128 threads): warps 0-1 write, warps 2-3 read after the barrier; warps 4-5
// never take part (they would deadlock a block-wide barrier there).
void named(EmuCtx& ctx, float* s) {
  const int w = ctx.warp();
  if (w < 2) ctx.sh(s + ctx.tid()) = float(ctx.tid() + 1);
  if (w < 4) ctx.named_sync(1, 128);
  if (w >= 2 && w < 4) ctx.sh(s + 64 + ctx.tid()) = ctx.sh(s + ctx.tid() - 64);
}

// A 2-block cluster: each block writes (rank + 1) * tid, cluster barrier, reads the peer's through DSMEM.
void cluster(EmuCtx& ctx, float* s) {
  const int r = ctx.cluster_rank();
  ctx.sh(s + ctx.tid()) = float((r + 1) * ctx.tid());
  ctx.cluster_sync();
  const float* peer = ctx.map_rank(static_cast<const float*>(s), r ^ 1);
  ctx.sh(s + 64 + ctx.tid()) = ctx.sh(peer + ctx.tid());
  ctx.cluster_sync();
}

// The split cluster barrier, two phases: each block writes v = 1000 * phase + (rank + 1) * tid + 1, arrives, reads
// the peer's value BEFORE its wait (a premature read: floats 64.., phase 1 at 192..) and after it (128.., 256..).
void split(EmuCtx& ctx, float* s) {
  const int r = ctx.cluster_rank(), t = ctx.tid();
  const float* peer = ctx.map_rank(static_cast<const float*>(s), r ^ 1);
  for (int ph = 0; ph < 2; ++ph) {
    ctx.sh(s + 320 + ph * 64 + t) = float(1000 * ph + (r + 1) * t + 1);
    ctx.cluster_arrive();
    ctx.sh(s + 64 + ph * 128 + t) = ctx.sh(peer + 320 + ph * 64 + t);
    ctx.cluster_wait();
    ctx.sh(s + 128 + ph * 128 + t) = ctx.sh(peer + 320 + ph * 64 + t);
  }
  ctx.cluster_sync();  // no block exits while its peer still reads it
}

void arrive_twice(EmuCtx& ctx, float*) {
  ctx.cluster_arrive();
  ctx.cluster_arrive();
}

void wait_alone(EmuCtx& ctx, float*) { ctx.cluster_wait(); }

void arrive_exit(EmuCtx& ctx, float* s) {
  ctx.cluster_arrive();
  ctx.sh(s + ctx.tid()) = 1.f;
}

void oob(EmuCtx& ctx, float* s) { ctx.sh(s + 256 + ctx.tid()) = 1.f; }  // 1 KB of shared memory: 256 floats

void diverge(EmuCtx& ctx, float* s) {
  float v = float(ctx.lane());
  if (ctx.lane() < 16) v = ctx.shfl_xor(v, 1);  // half a warp at a full-mask shuffle
  ctx.sh(s + ctx.tid()) = v;
}

void deadlock(EmuCtx& ctx, float* s) {
  if (ctx.warp() != 0) ctx.sync();  // warp 0 never arrives
  ctx.sh(s + ctx.tid()) = 0.f;
}

// One warp access per pattern: stride 1, 2, 32, 33 words, a broadcast, 16-byte vectors.
void banks(EmuCtx& ctx, float* s, int pattern) {
  const int l = ctx.lane();
  if (ctx.warp() != 0) return;
  switch (pattern) {
    case 0: ctx.sh(s + l) = 1.f; break;
    case 1: ctx.sh(s + 2 * l) = 1.f; break;
    case 2: ctx.sh(s + 32 * (l % 8)) = 1.f; break;  // 8 distinct words in bank 0
    case 3: ctx.sh(s + 33 * (l % 8)) = 1.f; break;
    case 4: (void)ctx.sh(static_cast<const float*>(s + 5)); break;
    case 5: (void)ctx.ld4(static_cast<const float*>(s + 4 * l)); break;
    default: (void)ctx.ld4(static_cast<const float*>(s + 8 * l)); break;  // stride 2 vectors: 2-way
  }
}

}  // namespace

// Runs test kernel `name`; returns its shared memory (float, the first block's, then the second's for 'cluster'),
// or for 'banks' [wavefronts, ideal wavefronts] per pattern. Errors of the emulation propagate as exceptions.
at::Tensor simt_selftest(c10::string_view name_) {
  const std::string name(name_);
  if (name == "banks") {
    std::vector<int64_t> out;
    for (int p = 0; p < 7; ++p) {
      emu::Cluster c(1, 32, 4096, true);
      c.run([&](EmuCtx& ctx) { banks(ctx, reinterpret_cast<float*>(c.smem(0)), p); }, 0);
      out.push_back(c.stats().wavefronts);
      out.push_back(c.stats().ideal_wavefronts);
    }
    return at::tensor(out).reshape({7, 2});
  }
  const bool two = name == "cluster" || name == "split" || name == "arrive_twice" || name == "wait_alone" ||
                   name == "arrive_exit";
  const int blocks = two ? 2 : 1;
  const int threads = name == "named" ? 192 : 64;
  const size_t bytes = name == "shuffles" || name == "split" ? 2048 : 1024;  // oob relies on 1024
  emu::Cluster c(blocks, threads, bytes, false);
  void (*k)(EmuCtx&, float*) = name == "shuffles" ? shuffles : name == "named" ? named : name == "cluster" ? cluster
                               : name == "oob"    ? oob      : name == "diverge" ? diverge
                               : name == "deadlock" ? deadlock : name == "split" ? split
                               : name == "arrive_twice" ? arrive_twice : name == "wait_alone" ? wait_alone
                               : name == "arrive_exit" ? arrive_exit : nullptr;
  TORCH_CHECK(k, "unknown self-test ", name);
  try {
    c.run([&](EmuCtx& ctx) { k(ctx, reinterpret_cast<float*>(c.smem(ctx.cluster_rank()))); }, 0);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  at::Tensor out = at::empty({blocks, int64_t(bytes / 4)}, at::kFloat);
  for (int b = 0; b < blocks; ++b) memcpy(out[b].data_ptr<float>(), c.smem(b), bytes);
  return out;
}

}  // namespace cpu
}  // namespace hebm
