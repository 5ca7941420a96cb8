// Activations of the latent networks and their derivatives: ONE definition for the CPU and CUDA kernels.
//   lrelu(x) = x if x > 0 else slope * x
//   gelu(x)  = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2          (PyTorch's exact GELU)
//   silu(x)  = x * sigmoid(x)
//   tanh(x)
// Every activation maps 0 to 0: the kernels rely on it for zero-padded columns.
#pragma once

#include "fastmath.h"
#include "macros.h"

#if !HEBM_ON_DEVICE
#include <cmath>
#endif

namespace hebm {
namespace core {

// ACT_IDENTITY is internal (output layers of the ladder's conditionals); programs name the first ACT_COUNT kinds.
enum ActKind : int { ACT_LRELU = 0, ACT_GELU = 1, ACT_SILU = 2, ACT_TANH = 3, ACT_COUNT = 4, ACT_IDENTITY = 4 };

namespace detail {
#if HEBM_ON_DEVICE
template <typename T> HEBM_HD T exp_(T x) { return exp(x); }
template <typename T> HEBM_HD T erf_(T x) { return erf(x); }
template <typename T> HEBM_HD T tanh_(T x) { return tanh(x); }
template <typename T> HEBM_HD T sqrt_(T x) { return sqrt(x); }
#else
template <typename T> HEBM_HD T exp_(T x) { return std::exp(x); }
template <typename T> HEBM_HD T erf_(T x) { return std::erf(x); }
template <typename T> HEBM_HD T tanh_(T x) { return std::tanh(x); }
template <typename T> HEBM_HD T sqrt_(T x) { return std::sqrt(x); }
#endif
// float32: the branch-free versions (vectorised on the CPU, identical on the GPU)
template <> HEBM_HD float exp_<float>(float x) { return fast::exp(x); }
template <> HEBM_HD float erf_<float>(float x) { return fast::erf(x); }
template <> HEBM_HD float tanh_<float>(float x) { return fast::tanh(x); }
}  // namespace detail

// value and derivative at x
template <int A, typename T>
HEBM_HD void act_value_grad(T x, T slope, T& y, T& dy) {
  if constexpr (A == ACT_LRELU) {
    const bool pos = x > T(0);
    y = pos ? x : slope * x;
    dy = pos ? T(1) : slope;
  } else if constexpr (A == ACT_GELU) {
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
    const T inv_sqrt_2pi = T(0.39894228040143267793994605993438);
    const T cdf = T(0.5) * (T(1) + detail::erf_(x * inv_sqrt2));
    const T pdf = inv_sqrt_2pi * detail::exp_(T(-0.5) * x * x);
    y = x * cdf;
    dy = cdf + x * pdf;
  } else if constexpr (A == ACT_SILU) {
    const T sig = T(1) / (T(1) + detail::exp_(-x));
    y = x * sig;
    dy = sig * (T(1) + x * (T(1) - sig));
  } else if constexpr (A == ACT_TANH) {
    const T th = detail::tanh_(x);
    y = th;
    dy = T(1) - th * th;
  } else {
    y = x;
    dy = T(1);
  }
}

// NVAE's soft clamp c(x) = 5 tanh(x / 5) and its derivative.
template <typename T>
HEBM_HD void soft_clamp(T x, T& y, T& dy) {
  const T th = detail::tanh_(x * T(0.2));
  y = T(5) * th;
  dy = T(1) - th * th;
}

// The ladder conditional's head: (mu_raw, ell_raw) -> mu, sigma = exp(ell) + sigma_min and the derivatives
// dmu/dmu_raw, dsigma/dell_raw (ALGORITHMS.md 3.1, 6.1).
template <typename T>
HEBM_HD void ladder_head(T mu_raw, T ell_raw, T sigma_min, bool clamp, T& mu, T& sigma, T& dmu, T& dsigma) {
  T ell = ell_raw, dell = T(1);
  mu = mu_raw;
  dmu = T(1);
  if (clamp) {
    soft_clamp<T>(mu_raw, mu, dmu);
    soft_clamp<T>(ell_raw, ell, dell);
  }
  const T e = detail::exp_(ell);
  sigma = e + sigma_min;
  dsigma = e * dell;
}

// Run-time kind -> compile-time template parameter, so inner loops carry no branch on the kind.
#define HEBM_DISPATCH_ACT(kind, A, ...)                  \
  switch (kind) {                                        \
    case ::hebm::core::ACT_LRELU: {                      \
      constexpr int A = ::hebm::core::ACT_LRELU;         \
      __VA_ARGS__;                                       \
    } break;                                             \
    case ::hebm::core::ACT_GELU: {                       \
      constexpr int A = ::hebm::core::ACT_GELU;          \
      __VA_ARGS__;                                       \
    } break;                                             \
    case ::hebm::core::ACT_SILU: {                       \
      constexpr int A = ::hebm::core::ACT_SILU;          \
      __VA_ARGS__;                                       \
    } break;                                             \
    default: {                                           \
      constexpr int A = ::hebm::core::ACT_TANH;          \
      __VA_ARGS__;                                       \
    } break;                                             \
  }

}  // namespace core
}  // namespace hebm
