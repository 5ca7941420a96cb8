// Launcher of hebm::langevin_update on CUDA. Plain C++ interface (no ATen, no CUDA types) so that the .cu file
// compiles with a bare nvcc and the ATen glue (update_cuda_aten.cpp) needs no CUDA headers of its own.
#pragma once

#include <stdint.h>

namespace hebm {
namespace cuda {

template <typename T>
struct UpdateCudaCall {
  const T* y;           // [B, D]
  const T* cond;        // [B, D] or null
  const T* grad;        // [B, D]
  const T* noise;       // [B, D] or null (then Philox when n != 0)
  const int64_t* rng;   // device [seed, offset], or null with noise
  T* out;               // [B, D]
  int64_t B, D;
  int64_t step;         // global step index (added to the offset on the device)
  double c1, c2, h, n;
  void* stream;         // cudaStream_t
};

// Returns nullptr on success, else a message (a CUDA launch error).
const char* langevin_update_cuda_launch(const UpdateCudaCall<float>& c);
const char* langevin_update_cuda_launch(const UpdateCudaCall<double>& c);

}  // namespace cuda
}  // namespace hebm
