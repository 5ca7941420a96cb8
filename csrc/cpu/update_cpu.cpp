// ATen launcher of hebm::langevin_update on the CPU: checks, at::parallel_for over chains, and the instruction-set
// variant chosen like the fused sampler's (cpu_capability(); HEBM_CPU_CAPABILITY overrides it).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <memory>

#include "cpu/update_cpu.h"
#include "update_checks.h"

namespace hebm {
namespace cpu {

const char* cpu_capability();  // latent_cpu.cpp

namespace {

template <typename T>
void run(const UpdateCall& c, const at::Tensor& y, const at::Tensor& cond, const at::Tensor& grad,
         const at::Tensor& noise, const at::Tensor& rng, int64_t step, double c1, double c2, double h, double n,
         at::Tensor& out) {
  UpdateArgs<T> a;
  a.y = y.data_ptr<T>();
  a.cond = c.has_cond ? cond.data_ptr<T>() : nullptr;
  a.grad = grad.data_ptr<T>();
  a.noise = c.has_noise ? noise.data_ptr<T>() : nullptr;
  a.out = out.data_ptr<T>();
  a.B = c.B;
  a.D = c.D;
  a.seed = 0;
  a.step = uint64_t(step);
  if (!c.has_noise) {
    const int64_t* r = rng.data_ptr<int64_t>();
    a.seed = uint64_t(r[0]);
    a.step = uint64_t(r[1]) + uint64_t(step);
  }
  a.c1 = T(c1);
  a.c2 = T(c2);
  a.h = T(h);
  a.n = T(n);
  a.draw = !c.has_noise && n != 0.0;
  const char* cap = cpu_capability();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(c.D, 1));
  at::parallel_for(0, c.B, grain, [&](int64_t b0, int64_t b1) {
    std::unique_ptr<T[]> xi(new T[size_t((c.D + 3) / 4 * 4 + 4)]);
#if defined(__x86_64__) || defined(_M_X64)
    if (std::strcmp(cap, "avx512") == 0) return cap_avx512::update_rows(a, b0, b1, xi.get());
    if (std::strcmp(cap, "avx2") == 0) return cap_avx2::update_rows(a, b0, b1, xi.get());
#endif
    cap_default::update_rows(a, b0, b1, xi.get());
  });
}

}  // namespace

at::Tensor langevin_update_cpu(const at::Tensor& y_, const at::Tensor& y_cond_, const at::Tensor& grad_,
                               const at::Tensor& noise_, const at::Tensor& rng_, int64_t step, double c1, double c2,
                               double h, double n) {
  const UpdateCall c = check_update_call(y_, y_cond_, grad_, noise_, rng_, step, c1, c2, h, n);
  const at::Tensor y = y_.contiguous();
  const at::Tensor cond = y_cond_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor noise = noise_.contiguous();
  const at::Tensor rng = rng_.contiguous();
  at::Tensor out = at::empty(y.sizes(), y.options());
  if (y.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "langevin_update_cpu", [&] {
    run<scalar_t>(c, y, cond, grad, noise, rng, step, c1, c2, h, n, out);
  });
  return out;
}

}  // namespace cpu
}  // namespace hebm
