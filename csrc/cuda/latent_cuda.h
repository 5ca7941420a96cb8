// Launcher of the CUDA fused latent sampler. Plain C++ interface (no ATen, no CUDA types) so that the .cu file
// compiles with a bare nvcc and the ATen glue (latent_cuda_aten.cpp) needs no CUDA headers of its own.
#pragma once

#include <stdint.h>

#include "core/program.h"
#include "core/schedule.h"

namespace hebm {
namespace cuda {

struct LatentCudaCall {
  const core::ProgramDesc* prog;
  const core::ScheduleDesc* sched;
  const float* params;
  const float* y0;
  const float* cond;       // or null
  const int64_t* tsel;     // device, or null
  const float* noise;      // or null
  const int64_t* rng;      // device [seed, offset], or null with noise
  float* out;
  float* trace;            // or null
  int64_t B;
  int device;
  void* stream;            // cudaStream_t
  int tile_override;       // 0: choose
};

// Returns nullptr on success, else a message (the launch configuration did not fit, or a CUDA error).
const char* latent_langevin_cuda_launch(const LatentCudaCall& c);

}  // namespace cuda
}  // namespace hebm
