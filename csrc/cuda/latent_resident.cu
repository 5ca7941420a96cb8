// The resident kernels latent_resident_kernel<C>, C = 1-4 chains a block, and their launcher
// (latent_kernels.cuh: why one file per family).
#include "cuda/latent_kernels.cuh"

HEBM_LATENT_FAMILY(launch_resident, latent_resident_kernel<1>, latent_resident_kernel<2>,
                   latent_resident_kernel<3>, latent_resident_kernel<4>)
