// Argument checks of hebm::langevin_update and the kernel arguments, shared by the CPU and CUDA launchers.
// Every error names the argument, what was expected and what was given.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "core/schedule.h"

namespace hebm {

// The op's tensors, checked and contiguous, and its output.
struct UpdateTensors {
  int64_t B = 0, D = 0;  // chains (first dim of y) and elements per chain (numel / B)
  at::Tensor y, cond, grad, noise, rng, out;
};

inline UpdateTensors prepare_update(const at::Tensor& y, const at::Tensor& y_cond, const at::Tensor& grad,
                                    const at::Tensor& noise, const at::Tensor& rng, int64_t step, double c1,
                                    double c2, double h, double n) {
  UpdateTensors c;
  TORCH_CHECK(y.dim() >= 1, "langevin_update: y must have a chain dimension [B, ...], got a 0-d tensor");
  TORCH_CHECK(y.scalar_type() == at::kFloat || y.scalar_type() == at::kDouble,
              "langevin_update: y must be float32 or float64, got ", y.scalar_type());
  c.B = y.size(0);
  c.D = c.B > 0 ? y.numel() / c.B : 0;
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == y.sizes(), "langevin_update: ", name, " must have y's shape ", y.sizes(), ", got ",
                t.sizes());
    TORCH_CHECK(t.scalar_type() == y.scalar_type() && t.device() == y.device(), "langevin_update: ", name,
                " must have y's dtype and device (", y.scalar_type(), ", ", y.device(), "), got (", t.scalar_type(),
                ", ", t.device(), ")");
  };
  same(grad, "grad");
  const bool has_cond = y_cond.numel() > 0;
  if (has_cond) same(y_cond, "y_cond");
  TORCH_CHECK(has_cond || c2 == 0.0 || c.B == 0 || c.D == 0,
              "langevin_update: y_cond is empty but c2 = ", c2, " (pass y_cond, or c2 = 0)");
  if (noise.numel() > 0) {
    same(noise, "noise");
  } else {
    TORCH_CHECK(rng.numel() == 2 && rng.scalar_type() == at::kLong && rng.device() == y.device(),
                "langevin_update: rng must be an int64 tensor [seed, offset] on ", y.device(),
                " when no noise is given, got ", rng.scalar_type(), " ", rng.sizes(), " on ", rng.device());
  }
  TORCH_CHECK(step >= 0, "langevin_update: step must be >= 0 (the global Langevin step index), got ", step);
  TORCH_CHECK(std::isfinite(c1) && std::isfinite(c2) && std::isfinite(h) && std::isfinite(n),
              "langevin_update: the coefficients must be finite, got c1 = ", c1, ", c2 = ", c2, ", h = ", h,
              ", n = ", n);
  c.y = y.contiguous();
  c.cond = y_cond.contiguous();
  c.grad = grad.contiguous();
  c.noise = noise.contiguous();
  c.rng = rng.contiguous();
  c.out = at::empty(y.sizes(), y.options());
  return c;
}

template <typename T>
core::UpdateArgs<T> update_args(const UpdateTensors& t, int64_t step, double c1, double c2, double h, double n) {
  core::UpdateArgs<T> a;
  a.y = t.y.data_ptr<T>();
  a.cond = t.cond.numel() ? t.cond.data_ptr<T>() : nullptr;
  a.grad = t.grad.data_ptr<T>();
  a.noise = t.noise.numel() ? t.noise.data_ptr<T>() : nullptr;
  a.rng = t.noise.numel() ? nullptr : t.rng.data_ptr<int64_t>();
  a.out = t.out.data_ptr<T>();
  a.B = t.B;
  a.D = t.D;
  a.step = step;
  a.c1 = T(c1);
  a.c2 = T(c2);
  a.h = T(h);
  a.n = T(n);
  return a;
}

}  // namespace hebm
