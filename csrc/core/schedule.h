// The Langevin schedule and THE update rule, shared by every sampler (ARCHITECTURE.md, "The two sampler tiers").
//
// For timestep t = T-1 ... 0, K_t steps of
//     y <- c1_t * y + c2_t * y_cond + h_t * grad_y log p~_t(y) + n_t * xi,     xi ~ N(0, I)
// then y <- d_t * y, and y_cond for the next timestep is that y.
// In per-chain mode (a timestep index per chain, used to train recovery-likelihood EBMs) chain b runs only the
// K_{t_b} steps of its own timestep t_b, then y <- d_{t_b} * y.
//
// Global step numbering (noise addressing and the explicit noise tensor [S, B, D]): in full mode the steps are
// numbered 0 .. S-1 in execution order (t = T-1 first), S = sum_t K_t; in per-chain mode chain b's steps are
// 0 .. K_{t_b}-1 and S = max_t K_t.
#pragma once

#include <stdint.h>

#include "macros.h"

namespace hebm {
namespace core {

constexpr int kMaxTimesteps = 64;
constexpr int kCoeffs = 6;  // per timestep: h, n, c1, c2, alpha, d

struct ScheduleDesc {
  int T;
  int K[kMaxTimesteps];
  double h[kMaxTimesteps], n[kMaxTimesteps], c1[kMaxTimesteps], c2[kMaxTimesteps], alpha[kMaxTimesteps],
      d[kMaxTimesteps];
  int total_steps;  // sum_t K_t
  int max_steps;    // max_t K_t
};

// Host-side; returns nullptr on success or a message.
inline const char* parse_schedule(const int64_t* steps, int64_t T, const double* coeffs, int64_t n_coeffs,
                                  ScheduleDesc& s) {
  if (T < 1 || T > kMaxTimesteps) return "schedule: number of timesteps must be in [1, 64]";
  if (n_coeffs != T * kCoeffs) return "schedule: expected 6 coefficients (h, n, c1, c2, alpha, d) per timestep";
  s.T = int(T);
  s.total_steps = 0;
  s.max_steps = 0;
  for (int t = 0; t < s.T; ++t) {
    if (steps[t] < 0 || steps[t] > (1 << 24)) return "schedule: steps per timestep must be in [0, 2^24]";
    s.K[t] = int(steps[t]);
    s.total_steps += s.K[t];
    if (s.K[t] > s.max_steps) s.max_steps = s.K[t];
    const double* c = coeffs + kCoeffs * t;
    s.h[t] = c[0];
    s.n[t] = c[1];
    s.c1[t] = c[2];
    s.c2[t] = c[3];
    s.alpha[t] = c[4];
    s.d[t] = c[5];
  }
  return nullptr;
}

// The update rule, one element.
template <typename T>
HEBM_HD T langevin_update(T y, T y_cond, T grad, T xi, T c1, T c2, T h, T n) {
  return c1 * y + c2 * y_cond + h * grad + n * xi;
}

// The arguments of hebm::langevin_update (one step of the update rule over B chains of D elements), the same for
// the CPU and CUDA kernels. Noise: the explicit tensor when given, else Philox normals at counter offset + step
// (csrc/core/philox.h) when n != 0, else none.
template <typename T>
struct UpdateArgs {
  const T* y;          // [B, D]
  const T* cond;       // [B, D], or null (no y_cond term)
  const T* grad;       // [B, D]
  const T* noise;      // [B, D], or null
  const int64_t* rng;  // [seed, offset] in the kernel's memory (device memory on CUDA), null with explicit noise
  T* out;              // [B, D]
  int64_t B, D;
  int64_t step;        // the global Langevin step index
  T c1, c2, h, n;
};

// Per-chain coefficients of one timestep at the precision of the kernel.
template <typename T>
struct StepCoeffs {
  T h, n, c1, c2, alpha, d;
};

template <typename T>
HEBM_HD StepCoeffs<T> step_coeffs(const ScheduleDesc& s, int t) {
  StepCoeffs<T> c;
  c.h = T(s.h[t]);
  c.n = T(s.n[t]);
  c.c1 = T(s.c1[t]);
  c.c2 = T(s.c2[t]);
  c.alpha = T(s.alpha[t]);
  c.d = T(s.d[t]);
  return c;
}

}  // namespace core
}  // namespace hebm
