// CUDA kernel of hebm::langevin_update: a grid-stride loop over groups of four elements of a chain (one Philox
// call gives the group's four normals, addressed as in csrc/core/philox.h), then THE update rule of
// csrc/core/schedule.h. Launched on the caller's stream; the seed and offset are read from device memory, so a
// captured CUDA graph draws new noise when the rng tensor is refilled. Includes nothing from ATen.
#include <cuda_runtime.h>

#include <stdio.h>

#include "core/philox.h"
#include "core/schedule.h"
#include "cuda/update_cuda.h"

namespace hebm {
namespace cuda {

namespace {

template <typename T, bool COND, int XI>  // XI: 0 no noise term, 1 explicit noise, 2 Philox
__global__ void langevin_update_kernel(const core::UpdateArgs<T> a) {
  const int64_t G = (a.D + 3) / 4;  // groups of four elements per chain (one Philox call each)
  uint64_t seed = 0, step = 0;
  if (XI == 2) {
    seed = static_cast<uint64_t>(a.rng[0]);
    step = static_cast<uint64_t>(a.rng[1]) + static_cast<uint64_t>(a.step);
  }
  const int64_t total = a.B * G;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / G, g = i - b * G;
    T xi[4] = {T(0), T(0), T(0), T(0)};
    if (XI == 2) core::normal4<T>(seed, step, static_cast<uint64_t>(b), static_cast<uint64_t>(g), xi);
    const int64_t d0 = 4 * g;
    const int64_t o = b * a.D + d0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (d0 + j < a.D) {
        const T x = XI == 1 ? a.noise[o + j] : xi[j];
        a.out[o + j] = core::langevin_update<T>(a.y[o + j], COND ? a.cond[o + j] : T(0), a.grad[o + j], x, a.c1,
                                                a.c2, a.h, a.n);
      }
    }
  }
}

constexpr int kThreads = 256;
thread_local char g_msg[256];

template <typename T>
const char* launch(const core::UpdateArgs<T>& a, void* stream) {
  const int64_t total = a.B * ((a.D + 3) / 4);
  if (total == 0) return nullptr;
  const int64_t want = (total + kThreads - 1) / kThreads;
  const unsigned blocks = unsigned(want < 65535 ? want : 65535);  // the grid-stride loop covers the rest
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int xi = a.noise ? 1 : (a.n != T(0) ? 2 : 0);
#define HEBM_LAUNCH(COND, XI) langevin_update_kernel<T, COND, XI><<<blocks, kThreads, 0, s>>>(a)
  if (a.cond) {
    if (xi == 1) HEBM_LAUNCH(true, 1);
    else if (xi == 2) HEBM_LAUNCH(true, 2);
    else HEBM_LAUNCH(true, 0);
  } else {
    if (xi == 1) HEBM_LAUNCH(false, 1);
    else if (xi == 2) HEBM_LAUNCH(false, 2);
    else HEBM_LAUNCH(false, 0);
  }
#undef HEBM_LAUNCH
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    snprintf(g_msg, sizeof(g_msg), "langevin_update (CUDA): kernel launch failed: %s", cudaGetErrorString(e));
    return g_msg;
  }
  return nullptr;
}

}  // namespace

const char* langevin_update_cuda_launch(const core::UpdateArgs<float>& a, void* stream) {
  return launch<float>(a, stream);
}
const char* langevin_update_cuda_launch(const core::UpdateArgs<double>& a, void* stream) {
  return launch<double>(a, stream);
}

}  // namespace cuda
}  // namespace hebm
