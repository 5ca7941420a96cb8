// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) and Box-Muller normals.
//
// Noise addressing, shared by every sampler of the package (fused CPU and CUDA kernels, the generic update op):
// the standard normal of chain b, latent dimension d, global Langevin step k is a pure function of
// (seed, offset, b, k, d):
//     key     = (lo32(seed), hi32(seed))
//     counter = (d / 4, b, lo32(offset + k), hi32(offset + k))
//     4 words = Philox4x32-10(counter, key);  (w0, w1) -> normals n0, n1;  (w2, w3) -> n2, n3  (Box-Muller)
//     noise   = n[d % 4]
// so CPU and CUDA draw the same numbers and any subset of (b, k, d) can be drawn independently.
#pragma once

#include <stdint.h>

#include "fastmath.h"
#include "macros.h"

#if !HEBM_ON_DEVICE
#include <cmath>
#endif

namespace hebm {
namespace core {

struct Philox4Out {
  uint32_t w[4];
};

HEBM_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if HEBM_ON_DEVICE
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
#endif
}

HEBM_HD Philox4Out philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += W0;
      k1 += W1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(M0, c0, hi0, lo0);
    mulhilo32(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  Philox4Out out;
  out.w[0] = c0;
  out.w[1] = c1;
  out.w[2] = c2;
  out.w[3] = c3;
  return out;
}

// Uniforms in the open interval (0, 1) at the precision of T.
template <typename T>
HEBM_HD T uniform_open(uint32_t x);
template <>
HEBM_HD float uniform_open<float>(uint32_t x) {
  return (static_cast<float>(x >> 8) + 0.5f) * 5.9604644775390625e-08f;  // 2^-24
}
template <>
HEBM_HD double uniform_open<double>(uint32_t x) {
  return (static_cast<double>(x) + 0.5) * 2.3283064365386963e-10;  // 2^-32
}

template <typename T>
HEBM_HD void box_muller(uint32_t a, uint32_t b, T& n0, T& n1) {
  const T u = uniform_open<T>(a);
  const T v = uniform_open<T>(b);
  const T two_pi = static_cast<T>(6.283185307179586476925286766559);
#if HEBM_ON_DEVICE
  const T r = sqrt(static_cast<T>(-2) * log(u));
  T s, c;
  sincos(two_pi * v, &s, &c);
#else
  const T r = std::sqrt(static_cast<T>(-2) * std::log(u));
  const T s = std::sin(two_pi * v);
  const T c = std::cos(two_pi * v);
#endif
  n0 = r * c;
  n1 = r * s;
}
// float32: the branch-free log and sincos of fastmath.h, the same on CPU and GPU.
template <>
HEBM_HD void box_muller<float>(uint32_t a, uint32_t b, float& n0, float& n1) {
  const float u = uniform_open<float>(a);
  const float v = uniform_open<float>(b);
#if HEBM_ON_DEVICE
  const float r = sqrtf(-2.0f * fast::log(u));
#else
  const float r = std::sqrt(-2.0f * fast::log(u));
#endif
  float s, c;
  fast::sincos_2pi(v, s, c);
  n0 = r * c;
  n1 = r * s;
}

// The four normals of the group of dimensions [4*(d/4), 4*(d/4)+4) of chain b at global step `step`
// (step already includes the generator offset).
template <typename T>
HEBM_HD void normal4(uint64_t seed, uint64_t step, uint64_t chain, uint64_t dgroup, T out[4]) {
  const Philox4Out w = philox4x32_10(static_cast<uint32_t>(dgroup), static_cast<uint32_t>(chain),
                                     static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                                     static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  box_muller<T>(w.w[0], w.w[1], out[0], out[1]);
  box_muller<T>(w.w[2], w.w[3], out[2], out[3]);
}

// One normal, addressed as in the header comment.
template <typename T>
HEBM_HD T normal_at(uint64_t seed, uint64_t step, uint64_t chain, uint64_t d) {
  T n[4];
  normal4<T>(seed, step, chain, d >> 2, n);
  return n[d & 3];
}

}  // namespace core
}  // namespace hebm
