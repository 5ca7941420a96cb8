// ATen glue of hebm::langevin_update on CUDA (built only with CUDA): checks, the current stream, registration.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/update_cuda.h"
#include "update_checks.h"

namespace hebm {
namespace cuda {

namespace {

template <typename T>
void run(const UpdateCall& c, const at::Tensor& y, const at::Tensor& cond, const at::Tensor& grad,
         const at::Tensor& noise, const at::Tensor& rng, int64_t step, double c1, double c2, double h, double n,
         at::Tensor& out) {
  UpdateCudaCall<T> call;
  call.y = y.data_ptr<T>();
  call.cond = c.has_cond ? cond.data_ptr<T>() : nullptr;
  call.grad = grad.data_ptr<T>();
  call.noise = c.has_noise ? noise.data_ptr<T>() : nullptr;
  call.rng = c.has_noise ? nullptr : rng.data_ptr<int64_t>();
  call.out = out.data_ptr<T>();
  call.B = c.B;
  call.D = c.D;
  call.step = step;
  call.c1 = c1;
  call.c2 = c2;
  call.h = h;
  call.n = n;
  call.stream = at::cuda::getCurrentCUDAStream(y.get_device()).stream();
  const char* err = langevin_update_cuda_launch(call);
  TORCH_CHECK(err == nullptr, err);
}

}  // namespace

at::Tensor langevin_update_cuda(const at::Tensor& y_, const at::Tensor& y_cond_, const at::Tensor& grad_,
                                const at::Tensor& noise_, const at::Tensor& rng_, int64_t step, double c1, double c2,
                                double h, double n) {
  const UpdateCall c = check_update_call(y_, y_cond_, grad_, noise_, rng_, step, c1, c2, h, n);
  const c10::cuda::CUDAGuard guard(y_.device());
  const at::Tensor y = y_.contiguous();
  const at::Tensor cond = y_cond_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor noise = noise_.contiguous();
  const at::Tensor rng = rng_.contiguous();
  at::Tensor out = at::empty(y.sizes(), y.options());
  if (y.numel() == 0) return out;
  if (y.scalar_type() == at::kFloat) run<float>(c, y, cond, grad, noise, rng, step, c1, c2, h, n, out);
  else run<double>(c, y, cond, grad, noise, rng, step, c1, c2, h, n, out);
  return out;
}

}  // namespace cuda
}  // namespace hebm

TORCH_LIBRARY_IMPL(hebm, CUDA, m) { m.impl("langevin_update", &hebm::cuda::langevin_update_cuda); }
