// ATen glue of the CUDA fused latent sampler (built only with CUDA): checks, the current stream, registration.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/latent_cuda.h"
#include "latent_checks.h"

namespace hebm {
namespace cuda {

std::tuple<at::Tensor, at::Tensor> latent_langevin_cuda(const at::Tensor& y0_, const at::Tensor& cond_,
                                                        const at::Tensor& params_, at::IntArrayRef program,
                                                        at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                                        const at::Tensor& timesteps_, const at::Tensor& noise_,
                                                        const at::Tensor& rng_, bool trace_flag) {
  const LatentCall c = check_latent_call(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng_);
  TORCH_CHECK(y0_.scalar_type() == at::kFloat, "latent_langevin (CUDA): y0 must be float32, got ", y0_.scalar_type(),
              " (float64 runs on the CPU kernel)");
  const c10::cuda::CUDAGuard guard(y0_.device());
  const at::Tensor y0 = y0_.contiguous();
  const at::Tensor cond = cond_.contiguous();
  const at::Tensor params = params_.contiguous();
  const at::Tensor timesteps = timesteps_.contiguous();
  const at::Tensor noise = noise_.contiguous();
  const at::Tensor rng = rng_.contiguous();
  at::Tensor out = at::empty_like(y0);
  at::Tensor trace = trace_flag ? at::full({c.S, c.B, 2}, std::numeric_limits<double>::quiet_NaN(), y0.options())
                                : at::empty({0}, y0.options());
  if (c.B == 0) return {out, trace};
  LatentCudaCall call;
  call.prog = &c.prog;
  call.sched = &c.sched;
  call.params = params.data_ptr<float>();
  call.y0 = y0.data_ptr<float>();
  call.cond = cond.numel() ? cond.data_ptr<float>() : nullptr;
  call.tsel = c.per_chain ? timesteps.data_ptr<int64_t>() : nullptr;
  call.noise = c.explicit_noise ? noise.data_ptr<float>() : nullptr;
  call.rng = c.explicit_noise ? nullptr : rng.data_ptr<int64_t>();
  call.out = out.data_ptr<float>();
  call.trace = trace_flag ? trace.data_ptr<float>() : nullptr;
  call.B = c.B;
  call.device = y0.get_device();
  call.stream = at::cuda::getCurrentCUDAStream(y0.get_device()).stream();
  call.tile_override = 0;
  const char* err = latent_langevin_cuda_launch(call);
  TORCH_CHECK(err == nullptr, err);
  return {out, trace};
}

}  // namespace cuda
}  // namespace hebm

TORCH_LIBRARY_IMPL(hebm, CUDA, m) { m.impl("latent_langevin", &hebm::cuda::latent_langevin_cuda); }
