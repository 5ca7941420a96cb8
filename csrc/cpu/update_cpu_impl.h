// CPU kernel of hebm::langevin_update, one pass per chain: a row of Philox normals (the loop over groups of four
// vectorises for float32), then THE update rule of csrc/core/schedule.h. Included by update_cpu_{default,avx2,
// avx512}.cpp inside their own namespace (HEBM_CPU_NS) after setting the target instruction set; raw pointers only.
#include <stdint.h>

#include "core/philox.h"
#include "core/schedule.h"
#include "cpu/update_cpu.h"

namespace hebm {
namespace cpu {
namespace HEBM_CPU_NS {

template <typename T, bool COND, bool XI>
static void rows(const UpdateArgs<T>& a, uint64_t seed, uint64_t step, int64_t b0, int64_t b1, T* __restrict xi) {
  const int64_t D = a.D, G = (D + 3) / 4;
  const T c1 = a.c1, c2 = a.c2, h = a.h, n = a.n;
  for (int64_t b = b0; b < b1; ++b) {
    const size_t o = (size_t)b * (size_t)D;
    const T* __restrict y = a.y + o;
    const T* __restrict yc = COND ? a.cond + o : nullptr;
    const T* __restrict g = a.grad + o;
    T* __restrict out = a.out + o;
    const T* __restrict x = nullptr;
    if (XI) {
      if (a.noise) {
        x = a.noise + o;
      } else {
        for (int64_t gi = 0; gi < G; ++gi) core::normal4<T>(seed, step, (uint64_t)b, (uint64_t)gi, xi + 4 * gi);
        x = xi;
      }
    }
    for (int64_t d = 0; d < D; ++d)
      out[d] = core::langevin_update<T>(y[d], COND ? yc[d] : T(0), g[d], XI ? x[d] : T(0), c1, c2, h, n);
  }
}

template <typename T>
static void update_rows_impl(const UpdateArgs<T>& a, int64_t b0, int64_t b1, T* xi) {
  const bool draw = a.noise == nullptr && a.n != T(0);  // Philox normals at counter offset + step
  const uint64_t seed = draw ? uint64_t(a.rng[0]) : 0, step = draw ? uint64_t(a.rng[1]) + uint64_t(a.step) : 0;
  const bool xi_on = a.noise != nullptr || draw;
  if (a.cond) {
    if (xi_on) rows<T, true, true>(a, seed, step, b0, b1, xi);
    else rows<T, true, false>(a, seed, step, b0, b1, xi);
  } else {
    if (xi_on) rows<T, false, true>(a, seed, step, b0, b1, xi);
    else rows<T, false, false>(a, seed, step, b0, b1, xi);
  }
}

void update_rows(const UpdateArgs<float>& a, int64_t b0, int64_t b1, float* xi) { update_rows_impl(a, b0, b1, xi); }
void update_rows(const UpdateArgs<double>& a, int64_t b0, int64_t b1, double* xi) { update_rows_impl(a, b0, b1, xi); }

}  // namespace HEBM_CPU_NS
}  // namespace cpu
}  // namespace hebm
