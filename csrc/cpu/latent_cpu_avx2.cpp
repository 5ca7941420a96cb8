// The CPU tile program compiled for the 'avx2' instruction set (chosen at run time by latent_cpu.cpp).
// Headers shared with other translation units come first, before the target switch.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>

#include "core/activations.h"
#include "core/philox.h"
#include "core/program.h"
#include "core/schedule.h"
#include "cpu/latent_cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define HEBM_CPU_NS cap_avx2
#define HEBM_VEC_BYTES 32
#define HEBM_ROW_BLOCK 4
#include "cpu/latent_cpu_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif  // x86-64
