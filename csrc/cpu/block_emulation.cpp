// Test support: runs the CUDA kernel's block program (csrc/core/block_sampler.h) on the CPU, one team of real
// threads per block sharing a "shared memory" buffer and a barrier, blocks one after another. It checks the
// kernel's algorithm (indexing, chunked weight staging, barriers) on machines without a GPU; it is not a sampler
// for users (hebm::latent_langevin is).
#include <ATen/ATen.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/block_sampler.h"
#include "latent_checks.h"

namespace hebm {
namespace cpu {

namespace {

// Sense-reversing barrier: spin briefly, then yield (the team is usually larger than the machine's cores).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    for (int spin = 0; gen_.load(std::memory_order_acquire) == gen; ++spin)
      if (spin > 64) std::this_thread::yield();
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<unsigned> gen_{0};
};

struct HostCtx {
  int tid_, n_;
  Barrier* bar;
  int tid() const { return tid_; }
  int nthreads() const { return n_; }
  void sync() const { bar->wait(); }
};

template <typename T>
void emulate(const LatentTensors& call, int threads, int tile, int stage_rows) {
  core::BlockArgs<T> a = block_args<T>(call);
  a.lay = core::block_layout(a.prog, tile, core::block_stage_elems(a.prog, stage_rows));
  const int64_t blocks = (a.B + tile - 1) / tile;
  std::vector<T> smem(size_t(a.lay.total));
  Barrier bar(threads);
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t) {
    team.emplace_back([&, t] {
      HostCtx ctx{t, threads, &bar};
      for (int64_t b = 0; b < blocks; ++b) {
        core::block_program<T, HostCtx>(ctx, a, smem.data(), b);
        ctx.sync();  // the next block reuses the buffer
      }
    });
  }
  for (auto& th : team) th.join();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> latent_langevin_block_emulation(
    const at::Tensor& y0_, const at::Tensor& cond_, const at::Tensor& params_, at::IntArrayRef program,
    at::ArrayRef<double> schedule, at::IntArrayRef steps, const at::Tensor& timesteps_, const at::Tensor& noise_,
    const at::Tensor& rng, bool trace_flag, int64_t threads, int64_t tile, int64_t stage_rows) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, "threads must be in [1, 1024], got ", threads);
  TORCH_CHECK(tile >= 1 && tile <= core::kBlockMaxTile, "tile must be in [1, ", core::kBlockMaxTile, "], got ", tile);
  TORCH_CHECK(stage_rows >= 1 && stage_rows <= core::kBlockMaxJC, "stage_rows must be in [1, ", core::kBlockMaxJC, "]");
  const LatentTensors t = prepare_latent(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng,
                                         trace_flag);
  if (t.c.B == 0) return {t.out, t.trace};
  AT_DISPATCH_FLOATING_TYPES(t.y0.scalar_type(), "latent_langevin_block_emulation", [&] {
    emulate<scalar_t>(t, int(threads), int(tile), int(stage_rows));
  });
  return {t.out, t.trace};
}

}  // namespace cpu
}  // namespace hebm
