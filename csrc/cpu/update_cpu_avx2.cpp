// hebm::langevin_update's CPU kernel compiled for the 'avx2' instruction set (chosen at run time by update_cpu.cpp).
// Headers shared with other translation units come first, before the target switch.
#include <math.h>
#include <stdint.h>

#include <cmath>

#include "core/philox.h"
#include "core/schedule.h"
#include "cpu/update_cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define HEBM_CPU_NS cap_avx2
#include "cpu/update_cpu_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif  // x86-64
