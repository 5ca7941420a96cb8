// The kernels of the CUDA fused latent sampler (every v2 family) and their launch, shared by the translation units
// that instantiate them: latent_resident.cu, latent_cluster2.cu, latent_cluster4.cu, latent_streamed.cu and
// latent_throughput.cu, one per family, each with the family's launcher; latent_cuda.cu holds the v1 staged kernel,
// the bf16 packing and the dispatch (latent_langevin_cuda_launch). One file per family so that a build compiles
// them in parallel (ninja, MAX_JOBS): the 4-chain kernels take ptxas minutes each, and the 21 kernels of one
// file ran through one nvcc process on one core, the longest step of a GPU machine's build.
// The kernels have internal linkage (the anonymous namespace): each is instantiated only in the file that launches
// it, so no kernel exists in two of the extension's device images. Includes nothing from ATen.
#pragma once

#include <cuda_runtime.h>

#include "core/block_sampler.h"
#include "core/launch_plan.h"
#include "core/streamed_linear.h"
#include "core/tile_linear.h"
#include "core/warp_linear.h"
#include "cuda/latent_cuda.h"

namespace hebm {
namespace cuda {

// A CUDA error as the launcher's message ("latent_langevin (CUDA): what: error"), in latent_cuda.cu's buffer.
const char* launch_fail(const char* what, cudaError_t e);

// The family launchers (one file each): the instantiation for the plan's chains per block (P.tile, 1-4) or, on the
// throughput path, the call's matmul precision (a.precision); nullptr on success, else the message.
const char* launch_resident(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s);
const char* launch_cluster2(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s);
const char* launch_cluster4(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s);
const char* launch_streamed(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s);
const char* launch_throughput(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s);

namespace {

using core::DeviceCtx;

// Every kernel takes its parameter block as `const __grid_constant__`: nvcc keeps parts of the walk out of line
// (block_step, block_head: they take BlockArgs by reference), and taking the address of a plain by-value kernel
// parameter copies the whole block (~9.3 KB) to a stack frame in local memory.

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

// One launch of `kernel` with the plan's grid, block, dynamic shared memory and cluster dimension.
template <class K>
const char* launch(K kernel, const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(P.smem_bytes));
  if (e != cudaSuccess) return launch_fail("cudaFuncSetAttribute", e);
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
  if (e != cudaSuccess) return launch_fail("kernel launch", e);
  return nullptr;
}

// The kernel of a family for the plan's chains per block: kernels[P.tile - 1] (tiles of 1-4 chains).
using LatentKernel = void (*)(const core::BlockArgs<float>);
inline const char* launch_by_tile(const LatentKernel (&kernels)[4], const core::LaunchPlan& P,
                                  const core::BlockArgs<float>& a, cudaStream_t s) {
  return launch(kernels[P.tile >= 1 && P.tile <= 4 ? P.tile - 1 : 3], P, a, s);
}

}  // namespace

}  // namespace cuda
}  // namespace hebm

// A family's file: its launcher `fn` (declared above) over its four instantiations, for 1-4 chains a block.
#define HEBM_LATENT_FAMILY(fn, ...)                                                                   \
  namespace hebm {                                                                                    \
  namespace cuda {                                                                                    \
  const char* fn(const core::LaunchPlan& P, const core::BlockArgs<float>& a, cudaStream_t s) {        \
    static const LatentKernel kernels[4] = {__VA_ARGS__};                                             \
    return launch_by_tile(kernels, P, a, s);                                                          \
  }                                                                                                   \
  }                                                                                                   \
  }
