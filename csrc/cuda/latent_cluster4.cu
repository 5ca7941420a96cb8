// The 4-block cluster kernels latent_cluster_kernel<C, 4>, C = 1-4, and their launcher
// (latent_kernels.cuh: why one file per family).
#include "cuda/latent_kernels.cuh"

HEBM_LATENT_FAMILY(launch_cluster4, latent_cluster_kernel<1, 4>, latent_cluster_kernel<2, 4>,
                   latent_cluster_kernel<3, 4>, latent_cluster_kernel<4, 4>)
