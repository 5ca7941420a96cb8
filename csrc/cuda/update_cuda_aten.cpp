// ATen glue of hebm::langevin_update on CUDA (built only with CUDA): checks, the current stream, registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/update_cuda.h"
#include "update_checks.h"

namespace hebm {
namespace cuda {

at::Tensor langevin_update_cuda(const at::Tensor& y_, const at::Tensor& y_cond_, const at::Tensor& grad_,
                                const at::Tensor& noise_, const at::Tensor& rng_, int64_t step, double c1, double c2,
                                double h, double n) {
  const c10::cuda::CUDAGuard guard(y_.device());
  const UpdateTensors t = prepare_update(y_, y_cond_, grad_, noise_, rng_, step, c1, c2, h, n);
  if (t.y.numel() == 0) return t.out;
  void* stream = c10::cuda::getCurrentCUDAStream(t.y.get_device()).stream();
  const char* err = t.y.scalar_type() == at::kFloat
                        ? langevin_update_cuda_launch(update_args<float>(t, step, c1, c2, h, n), stream)
                        : langevin_update_cuda_launch(update_args<double>(t, step, c1, c2, h, n), stream);
  TORCH_CHECK(err == nullptr, err);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return t.out;
}

}  // namespace cuda
}  // namespace hebm

TORCH_LIBRARY_IMPL(hebm, CUDA, m) { m.impl("langevin_update", &hebm::cuda::langevin_update_cuda); }
