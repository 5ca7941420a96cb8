// Activations of the latent networks and their derivatives: ONE definition for the CPU and CUDA kernels.
//   lrelu(x) = x if x > 0 else slope * x
//   gelu(x)  = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2          (PyTorch's exact GELU)
//   silu(x)  = x * sigmoid(x)
//   tanh(x)
//   gelu_tanh(x) = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2     (PyTorch's GELU(approximate="tanh"))
//   elu(x)   = x if x > 0 else alpha (exp(x) - 1)                          (param = alpha)
//   softplus0(x) = softplus_beta(x) - log(2) / beta, softplus_beta(x) = log(1 + exp(beta x)) / beta, and x itself
//              when beta x > 20 (PyTorch's default threshold)             (param = beta)
//   identity(x) = x
// Every activation maps 0 to 0: the kernels rely on it for zero-padded columns. That is why softplus enters
// shifted by its value at 0; the packer (hebm_ext/sampling/program.py) adds log(2)/beta * W.sum(1) to the next
// layer's bias, which restores softplus exactly. ReLU is lrelu with slope 0 (the same value and derivative,
// including 0 at x = 0, as PyTorch's relu backward). The derivative at a kink is PyTorch's: lrelu'(0) = slope,
// elu'(0) = alpha.
#pragma once

#include "fastmath.h"
#include "macros.h"

#if !HEBM_ON_DEVICE
#include <cmath>
#endif

namespace hebm {
namespace core {

// Programs give each linear layer one of these kinds (csrc/core/program.h); the output layer of every net is
// ACT_IDENTITY. The numbering is the one of hebm_ext/nn/energy.py's ACT_CODES.
enum ActKind : int {
  ACT_LRELU = 0,
  ACT_GELU = 1,
  ACT_SILU = 2,
  ACT_TANH = 3,
  ACT_GELU_TANH = 4,
  ACT_ELU = 5,
  ACT_SOFTPLUS = 6,
  ACT_IDENTITY = 7,
  ACT_COUNT = 8
};
// Kinds that read a parameter (params[param] in the program): the slope, alpha, beta.
HEBM_HD constexpr bool act_has_param(int kind) {
  return kind == ACT_LRELU || kind == ACT_ELU || kind == ACT_SOFTPLUS;
}

namespace detail {
#if HEBM_ON_DEVICE
template <typename T> HEBM_HD T exp_(T x) { return exp(x); }
template <typename T> HEBM_HD T erf_(T x) { return erf(x); }
template <typename T> HEBM_HD T tanh_(T x) { return tanh(x); }
template <typename T> HEBM_HD T sqrt_(T x) { return sqrt(x); }
template <typename T> HEBM_HD T expm1_(T x) { return expm1(x); }
template <typename T> HEBM_HD T log1p_(T x) { return log1p(x); }
#else
template <typename T> HEBM_HD T exp_(T x) { return std::exp(x); }
template <typename T> HEBM_HD T erf_(T x) { return std::erf(x); }
template <typename T> HEBM_HD T tanh_(T x) { return std::tanh(x); }
template <typename T> HEBM_HD T sqrt_(T x) { return std::sqrt(x); }
template <typename T> HEBM_HD T expm1_(T x) { return std::expm1(x); }
template <typename T> HEBM_HD T log1p_(T x) { return std::log1p(x); }
#endif
// float32: the branch-free versions (vectorised on the CPU, identical on the GPU)
template <> HEBM_HD float exp_<float>(float x) { return fast::exp(x); }
template <> HEBM_HD float erf_<float>(float x) { return fast::erf(x); }
template <> HEBM_HD float tanh_<float>(float x) { return fast::tanh(x); }
// float32 expm1 / log1p from the branch-free exp / log: absolute errors of a few ulp of 1, which is what elu and
// softplus0 need (both are used in sums of O(1) terms, never relative to a tiny value)
template <> HEBM_HD float expm1_<float>(float x) { return fast::exp(x) - 1.0f; }
template <> HEBM_HD float log1p_<float>(float x) { return fast::log(1.0f + x); }
}  // namespace detail

// value and derivative at x; param: lrelu's slope, elu's alpha, softplus' beta (unused by the other kinds)
template <int A, typename T>
HEBM_HD void act_value_grad(T x, T param, T& y, T& dy) {
  if constexpr (A == ACT_LRELU) {
    const bool pos = x > T(0);
    y = pos ? x : param * x;
    dy = pos ? T(1) : param;
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
  } else if constexpr (A == ACT_GELU_TANH) {
    const T k_beta = T(0.79788456080286535587989211986876);  // sqrt(2 / pi)
    const T k_kappa = T(0.044715);
    const T x2 = x * x;
    const T th = detail::tanh_(k_beta * (x + k_kappa * x2 * x));
    y = T(0.5) * x * (T(1) + th);
    dy = T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * k_beta * (T(1) + T(3) * k_kappa * x2);
  } else if constexpr (A == ACT_ELU) {
    const bool pos = x > T(0);
    const T xn = pos ? T(0) : x;  // exp of the negative part only (no overflow for large x)
    y = pos ? x : param * detail::expm1_(xn);
    dy = pos ? T(1) : param * detail::exp_(xn);
  } else if constexpr (A == ACT_SOFTPLUS) {
    const T ln2 = T(0.69314718055994530941723212145818);
    const T bx = param * x;
    const bool lin = bx > T(20);
    const T e = detail::exp_(lin ? T(0) : bx);
    y = (lin ? bx : detail::log1p_(e)) / param - ln2 / param;
    dy = lin ? T(1) : e / (T(1) + e);
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

// Run-time kind -> compile-time template parameter, so inner loops carry no branch on the kind (the program
// parser has rejected unknown kinds; the default is ACT_IDENTITY).
#define HEBM_DISPATCH_ACT(kind, A, ...)                  \
  switch (kind) {                                        \
    case ::hebm::core::ACT_LRELU: {                  \
      constexpr int A = ::hebm::core::ACT_LRELU;     \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_GELU: {                   \
      constexpr int A = ::hebm::core::ACT_GELU;      \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_SILU: {                   \
      constexpr int A = ::hebm::core::ACT_SILU;      \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_TANH: {                   \
      constexpr int A = ::hebm::core::ACT_TANH;      \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_GELU_TANH: {              \
      constexpr int A = ::hebm::core::ACT_GELU_TANH; \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_ELU: {                    \
      constexpr int A = ::hebm::core::ACT_ELU;       \
      __VA_ARGS__;                                   \
    } break;                                         \
    case ::hebm::core::ACT_SOFTPLUS: {               \
      constexpr int A = ::hebm::core::ACT_SOFTPLUS;  \
      __VA_ARGS__;                                   \
    } break;                                         \
    default: {                                       \
      constexpr int A = ::hebm::core::ACT_IDENTITY;  \
      __VA_ARGS__;                                   \
    } break;                                         \
  }

}  // namespace core
}  // namespace hebm
