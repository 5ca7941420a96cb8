// The CPU tile program compiled for the 'default' instruction set (chosen at run time by latent_cpu.cpp).
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

#define HEBM_CPU_NS cap_default
#define HEBM_VEC_BYTES 16
#define HEBM_ROW_BLOCK 4
#include "cpu/latent_cpu_impl.h"
