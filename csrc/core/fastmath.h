// Branch-free float32 elementary functions for the kernels' inner loops. On the CPU the compiler vectorises loops
// that call them (libm calls would stay scalar); on the GPU they are plain FMAs. Both kernels use the SAME code, so
// float32 activations and Philox normals agree between CPU and CUDA up to FMA contraction. float64 keeps the
// C library / CUDA math functions (accuracy first).
//
// Polynomials: Cephes (S. Moshier) single-precision minimax coefficients for exp, log, tanh, sin and cos on their
// reduced ranges; erf is Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), the same formula as PyTorch's
// vectorised float erf. Accuracy is checked against double precision in csrc/tests/test_core.cpp.
#pragma once

#include <stdint.h>

#include "macros.h"

namespace hebm {
namespace core {
namespace fast {

HEBM_HD float bits_to_float(int32_t i) {
#if HEBM_ON_DEVICE
  return __int_as_float(i);
#else
  return __builtin_bit_cast(float, i);
#endif
}
HEBM_HD int32_t float_to_bits(float f) {
#if HEBM_ON_DEVICE
  return __float_as_int(f);
#else
  return __builtin_bit_cast(int32_t, f);
#endif
}

// Round to nearest integer value (|x| < 2^22) without a rounding instruction.
HEBM_HD float round_nearest(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return (x + magic) - magic;
}

HEBM_HD float exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = round_nearest(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r2 + r + 1.0f;
  return e * bits_to_float((int32_t(n) + 127) << 23);
}

// tanh: odd polynomial for |x| < 0.625, else 1 - 2 / (exp(2|x|) + 1).
HEBM_HD float tanh(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  const float big = 1.0f - 2.0f / (exp(2.0f * ax) + 1.0f);
  return ax < 0.625f ? small : (x < 0.0f ? -big : big);
}

HEBM_HD float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

HEBM_HD float erf(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * exp(-ax * ax);
  return x < 0.0f ? -y : y;
}

// Natural log for finite x > 0 (normal numbers).
HEBM_HD float log(float x) {
  const int32_t bits = float_to_bits(x);
  float e = float(((bits >> 23) & 0xff) - 126);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const bool lo = m < 0.707106781186547524f;
  e = lo ? e - 1.0f : e;
  m = lo ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// sin(2 pi v) and cos(2 pi v) for v in [0, 1).
HEBM_HD void sincos_2pi(float v, float& s, float& c) {
  const float w = 4.0f * v;
  const float q = round_nearest(w);        // quadrant 0..4
  const float a = (w - q) * 1.57079632679489662f;  // in [-pi/4, pi/4]
  const float z = a * a;
  float ps = -1.9515295891e-4f;
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z - 1.6666654611e-1f;
  const float sa = a + a * z * ps;
  float pc = 2.443315711809948e-5f;
  pc = pc * z - 1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  const float ca = 1.0f - 0.5f * z + z * z * pc;
  const int qi = int(q) & 3;
  const float s1 = (qi & 1) ? ca : sa;
  const float c1 = (qi & 1) ? sa : ca;
  s = (qi & 2) ? -s1 : s1;
  c = ((qi + 1) & 2) ? -c1 : c1;
}

}  // namespace fast
}  // namespace core
}  // namespace hebm
