// ATen glue of the CUDA fused latent sampler (built only with CUDA): checks, the current stream, registration.
// Only what it needs from c10's CUDA layer (the stream, the guard, the launch check): no ATen/cuda/CUDAContext.h,
// which pulls in cuBLAS/cuSPARSE headers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/latent_cuda.h"
#include "latent_checks.h"

namespace hebm {
namespace cuda {

std::tuple<at::Tensor, at::Tensor> latent_langevin_cuda(const at::Tensor& y0_, const at::Tensor& cond_,
                                                        const at::Tensor& params_, at::IntArrayRef program,
                                                        at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                                        const at::Tensor& timesteps_, const at::Tensor& noise_,
                                                        const at::Tensor& rng_, bool trace_flag, int64_t precision) {
  TORCH_CHECK(y0_.is_cuda(), "latent_langevin (CUDA): y0 must be a CUDA tensor, got one on ", y0_.device());
  TORCH_CHECK(y0_.scalar_type() == at::kFloat, "latent_langevin (CUDA): y0 must be float32, got ",
              y0_.scalar_type(), " (float64 runs on the CPU kernel)");
  TORCH_CHECK(precision >= core::kPrecisionFp32 && precision <= core::kPrecisionBf16,
              "latent_langevin (CUDA): precision must be 0 (fp32), 1 (tf32) or 2 (bf16), got ", precision);
  // tf32 / bf16: the throughput path's tensor-core kernels at large B, the resident / cluster kernels at small B
  // (the launcher's plan; it names the precision when the device or the program cannot take them: compute
  // capability < 8.0, not even 16 chains fit). The packed bf16 buffer below is the throughput path's (the latency
  // kernels pack their resident copy themselves); it is allocated before the plan is known.
  // the device guard after the argument checks: a bad call fails before touching any device
  const c10::cuda::CUDAGuard guard(y0_.device());
  const LatentTensors t = prepare_latent(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng_,
                                         trace_flag);
  if (t.c.B == 0) return {t.out, t.trace};
  LatentCudaCall call;
  call.args = block_args<float>(t);
  call.args.precision = int(precision);
  const at::Tensor pairs = bf16_pairs_tensor(t, precision);  // freed after the call: stream-ordered reuse only
  call.bf16_pairs = pairs.numel() ? reinterpret_cast<uint32_t*>(pairs.data_ptr<int32_t>()) : nullptr;
  call.device = t.y0.get_device();
  call.stream = c10::cuda::getCurrentCUDAStream(t.y0.get_device()).stream();
  int path = 0;
  const char* why = "";
  const char* err = latent_langevin_cuda_launch(call, &path, &why);
  TORCH_CHECK(err == nullptr, err);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (why && why[0]) TORCH_WARN_ONCE("latent_langevin (CUDA): running the v1 kernel (staged weights) because ", why);
  return {t.out, t.trace};
}

}  // namespace cuda
}  // namespace hebm

TORCH_LIBRARY_IMPL(hebm, CUDA, m) { m.impl("latent_langevin", &hebm::cuda::latent_langevin_cuda); }
