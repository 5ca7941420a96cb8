// Test support: small kernels over the SIMT primitive layer run through the emulation, so that the tests can hold
// the emulation's semantics against the CUDA programming guide (shuffles, named barriers, clusters) and see its
// diagnoses (out-of-bounds shared memory, divergence at a shuffle, a barrier that cannot complete) and its bank
// model (wavefronts per access pattern). The MMA fragments (simt.h) have two ops of their own, registered here:
// hebm::_simt_mma (a matmul tile by tile through the fragment helpers) and hebm::_simt_mma_lanes (one mma with
// the lanes' registers given by the test, to hold the layouts against the PTX ISA independently of the helpers).
#include <ATen/ATen.h>
#include <torch/library.h>

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

// The split cluster barrier, two phases: each block writes v = 1000 * phase + (rank + 1) * tid + 1, arrives, waits
// and reads the peer's value (floats 128.., phase 1 at 256..); split_early also reads it between the arrive and the
// wait (a premature read of the peer's store: the emulation's cluster-order check reports it).
void split_body(EmuCtx& ctx, float* s, bool early) {
  const int r = ctx.cluster_rank(), t = ctx.tid();
  const float* peer = ctx.map_rank(static_cast<const float*>(s), r ^ 1);
  for (int ph = 0; ph < 2; ++ph) {
    ctx.sh(s + 320 + ph * 64 + t) = float(1000 * ph + (r + 1) * t + 1);
    ctx.cluster_arrive();
    if (early) ctx.sh(s + 64 + ph * 128 + t) = ctx.sh(peer + 320 + ph * 64 + t);
    ctx.cluster_wait();
    ctx.sh(s + 128 + ph * 128 + t) = ctx.sh(peer + 320 + ph * 64 + t);
  }
  ctx.cluster_sync();  // no block exits while its peer still reads it
}
void split(EmuCtx& ctx, float* s) { split_body(ctx, s, false); }
void split_early(EmuCtx& ctx, float* s) { split_body(ctx, s, true); }

// mbarriers on a 2-block cluster of 2 warps, as the cluster WarpEngine exchanges (warp_linear.h, sync): a pair of
// mbarriers per block, exchange n on mbarrier n & 1 (its phase n >> 1), every warp arriving on the mbarrier of both
// blocks after __syncwarp (4 arrivals a phase), then waiting on its own block's. Exchange n (4 of them): each thread
// stores v = 1000 n + (rank + 1) tid + 1 into the peer's slot n & 1 (floats 256 + 64 (n & 1)) and after the wait
// copies its own slot (the peer's store) to floats 512 + 64 n. Variants (the emulation must report each): 1 reads
// the slot before the wait; 2 waits on the wrong parity; 3 warp 1 of block 1 never arrives at exchange 0
// (deadlock); 4 lane 0 arrives without the __syncwarp (the other lanes' stores are not released); 5 one slot for
// every exchange (the peer's next store over a slot not read yet: write-after-read).
void mbar_body(EmuCtx& ctx, float* s, int variant) {
  const int r = ctx.cluster_rank(), t = ctx.tid();
  uint64_t* bar = reinterpret_cast<uint64_t*>(s + 1000);  // bytes 4000-4015
  if (t == 0) {
    ctx.mbar_init(bar, 2 * ctx.nwarps());
    ctx.mbar_init(bar + 1, 2 * ctx.nwarps());
  }
  ctx.cluster_sync();  // the init visible to the peer (and the weights' load in the kernels)
  float* peer = ctx.map_rank(s, r ^ 1);
  for (int n = 0; n < 4; ++n) {
    const int slot = 256 + (variant == 5 ? 0 : 64 * (n & 1));
    ctx.sh(peer + slot + t) = float(1000 * n + (r + 1) * t + 1);
    if (variant != 4) ctx.syncwarp();
    if (ctx.lane() == 0 && !(variant == 3 && n == 0 && r == 1 && ctx.warp() == 1))
      for (int q = 0; q < 2; ++q) ctx.mbar_arrive_cluster(bar + (n & 1), q);
    if (variant == 1) ctx.sh(s + 512 + 64 * n + t) = ctx.sh(s + slot + t);
    ctx.mbar_wait_parity(bar + (n & 1), ((n >> 1) & 1) ^ (variant == 2 ? 1 : 0));
    ctx.sh(s + 512 + 64 * n + t) = ctx.sh(s + slot + t);
  }
  ctx.cluster_sync();  // no block exits while its peer may still store into it or arrive on its mbarriers
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

// Half a warp at an mma.sync (a warp collective).
void mma_diverge(EmuCtx& ctx, float* s) {
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float d[4] = {0, 0, 0, 0};
  if (ctx.lane() < 16) ctx.mma_bf16_16816(d, a, b, d);
  ctx.sh(s + ctx.tid()) = d[0];
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
  if (name.rfind("mbar", 0) == 0) {  // mbar, mbar_early, _parity, _noarrive, _nosyncwarp, _war
    const char* variants[] = {"mbar", "mbar_early", "mbar_parity", "mbar_noarrive", "mbar_nosyncwarp", "mbar_war"};
    int v = -1;
    for (int i = 0; i < 6; ++i) v = name == variants[i] ? i : v;
    TORCH_CHECK(v >= 0, "unknown self-test ", name);
    emu::Cluster c(2, 64, 4096, false);
    try {
      c.run([&](EmuCtx& ctx) { mbar_body(ctx, reinterpret_cast<float*>(c.smem(ctx.cluster_rank())), v); }, 0);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, e.what());
    }
    at::Tensor out = at::empty({2, 1000}, at::kFloat);  // the floats below the mbarriers
    for (int b = 0; b < 2; ++b) memcpy(out[b].data_ptr<float>(), c.smem(b), 4000);
    return out;
  }
  const bool two = name == "cluster" || name == "split" || name == "split_early" || name == "arrive_twice" || name == "wait_alone" ||
                   name == "arrive_exit";
  const int blocks = two ? 2 : 1;
  const int threads = name == "named" ? 192 : 64;
  const size_t bytes = name == "shuffles" || name == "split" || name == "split_early" ? 2048 : 1024;  // oob relies on 1024
  emu::Cluster c(blocks, threads, bytes, false);
  void (*k)(EmuCtx&, float*) = name == "shuffles" ? shuffles : name == "named" ? named : name == "cluster" ? cluster
                               : name == "oob"    ? oob      : name == "diverge" ? diverge
                               : name == "mma_diverge" ? mma_diverge : name == "deadlock" ? deadlock : name == "split" ? split
                               : name == "split_early" ? split_early
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

namespace {

// D = A B + C ([M, K] x [K, N] + [M, N], fp32 in shared memory, B stored as [K][N] or, bt, as its transpose
// [N][K]) by the warps of one block, one 16 x 8 output tile per warp at a time, K in steps of the mma's k.
template <bool BF16>
void mma_matmul(EmuCtx& ctx, float* s, const float* A, const float* B, const float* C, int M, int N, int K,
                bool bt) {
  float* sA = s;
  float* sB = sA + M * K;
  float* sD = sB + K * N;
  for (int i = ctx.tid(); i < M * K; i += ctx.nthreads()) ctx.sh(sA + i) = A[i];
  for (int i = ctx.tid(); i < K * N; i += ctx.nthreads()) {
    const int k = i / N, n = i % N;
    ctx.sh(sB + (bt ? n * K + k : i)) = B[i];
  }
  for (int i = ctx.tid(); i < M * N; i += ctx.nthreads()) ctx.sh(sD + i) = C[i];
  ctx.sync();
  const int nt = N / 8, kstep = BF16 ? 16 : 8;
  for (int tile = ctx.warp(); tile < (M / 16) * nt; tile += ctx.nwarps()) {
    const int m0 = tile / nt * 16, n0 = tile % nt * 8;
    float c[4];
    core::load_c_f32(ctx, c, sD + m0 * N + n0, N, 1);
    for (int k0 = 0; k0 < K; k0 += kstep) {
      uint32_t a[4], b[2];
      const float* pb = bt ? sB + n0 * K + k0 : sB + k0 * N + n0;
      if (BF16) {
        core::load_a_bf16(ctx, a, sA + m0 * K + k0, K, 1);
        core::load_b_bf16(ctx, b, pb, bt ? 1 : N, bt ? K : 1);
        ctx.mma_bf16_16816(c, a, b, c);
      } else {
        core::load_a_tf32(ctx, a, sA + m0 * K + k0, K, 1);
        core::load_b_tf32(ctx, b, pb, bt ? 1 : N, bt ? K : 1);
        ctx.mma_tf32_1688(c, a, b, c);
      }
    }
    core::store_d_f32(ctx, c, sD + m0 * N + n0, N, 1);
  }
}

bool mma_kind(const std::string& kind) {
  TORCH_CHECK(kind == "bf16" || kind == "tf32", "kind must be 'bf16' or 'tf32', got '", kind, "'");
  return kind == "bf16";
}

}  // namespace

// D = A B + C through the emulated fragment helpers and mma (2 warps). A [M, K], B [K, N], C [M, N] float32
// contiguous; M % 16 == 0, N % 8 == 0, K a multiple of the mma's k (16 bf16, 8 tf32). Returns D [M, N].
at::Tensor simt_mma(c10::string_view kind_, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                    bool b_transposed) {
  const bool bf16 = mma_kind(std::string(kind_));
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && C.dim() == 2 && A.scalar_type() == at::kFloat &&
                  B.scalar_type() == at::kFloat && C.scalar_type() == at::kFloat,
              "A, B, C must be 2-d float32");
  const int M = int(A.size(0)), K = int(A.size(1)), N = int(B.size(1));
  TORCH_CHECK(B.size(0) == K && C.size(0) == M && C.size(1) == N, "shapes: A [M, K], B [K, N], C [M, N]");
  TORCH_CHECK(M % 16 == 0 && N % 8 == 0 && K % (bf16 ? 16 : 8) == 0, "M % 16, N % 8, K % ", bf16 ? 16 : 8,
              " must be 0, got M=", M, " N=", N, " K=", K);
  const at::Tensor a = A.contiguous(), b = B.contiguous(), c = C.contiguous();
  const size_t bytes = size_t(M * K + K * N + M * N) * 4;
  emu::Cluster cl(1, 64, bytes, false);
  try {
    cl.run(
        [&](EmuCtx& ctx) {
          float* s = reinterpret_cast<float*>(cl.smem(0));
          if (bf16)
            mma_matmul<true>(ctx, s, a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>(), M, N, K,
                             b_transposed);
          else
            mma_matmul<false>(ctx, s, a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>(), M, N, K,
                              b_transposed);
        },
        0);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  at::Tensor out = at::empty({M, N}, at::kFloat);
  memcpy(out.data_ptr<float>(), reinterpret_cast<float*>(cl.smem(0)) + M * K + K * N, size_t(M * N) * 4);
  return out;
}

// One warp-wide mma with the lanes' registers given: regs int32 [32, 10] (a0-a3, b0-b1, then c0-c3 as float
// bits) per lane. Returns each lane's D registers, float32 [32, 4].
at::Tensor simt_mma_lanes(c10::string_view kind_, const at::Tensor& regs) {
  const bool bf16 = mma_kind(std::string(kind_));
  TORCH_CHECK(regs.dim() == 2 && regs.size(0) == 32 && regs.size(1) == 10 && regs.scalar_type() == at::kInt,
              "regs must be int32 [32, 10]");
  const at::Tensor r = regs.contiguous();
  at::Tensor out = at::empty({32, 4}, at::kFloat);
  const uint32_t* rp = reinterpret_cast<const uint32_t*>(r.data_ptr<int32_t>());
  float* op = out.data_ptr<float>();
  emu::Cluster cl(1, 32, 64, false);
  try {
    cl.run(
        [&](EmuCtx& ctx) {
          const uint32_t* mine = rp + ctx.lane() * 10;
          float c[4], d[4];
          for (int i = 0; i < 4; ++i) c[i] = core::bits_float(mine[6 + i]);
          if (bf16)
            ctx.mma_bf16_16816(d, mine, mine + 4, c);
          else
            ctx.mma_tf32_1688(d, mine, mine + 4, c);
          for (int i = 0; i < 4; ++i) op[ctx.lane() * 4 + i] = d[i];
        },
        0);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, e.what());
  }
  return out;
}

// The rounding functions of simt.h, elementwise over a float32 tensor: 'bf16' (bf16_round), 'tf32' (tf32_round),
// 'bf16x2' (pack_bf16x2 of consecutive pairs, as int32 [n / 2]).
at::Tensor simt_round(c10::string_view kind_, const at::Tensor& x) {
  const std::string kind(kind_);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x must be float32");
  const at::Tensor v = x.contiguous().reshape({-1});
  const float* p = v.data_ptr<float>();
  const int64_t n = v.numel();
  if (kind == "bf16x2") {
    TORCH_CHECK(n % 2 == 0, "bf16x2 packs pairs: x needs an even number of elements");
    at::Tensor out = at::empty({n / 2}, at::kInt);
    for (int64_t i = 0; i < n / 2; ++i)
      out.data_ptr<int32_t>()[i] = int32_t(core::pack_bf16x2(p[2 * i], p[2 * i + 1]));
    return out;
  }
  TORCH_CHECK(kind == "bf16" || kind == "tf32", "kind must be 'bf16', 'tf32' or 'bf16x2', got '", kind, "'");
  at::Tensor out = at::empty({n}, at::kFloat);
  for (int64_t i = 0; i < n; ++i)
    out.data_ptr<float>()[i] = kind == "bf16" ? core::bf16_round(p[i]) : core::tf32_round(p[i]);
  return out.reshape(x.sizes());
}

}  // namespace cpu
}  // namespace hebm

// Test-support ops of the MMA fragments (a fragment of the hebm library: the main schemas are in csrc/ops.cpp).
TORCH_LIBRARY_FRAGMENT(hebm, m) {
  m.def("_simt_mma(str kind, Tensor A, Tensor B, Tensor C, bool b_transposed) -> Tensor");
  m.def("_simt_mma_lanes(str kind, Tensor regs) -> Tensor");
  m.def("_simt_round(str kind, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(hebm, CPU, m) {
  m.impl("_simt_mma", &hebm::cpu::simt_mma);
  m.impl("_simt_mma_lanes", &hebm::cpu::simt_mma_lanes);
  m.impl("_simt_round", &hebm::cpu::simt_round);
}
