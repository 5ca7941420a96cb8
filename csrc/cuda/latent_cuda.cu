// CUDA fused latent sampler: ONE launch runs every Langevin step of every timestep. The launcher picks the path
// (csrc/core/launch_plan.h): v2 with every weight resident in shared memory on one block or a 2- or 4-block cluster
// (csrc/core/warp_linear.h), else v2 streaming the weights through a cp.async double buffer
// (csrc/core/streamed_linear.h), else v1 with staged weights (block_sampler.h's StagedEngine), whose reason the caller
// turns into a warning. Launched on the caller's stream, no host synchronisation, the Philox seed read from device
// memory (CUDA-graph safe). Includes nothing from ATen. The v2 kernels and their launchers are in one file per
// family (latent_kernels.cuh); this file has the v1 staged kernel, the bf16 weight packing and the dispatch.
#include <cuda_runtime.h>

#include <stdio.h>

#include "cuda/latent_kernels.cuh"

namespace hebm {
namespace cuda {

namespace {

thread_local char g_msg[512];

__global__ void __launch_bounds__(core::kStagedThreads)
    latent_staged_kernel(const __grid_constant__ core::BlockArgs<float> a) {
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx, core::StagedEngine<float, DeviceCtx>>(ctx, a, reinterpret_cast<float*>(smem4),
                                                                              blockIdx.x);
}

// precision bf16: the weights as packed bf16 k-pairs (tile_mma.h), on the kernel's stream before it.
__global__ void pack_bf16_pairs_kernel(const __grid_constant__ core::ProgramDesc p, const float* params,
                                       uint32_t* out, int64_t n) {
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < n; w += int64_t(gridDim.x) * blockDim.x)
    out[w] = core::bf16_pair_word(p, params, w);
}

}  // namespace

const char* launch_fail(const char* what, cudaError_t e) {
  snprintf(g_msg, sizeof(g_msg), "latent_langevin (CUDA): %s: %s", what, cudaGetErrorString(e));
  return g_msg;
}

const char* latent_langevin_cuda_launch(const LatentCudaCall& c, int* path, const char** why) {
  const core::ProgramDesc& p = c.args.prog;
  int smem_optin = 0, sms = 0, major = 0;
  cudaError_t e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c.device);
  if (e != cudaSuccess) return launch_fail("cudaDeviceGetAttribute", e);
  static thread_local core::LaunchPlan P;
  const core::DeviceProps dev{sms, smem_optin, major};
  P = core::plan_launch(p, c.args.B, dev, int(sizeof(float)), -1, 0, 0, core::kWarpThreads / 32, c.args.precision);
  *path = P.path;
  *why = P.why;
  char perr[400];
  if (const char* pe = core::precision_plan_error(P, p, dev, int(sizeof(float)), c.args.precision, perr,
                                                  sizeof(perr))) {
    snprintf(g_msg, sizeof(g_msg), "latent_langevin (CUDA): %s", pe);
    return g_msg;
  }
  if (P.path == core::PATH_STAGED && P.tile < 1) {
    snprintf(g_msg, sizeof(g_msg),
             "latent_langevin (CUDA): one chain of this program needs %d floats of shared memory plus the staging "
             "area, the device has %d bytes per block: reduce the hidden widths (widest layer %d) or the latent "
             "dimension (%d)",
             core::block_elems_per_chain(p), smem_optin, p.max_width, p.D);
    return g_msg;
  }
  core::BlockArgs<float> a = c.args;
  a.lay = P.lay;
  const cudaStream_t s = static_cast<cudaStream_t>(c.stream);
  if (P.path == core::PATH_STAGED) return launch(latent_staged_kernel, P, a, s);
  if (P.path == core::PATH_STREAMED) return launch_streamed(P, a, s);
  if (P.path == core::PATH_THROUGHPUT) {
    if (a.precision == core::kPrecisionBf16) {
      const int64_t n = core::bf16_pair_words(p);
      if (c.bf16_pairs == nullptr) {
        snprintf(g_msg, sizeof(g_msg), "latent_langevin (CUDA): precision bf16 needs the packed weight buffer");
        return g_msg;
      }
      pack_bf16_pairs_kernel<<<unsigned((n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024), 256, 0, s>>>(
          p, c.args.params, c.bf16_pairs, n);
      const cudaError_t pe = cudaGetLastError();
      if (pe != cudaSuccess) return launch_fail("bf16 weight packing launch", pe);
      a.bf16_pairs = c.bf16_pairs;
    }
    return launch_throughput(P, a, s);
  }
  if (P.path == core::PATH_CLUSTER) return P.cluster == 4 ? launch_cluster4(P, a, s) : launch_cluster2(P, a, s);
  return launch_resident(P, a, s);
}

}  // namespace cuda
}  // namespace hebm
