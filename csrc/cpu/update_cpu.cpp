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
void run(const UpdateArgs<T>& a) {
  const char* cap = cpu_capability();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(a.D, 1));
  at::parallel_for(0, a.B, grain, [&](int64_t b0, int64_t b1) {
    std::unique_ptr<T[]> xi(new T[size_t((a.D + 3) / 4 * 4 + 4)]);
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
  const UpdateTensors t = prepare_update(y_, y_cond_, grad_, noise_, rng_, step, c1, c2, h, n);
  if (t.y.numel() == 0) return t.out;
  AT_DISPATCH_FLOATING_TYPES(t.y.scalar_type(), "langevin_update_cpu",
                             [&] { run<scalar_t>(update_args<scalar_t>(t, step, c1, c2, h, n)); });
  return t.out;
}

}  // namespace cpu
}  // namespace hebm
