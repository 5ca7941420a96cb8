// CUDA fused latent sampler: ONE launch runs every Langevin step of every timestep. The launcher picks the path
// (csrc/core/launch_plan.h): v2 with every weight resident in shared memory on one block or a 2-block cluster
// (csrc/core/warp_linear.h), else v2 streaming the weights through a cp.async double buffer
// (csrc/core/streamed_linear.h), else v1 with staged weights (block_sampler.h's StagedEngine), whose reason the caller
// turns into a warning. Launched on the caller's stream, no host synchronisation, the Philox seed read from device
// memory (CUDA-graph safe). Includes nothing from ATen.
#include <cuda_runtime.h>

#include <stdio.h>

#include "core/block_sampler.h"
#include "core/launch_plan.h"
#include "core/streamed_linear.h"
#include "core/tile_linear.h"
#include "core/warp_linear.h"
#include "cuda/latent_cuda.h"

namespace hebm {
namespace cuda {

namespace {

using core::DeviceCtx;

// Every kernel takes its parameter block as `const __grid_constant__`: nvcc keeps parts of the walk out of line
// (block_step, block_head: they take BlockArgs by reference), and taking the address of a plain by-value kernel
// parameter copies the whole block (~9.3 KB) to a stack frame in local memory.

__global__ void __launch_bounds__(core::kStagedThreads)
    latent_staged_kernel(const __grid_constant__ core::BlockArgs<float> a) {
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx, core::StagedEngine<float, DeviceCtx>>(ctx, a, reinterpret_cast<float*>(smem4),
                                                                              blockIdx.x);
}

// The latency kernels (resident, cluster) run every precision: WarpEngine branches on a.precision at run time
// (fp32, or tf32 / bf16 operands rounded, bf16 weights resident as packed pairs: warp_linear.h), no instantiation
// per precision. The streamed and staged kernels are fp32 only (the planner never gives them tf32 / bf16).
template <int C>
__global__ void __launch_bounds__(core::kWarpThreads, 1)
    latent_resident_kernel(const __grid_constant__ core::BlockArgs<float> a) {
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx, core::WarpEngine<float, DeviceCtx, C, 1>>(
      ctx, a, reinterpret_cast<float*>(smem4), blockIdx.x);
}

// CS blocks per cluster (2 or 4: a compile-time parameter like C), launched with the cluster dimension attribute.
template <int C, int CS>
__global__ void __launch_bounds__(core::kWarpThreads, 1)
    latent_cluster_kernel(const __grid_constant__ core::BlockArgs<float> a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx, core::WarpEngine<float, DeviceCtx, C, CS>>(
      ctx, a, reinterpret_cast<float*>(smem4), blockIdx.x / CS);
#else
  __trap();  // the launcher takes the cluster path only on compute capability 9.0 and newer
#endif
}

template <int C>
__global__ void __launch_bounds__(core::kWarpThreads, 1)
    latent_streamed_kernel(const __grid_constant__ core::BlockArgs<float> a) {
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx, core::StreamedEngine<float, DeviceCtx, C>>(
      ctx, a, reinterpret_cast<float*>(smem4), blockIdx.x);
}

// The throughput path (large B): persistent blocks (at most one per SM), each looping over tiles of chains; one
// kernel per matmul precision (PREC, core::Precision: fp32 the SIMT GEMM, tf32 / bf16 the tensor-core GEMM of
// tile_mma.h). The mma kernels need sm_80 (the launcher checks the device first).
template <int PREC>
__global__ void __launch_bounds__(core::kTileThreads, 1)
    latent_throughput_kernel(const __grid_constant__ core::BlockArgs<float> a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if (PREC != core::kPrecisionFp32) {
    __trap();  // no mma.sync before sm_80
    return;
  }
#endif
  extern __shared__ float4 smem4[];
  DeviceCtx ctx;
  core::throughput_program<float, DeviceCtx, core::TileEngine<float, DeviceCtx, PREC>>(
      ctx, a, reinterpret_cast<float*>(smem4), blockIdx.x, gridDim.x);
}

// precision bf16: the weights as packed bf16 k-pairs (tile_mma.h), on the kernel's stream before it.
__global__ void pack_bf16_pairs_kernel(const __grid_constant__ core::ProgramDesc p, const float* params,
                                       uint32_t* out, int64_t n) {
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < n; w += int64_t(gridDim.x) * blockDim.x)
    out[w] = core::bf16_pair_word(p, params, w);
}

thread_local char g_msg[512];

const char* fail(const char* what, cudaError_t e) {
  snprintf(g_msg, sizeof(g_msg), "latent_langevin (CUDA): %s: %s", what, cudaGetErrorString(e));
  return g_msg;
}

template <class K>
const char* launch(K kernel, const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(P.smem_bytes));
  if (e != cudaSuccess) return fail("cudaFuncSetAttribute", e);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(P.blocks));
  cfg.blockDim = dim3(unsigned(P.threads));
  cfg.dynamicSmemBytes = size_t(P.smem_bytes);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  if (P.cluster > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(P.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  e = cudaLaunchKernelEx(&cfg, kernel, a);
  if (e != cudaSuccess) return fail("kernel launch", e);
  return nullptr;
}

}  // namespace

const char* latent_langevin_cuda_launch(const LatentCudaCall& c, int* path, const char** why) {
  const core::ProgramDesc& p = c.args.prog;
  int smem_optin = 0, sms = 0, major = 0;
  cudaError_t e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c.device);
  if (e != cudaSuccess) return fail("cudaDeviceGetAttribute", e);
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
  if (P.path == core::PATH_STREAMED) {
    switch (P.tile) {
      case 1: return launch(latent_streamed_kernel<1>, P, a, s);
      case 2: return launch(latent_streamed_kernel<2>, P, a, s);
      case 3: return launch(latent_streamed_kernel<3>, P, a, s);
      default: return launch(latent_streamed_kernel<4>, P, a, s);
    }
  }
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
      if (pe != cudaSuccess) return fail("bf16 weight packing launch", pe);
      a.bf16_pairs = c.bf16_pairs;
    }
    switch (a.precision) {
      case core::kPrecisionTf32: return launch(latent_throughput_kernel<core::kPrecisionTf32>, P, a, s);
      case core::kPrecisionBf16: return launch(latent_throughput_kernel<core::kPrecisionBf16>, P, a, s);
      default: return launch(latent_throughput_kernel<core::kPrecisionFp32>, P, a, s);
    }
  }
  if (P.path == core::PATH_CLUSTER && P.cluster == 4) {
    switch (P.tile) {
      case 1: return launch(latent_cluster_kernel<1, 4>, P, a, s);
      case 2: return launch(latent_cluster_kernel<2, 4>, P, a, s);
      case 3: return launch(latent_cluster_kernel<3, 4>, P, a, s);
      default: return launch(latent_cluster_kernel<4, 4>, P, a, s);
    }
  }
  const bool cl = P.path == core::PATH_CLUSTER;
  switch (P.tile) {
    case 1: return cl ? launch(latent_cluster_kernel<1, 2>, P, a, s) : launch(latent_resident_kernel<1>, P, a, s);
    case 2: return cl ? launch(latent_cluster_kernel<2, 2>, P, a, s) : launch(latent_resident_kernel<2>, P, a, s);
    case 3: return cl ? launch(latent_cluster_kernel<3, 2>, P, a, s) : launch(latent_resident_kernel<3>, P, a, s);
    default: return cl ? launch(latent_cluster_kernel<4, 2>, P, a, s) : launch(latent_resident_kernel<4>, P, a, s);
  }
}

}  // namespace cuda
}  // namespace hebm
