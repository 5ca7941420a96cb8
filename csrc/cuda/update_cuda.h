// Launcher of hebm::langevin_update on CUDA. Plain C++ interface (no ATen, no CUDA types) so that the .cu file
// compiles with a bare nvcc and the ATen glue (update_cuda_aten.cpp) needs no CUDA headers of its own.
#pragma once

#include <stdint.h>

#include "core/schedule.h"

namespace hebm {
namespace cuda {

// Launches on ``stream`` (a cudaStream_t); a.rng is in device memory, read by the kernel, so that a captured CUDA
// graph draws new noise when the rng tensor is refilled. Returns nullptr on success, else a message (a CUDA error).
const char* langevin_update_cuda_launch(const core::UpdateArgs<float>& a, void* stream);
const char* langevin_update_cuda_launch(const core::UpdateArgs<double>& a, void* stream);

}  // namespace cuda
}  // namespace hebm
