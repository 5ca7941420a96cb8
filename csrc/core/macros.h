// Portable qualifiers for the header-only core: the same source compiles as host C++ (CPU kernels, unit tests)
// and as CUDA device code (the CUDA kernels). Nothing here includes ATen.
#pragma once

#if defined(__CUDACC__)
#define HEBM_HD __host__ __device__ __forceinline__
#define HEBM_HOST_DEVICE __host__ __device__
#elif defined(_MSC_VER)
#define HEBM_HD __forceinline
#define HEBM_HOST_DEVICE
#else
// always_inline: the CPU kernels compile the core once per instruction set (see csrc/cpu/); inlining everywhere
// keeps one instruction set's copy of a core function from being linked into another's caller.
#define HEBM_HD inline __attribute__((always_inline))
#define HEBM_HOST_DEVICE
#endif

#if defined(__CUDA_ARCH__)
#define HEBM_ON_DEVICE 1
#else
#define HEBM_ON_DEVICE 0
#endif

namespace hebm {
namespace core {

template <typename T>
HEBM_HD T min_(T a, T b) { return a < b ? a : b; }
template <typename T>
HEBM_HD T max_(T a, T b) { return a < b ? b : a; }
template <typename T>
HEBM_HD T round_up(T x, T m) { return (x + m - 1) / m * m; }

}  // namespace core
}  // namespace hebm
