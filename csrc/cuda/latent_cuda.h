// Launcher of the CUDA fused latent sampler. Plain C++ interface (no ATen, no CUDA types) so that the .cu file
// compiles with a bare nvcc and the ATen glue (latent_cuda_aten.cpp) needs no CUDA headers of its own.
#pragma once

#include <stdint.h>

#include "core/block_sampler.h"

namespace hebm {
namespace cuda {

struct LatentCudaCall {
  core::BlockArgs<float> args;  // all but args.lay, which the launcher picks for the device (latent_checks.h fills it)
  int device;
  void* stream;                 // cudaStream_t
  int tile_override;            // 0: choose
};

// Returns nullptr on success, else a message (the launch configuration did not fit, or a CUDA error).
const char* latent_langevin_cuda_launch(const LatentCudaCall& c);

}  // namespace cuda
}  // namespace hebm
