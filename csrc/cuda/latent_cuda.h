// Launcher of the CUDA fused latent sampler. Plain C++ interface (no ATen, no CUDA types) so that the .cu file
// compiles with a bare nvcc and the ATen glue (latent_cuda_aten.cpp) needs no CUDA headers of its own.
#pragma once

#include <stdint.h>

#include "core/block_sampler.h"

namespace hebm {
namespace cuda {

struct LatentCudaCall {
  core::BlockArgs<float> args;  // all but args.lay, which the launcher picks for the device (latent_checks.h fills it)
  uint32_t* bf16_pairs = nullptr;  // precision bf16: core::bf16_pair_words(prog) device words, which the launcher
                                   // fills (core::bf16_pair_word) before the kernel and passes as args.bf16_pairs
  int device;
  void* stream;                 // cudaStream_t
};

// Returns nullptr on success, else a message (the launch configuration did not fit, or a CUDA error). *path: the
// path taken (core::LatentPath); *why: on the v1 path, why the v2 paths did not take the program (else "").
const char* latent_langevin_cuda_launch(const LatentCudaCall& c, int* path, const char** why);

}  // namespace cuda
}  // namespace hebm
