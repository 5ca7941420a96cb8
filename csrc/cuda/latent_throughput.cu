// The throughput kernels latent_throughput_kernel<PREC> (fp32, tf32, bf16) and their launcher
// (latent_kernels.cuh: why one file per family).
#include "cuda/latent_kernels.cuh"

namespace hebm {
namespace cuda {

const char* launch_throughput(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s) {
  switch (a.precision) {
    case core::kPrecisionTf32: return launch(latent_throughput_kernel<core::kPrecisionTf32>, P, a, s);
    case core::kPrecisionBf16: return launch(latent_throughput_kernel<core::kPrecisionBf16>, P, a, s);
    default: return launch(latent_throughput_kernel<core::kPrecisionFp32>, P, a, s);
  }
}

}  // namespace cuda
}  // namespace hebm
