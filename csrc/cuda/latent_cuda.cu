// CUDA fused latent sampler: ONE launch runs every Langevin step of every timestep; each block owns a tile of
// chains in shared memory (csrc/core/block_sampler.h holds the algorithm). Launched on the caller's stream, no
// host synchronisation, the Philox seed read from device memory (CUDA-graph safe). Includes nothing from ATen.
#include <cuda_runtime.h>

#include <stdio.h>

#include "core/block_sampler.h"
#include "cuda/latent_cuda.h"

namespace hebm {
namespace cuda {

namespace {

struct DeviceCtx {
  __device__ __forceinline__ int tid() const { return threadIdx.x; }
  __device__ __forceinline__ int nthreads() const { return blockDim.x; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
};

__global__ void latent_langevin_kernel(const core::BlockArgs<float> a) {
  extern __shared__ float smem[];
  DeviceCtx ctx;
  core::block_program<float, DeviceCtx>(ctx, a, smem, blockIdx.x);
}

constexpr int kThreads = 256;

thread_local char g_msg[512];

const char* fail(const char* what, cudaError_t e) {
  snprintf(g_msg, sizeof(g_msg), "latent_langevin (CUDA): %s: %s", what, cudaGetErrorString(e));
  return g_msg;
}

}  // namespace

const char* latent_langevin_cuda_launch(const LatentCudaCall& c) {
  const core::ProgramDesc& p = c.args.prog;
  const int64_t B = c.args.B;
  int smem_optin = 0, sms = 0;
  cudaError_t e = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c.device);
  if (e != cudaSuccess) return fail("cudaDeviceGetAttribute", e);
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c.device);
  if (e != cudaSuccess) return fail("cudaDeviceGetAttribute", e);

  const int per_chain = core::block_elems_per_chain(p);
  const int max_elems = smem_optin / int(sizeof(float));
  int stage_rows = core::kBlockMaxJC;
  int stage = core::block_stage_elems(p, stage_rows);
  while (stage_rows > 4 && stage + per_chain > max_elems) stage = core::block_stage_elems(p, stage_rows /= 2);
  const int fit = (max_elems - stage) / per_chain;
  if (fit < 1) {
    snprintf(g_msg, sizeof(g_msg),
             "latent_langevin (CUDA): one chain of this program needs %d floats of shared memory (plus %d for staging "
             "weights), the device has %d per block: reduce the hidden widths (widest layer %d) or the latent "
             "dimension (%d)",
             per_chain, stage, max_elems, p.max_width, p.D);
    return g_msg;
  }
  int tile = c.tile_override > 0 ? c.tile_override : int((B + sms - 1) / sms);
  tile = tile < 1 ? 1 : tile;
  tile = tile > core::kBlockMaxTile ? core::kBlockMaxTile : tile;
  tile = tile > fit ? fit : tile;

  core::BlockArgs<float> a = c.args;
  a.lay = core::block_layout(p, tile, stage);
  const size_t bytes = size_t(a.lay.total) * sizeof(float);
  e = cudaFuncSetAttribute(latent_langevin_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) return fail("cudaFuncSetAttribute", e);
  const unsigned blocks = unsigned((B + tile - 1) / tile);
  latent_langevin_kernel<<<blocks, kThreads, bytes, static_cast<cudaStream_t>(c.stream)>>>(a);
  e = cudaGetLastError();
  if (e != cudaSuccess) return fail("kernel launch", e);
  return nullptr;
}

}  // namespace cuda
}  // namespace hebm
