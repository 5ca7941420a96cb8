// The streamed kernels latent_streamed_kernel<C>, C = 1-4, and their launcher
// (latent_kernels.cuh: why one file per family).
#include "cuda/latent_kernels.cuh"

HEBM_LATENT_FAMILY(launch_streamed, latent_streamed_kernel<1>, latent_streamed_kernel<2>,
                   latent_streamed_kernel<3>, latent_streamed_kernel<4>)
