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
void emulate(const LatentCall& c, const at::Tensor& y0, const at::Tensor& cond, const at::Tensor& params,
             const at::Tensor& timesteps, const at::Tensor& noise, const at::Tensor& rng, at::Tensor& out,
             at::Tensor& trace, int threads, int tile, int stage_rows) {
  core::BlockArgs<T> a;
  a.prog = c.prog;
  a.sched = c.sched;
  a.lay = core::block_layout(c.prog, tile, core::block_stage_elems(c.prog, stage_rows));
  a.params = params.data_ptr<T>();
  a.y0 = y0.data_ptr<T>();
  a.cond = cond.numel() ? cond.data_ptr<T>() : nullptr;
  a.tsel = c.per_chain ? timesteps.data_ptr<int64_t>() : nullptr;
  a.noise = c.explicit_noise ? noise.data_ptr<T>() : nullptr;
  a.rng = c.explicit_noise ? nullptr : rng.data_ptr<int64_t>();
  a.out = out.data_ptr<T>();
  a.trace = trace.numel() ? trace.data_ptr<T>() : nullptr;
  a.B = c.B;
  const int64_t blocks = (c.B + tile - 1) / tile;
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
  const LatentCall c = check_latent_call(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng);
  TORCH_CHECK(threads >= 1 && threads <= 1024, "threads must be in [1, 1024], got ", threads);
  TORCH_CHECK(tile >= 1 && tile <= core::kBlockMaxTile, "tile must be in [1, ", core::kBlockMaxTile, "], got ", tile);
  TORCH_CHECK(stage_rows >= 1 && stage_rows <= core::kBlockMaxJC, "stage_rows must be in [1, ", core::kBlockMaxJC, "]");
  const at::Tensor y0 = y0_.contiguous(), cond = cond_.contiguous(), params = params_.contiguous();
  const at::Tensor timesteps = timesteps_.contiguous(), noise = noise_.contiguous();
  at::Tensor out = at::empty_like(y0);
  at::Tensor trace = trace_flag ? at::full({c.S, c.B, 2}, std::numeric_limits<double>::quiet_NaN(), y0.options())
                                : at::empty({0}, y0.options());
  if (c.B == 0) return {out, trace};
  AT_DISPATCH_FLOATING_TYPES(y0.scalar_type(), "latent_langevin_block_emulation", [&] {
    emulate<scalar_t>(c, y0, cond, params, timesteps, noise, rng, out, trace, int(threads), int(tile), int(stage_rows));
  });
  return {out, trace};
}

}  // namespace cpu
}  // namespace hebm
