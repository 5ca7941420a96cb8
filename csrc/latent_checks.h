// Argument checks and descriptor parsing of hebm::latent_langevin, the contiguous inputs and the outputs, and the
// block program's arguments: shared by the CPU and CUDA launchers and the block emulation.
// Every error names the argument, what was expected and what was given.
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <string>

#include "core/block_sampler.h"
#include "core/program.h"
#include "core/schedule.h"
#include "core/tile_mma.h"

namespace hebm {

struct LatentCall {
  core::ProgramDesc prog;
  core::ScheduleDesc sched;
  int64_t B = 0, D = 0;
  int64_t S = 0;  // length of the noise and trace step axis
  bool per_chain = false;
  bool explicit_noise = false;
};

inline std::string shape_str(const at::Tensor& t) { return std::string(t.sizes().vec().empty() ? "[]" : c10::str(t.sizes())); }

inline LatentCall check_latent_call(const at::Tensor& y0, const at::Tensor& cond, const at::Tensor& params,
                                    at::IntArrayRef program, at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                    const at::Tensor& timesteps, const at::Tensor& noise, const at::Tensor& rng) {
  LatentCall c;
  TORCH_CHECK(y0.dim() == 2, "latent_langevin: y0 must be [B, D], got shape ", y0.sizes());
  TORCH_CHECK(y0.scalar_type() == at::kFloat || y0.scalar_type() == at::kDouble,
              "latent_langevin: y0 must be float32 or float64, got ", y0.scalar_type());
  c.B = y0.size(0);
  c.D = y0.size(1);
  TORCH_CHECK(params.dim() == 1 && params.scalar_type() == y0.scalar_type() && params.device() == y0.device(),
              "latent_langevin: params must be a 1-D tensor with y0's dtype (", y0.scalar_type(), ") and device (",
              y0.device(), "), got ", params.scalar_type(), " on ", params.device(), " with shape ", params.sizes());
  core::ParseResult pr = core::parse_program(program.data(), int64_t(program.size()), params.numel(), c.prog);
  TORCH_CHECK(pr.ok, "latent_langevin: ", pr.msg);
  TORCH_CHECK(c.prog.D == c.D, "latent_langevin: y0 has ", c.D, " latent dims per chain, the program expects ", c.prog.D);
  TORCH_CHECK(int64_t(steps.size()) >= 1, "latent_langevin: steps must list K for every timestep");
  const char* se = core::parse_schedule(steps.data(), int64_t(steps.size()), schedule.data(), int64_t(schedule.size()), c.sched);
  TORCH_CHECK(se == nullptr, "latent_langevin: ", se);
  for (int i = 0; i < c.prog.n_nets; ++i) {
    const int ts = c.prog.nets[i].time_steps;
    TORCH_CHECK(ts == 0 || ts >= c.sched.T, "latent_langevin: net ", i, " is conditioned on ", ts,
                " timesteps but the schedule has ", c.sched.T);
  }
  if (cond.numel() > 0) {
    TORCH_CHECK(cond.sizes() == y0.sizes(), "latent_langevin: cond must have y0's shape ", y0.sizes(), ", got ", cond.sizes());
    TORCH_CHECK(cond.scalar_type() == y0.scalar_type() && cond.device() == y0.device(),
                "latent_langevin: cond must have y0's dtype and device, got ", cond.scalar_type(), " on ", cond.device());
  }
  c.per_chain = timesteps.numel() > 0;
  if (c.per_chain) {
    TORCH_CHECK(timesteps.dim() == 1 && timesteps.size(0) == c.B && timesteps.scalar_type() == at::kLong &&
                    timesteps.device() == y0.device(),
                "latent_langevin: timesteps must be an int64 tensor [B] = [", c.B, "] on ", y0.device(), ", got ",
                timesteps.scalar_type(), " ", timesteps.sizes(), " on ", timesteps.device());
  }
  c.S = c.per_chain ? c.sched.max_steps : c.sched.total_steps;
  c.explicit_noise = noise.numel() > 0;
  if (c.explicit_noise) {
    TORCH_CHECK(noise.dim() == 3 && noise.size(0) == c.S && noise.size(1) == c.B && noise.size(2) == c.D,
                "latent_langevin: noise must be [S, B, D] = [", c.S, ", ", c.B, ", ", c.D, "], got ", noise.sizes());
    TORCH_CHECK(noise.scalar_type() == y0.scalar_type() && noise.device() == y0.device(),
                "latent_langevin: noise must have y0's dtype and device, got ", noise.scalar_type(), " on ", noise.device());
  } else {
    TORCH_CHECK(rng.numel() == 2 && rng.scalar_type() == at::kLong && rng.device() == y0.device(),
                "latent_langevin: rng must be an int64 tensor [seed, offset] on ", y0.device(), " when no noise is given, got ",
                rng.scalar_type(), " ", rng.sizes(), " on ", rng.device());
  }
  return c;
}

// The op's call: checked and parsed, its tensors contiguous, its outputs (out like y0; the trace [S, B, 2] of NaN
// when asked, else empty) allocated.
struct LatentTensors {
  LatentCall c;
  at::Tensor y0, cond, params, timesteps, noise, rng, out, trace;
};

inline LatentTensors prepare_latent(const at::Tensor& y0, const at::Tensor& cond, const at::Tensor& params,
                                    at::IntArrayRef program, at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                    const at::Tensor& timesteps, const at::Tensor& noise, const at::Tensor& rng,
                                    bool trace) {
  LatentTensors t;
  t.c = check_latent_call(y0, cond, params, program, schedule, steps, timesteps, noise, rng);
  t.y0 = y0.contiguous();
  t.cond = cond.contiguous();
  t.params = params.contiguous();
  t.timesteps = timesteps.contiguous();
  t.noise = noise.contiguous();
  t.rng = rng.contiguous();
  t.out = at::empty_like(t.y0);
  t.trace = trace ? at::full({t.c.S, t.c.B, 2}, std::numeric_limits<double>::quiet_NaN(), t.y0.options())
                  : at::empty({0}, t.y0.options());
  return t;
}

// The block program's arguments (csrc/core/block_sampler.h) but its shared-memory layout, which the launcher picks.
template <typename T>
core::BlockArgs<T> block_args(const LatentTensors& t) {
  core::BlockArgs<T> a;
  a.prog = t.c.prog;
  a.sched = t.c.sched;
  a.params = t.params.data_ptr<T>();
  a.y0 = t.y0.data_ptr<T>();
  a.cond = t.cond.numel() ? t.cond.data_ptr<T>() : nullptr;
  a.tsel = t.c.per_chain ? t.timesteps.data_ptr<int64_t>() : nullptr;
  a.noise = t.c.explicit_noise ? t.noise.data_ptr<T>() : nullptr;
  a.rng = t.c.explicit_noise ? nullptr : t.rng.data_ptr<int64_t>();
  a.out = t.out.data_ptr<T>();
  a.trace = t.trace.numel() ? t.trace.data_ptr<T>() : nullptr;
  a.B = t.c.B;
  return a;
}

// precision bf16: an int32 tensor (on params' device) of core::bf16_pair_words(prog) words for the weights as
// packed bf16 k-pairs (BlockArgs::bf16_pairs), to be filled by the caller (the CUDA launcher's pack kernel, the
// emulation on the host) with core::bf16_pair_word; else an empty tensor.
inline at::Tensor bf16_pairs_tensor(const LatentTensors& t, int64_t precision) {
  if (precision != core::kPrecisionBf16) return at::empty({0}, t.params.options().dtype(at::kInt));
  return at::empty({core::bf16_pair_words(t.c.prog)}, t.params.options().dtype(at::kInt));
}

}  // namespace hebm
