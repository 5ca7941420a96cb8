// Argument checks of hebm::langevin_update, shared by the CPU and CUDA launchers.
// Every error names the argument, what was expected and what was given.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace hebm {

struct UpdateCall {
  int64_t B = 0, D = 0;  // chains (first dim of y) and elements per chain (numel / B)
  bool has_cond = false, has_noise = false;
};

inline UpdateCall check_update_call(const at::Tensor& y, const at::Tensor& y_cond, const at::Tensor& grad,
                                    const at::Tensor& noise, const at::Tensor& rng, int64_t step, double c1,
                                    double c2, double h, double n) {
  UpdateCall c;
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
  c.has_cond = y_cond.numel() > 0;
  if (c.has_cond) same(y_cond, "y_cond");
  TORCH_CHECK(c.has_cond || c2 == 0.0 || c.B == 0 || c.D == 0,
              "langevin_update: y_cond is empty but c2 = ", c2, " (pass y_cond, or c2 = 0)");
  c.has_noise = noise.numel() > 0;
  if (c.has_noise) {
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
  return c;
}

}  // namespace hebm
