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

// cp.async through a double buffer of two 64-float stages (64 threads): chunk ch of the global array g (4 chunks
// of 64 floats) lands in stage ch % 2 (16 threads x 16 bytes); thread t writes 2 x element max(t - 1, 0) of every
// chunk (another thread's copy) to out[ch][t]. variant 0: the correct pipeline (wait, barrier, refill the other
// stage, compute); 1: the read before the wait; 2: no barrier between the wait and the reads; 3: the refill before
// the barrier (thread 63 refills a stage the others read since the last barrier: write-after-read); 4: a
// misaligned 16-byte copy.
void cp_async_pipeline(EmuCtx& ctx, float* s, const float* g, int variant) {
  const int t = ctx.tid();
  float* stage[2] = {s, s + 64};
  float* out = s + 128;
  auto issue = [&](int ch) {
    for (int q = 0; q < 16; ++q) {
      if (variant == 3 ? t == 63 : q == t) {
        const int k = 4 * q + (variant == 4 && q == 3 ? 1 : 0);
        ctx.cp_async16(stage[ch & 1] + k, g + ch * 64 + 4 * q);
      }
    }
    ctx.cp_async_commit();
  };
  issue(0);
  for (int ch = 0; ch < 4; ++ch) {
    if (variant != 1) ctx.cp_async_wait<0>();
    if (variant == 3 && ch + 1 < 4) issue(ch + 1);
    if (variant != 2) ctx.sync();
    if (variant != 3 && ch + 1 < 4) issue(ch + 1);
    ctx.sh(out + ch * 64 + t) = 2.f * ctx.sh(stage[ch & 1] + (t > 0 ? t - 1 : 0));
  }
  ctx.cp_async_wait<0>();
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
  if (name.rfind("cp_async", 0) == 0) {  // cp_async, cp_async_early, _nobarrier, _war, _misaligned
    const char* variants[] = {"cp_async", "cp_async_early", "cp_async_nobarrier", "cp_async_war",
                              "cp_async_misaligned"};
    int v = -1;
    for (int i = 0; i < 5; ++i) v = name == variants[i] ? i : v;
    TORCH_CHECK(v >= 0, "unknown self-test ", name);
    alignas(64) float g[256];
    for (int i = 0; i < 256; ++i) g[i] = float(i + 1);
    emu::Cluster c(1, 64, 2048, false);
    try {
      c.run([&](EmuCtx& ctx) { cp_async_pipeline(ctx, reinterpret_cast<float*>(c.smem(0)), g, v); }, 0);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, e.what());
    }
    at::Tensor out = at::empty({1, 512}, at::kFloat);
    memcpy(out.data_ptr<float>(), c.smem(0), 2048);
    return out;
  }
  const int blocks = name == "cluster" ? 2 : 1;
  const int threads = name == "named" ? 192 : 64;
  const size_t bytes = name == "shuffles" ? 2048 : 1024;  // oob relies on 1024
  emu::Cluster c(blocks, threads, bytes, false);
  void (*k)(EmuCtx&, float*) = name == "shuffles" ? shuffles : name == "named" ? named : name == "cluster" ? cluster
                               : name == "oob"    ? oob      : name == "diverge" ? diverge
                               : name == "deadlock" ? deadlock : nullptr;
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
