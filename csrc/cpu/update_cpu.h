// CPU kernel of hebm::langevin_update: the interface between the ATen launcher (update_cpu.cpp) and the
// implementation (update_cpu_impl.h), compiled once per instruction set like the fused sampler (latent_cpu.h).
// Nothing here includes ATen.
#pragma once

#include <stdint.h>

#include "core/schedule.h"

namespace hebm {
namespace cpu {

using core::UpdateArgs;  // csrc/core/schedule.h

// Chains [b0, b1); xi: scratch of round_up(D, 4) elements.
#define HEBM_DECLARE_UPDATE_NS(ns)                                                            \
  namespace ns {                                                                              \
  void update_rows(const UpdateArgs<float>& a, int64_t b0, int64_t b1, float* xi);            \
  void update_rows(const UpdateArgs<double>& a, int64_t b0, int64_t b1, double* xi);          \
  }
HEBM_DECLARE_UPDATE_NS(cap_default)
#if defined(__x86_64__) || defined(_M_X64)
HEBM_DECLARE_UPDATE_NS(cap_avx2)
HEBM_DECLARE_UPDATE_NS(cap_avx512)
#endif
#undef HEBM_DECLARE_UPDATE_NS

}  // namespace cpu
}  // namespace hebm
