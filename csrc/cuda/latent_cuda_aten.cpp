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
  const c10::cuda::CUDAGuard guard(y0_.device());
  const LatentTensors t = prepare_latent(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng_,
                                         trace_flag);
  TORCH_CHECK(t.y0.scalar_type() == at::kFloat, "latent_langevin (CUDA): y0 must be float32, got ",
              t.y0.scalar_type(), " (float64 runs on the CPU kernel)");
  if (t.c.B == 0) return {t.out, t.trace};
  LatentCudaCall call;
  call.args = block_args<float>(t);
  call.device = t.y0.get_device();
  call.stream = at::cuda::getCurrentCUDAStream(t.y0.get_device()).stream();
  call.tile_override = 0;
  const char* err = latent_langevin_cuda_launch(call);
  TORCH_CHECK(err == nullptr, err);
  return {t.out, t.trace};
}

}  // namespace cuda
}  // namespace hebm

TORCH_LIBRARY_IMPL(hebm, CUDA, m) { m.impl("latent_langevin", &hebm::cuda::latent_langevin_cuda); }
