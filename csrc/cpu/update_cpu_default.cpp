// hebm::langevin_update's CPU kernel compiled for the 'default' instruction set (chosen at run time by update_cpu.cpp).
// Headers shared with other translation units come first, before the target switch.
#include <math.h>
#include <stdint.h>

#include <cmath>

#include "core/philox.h"
#include "core/schedule.h"
#include "cpu/update_cpu.h"

#define HEBM_CPU_NS cap_default
#include "cpu/update_cpu_impl.h"
