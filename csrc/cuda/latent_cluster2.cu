// The 2-block cluster kernels latent_cluster_kernel<C, 2>, C = 1-4, and their launcher
// (latent_kernels.cuh: why one file per family).
#include "cuda/latent_kernels.cuh"

HEBM_LATENT_FAMILY(launch_cluster2, latent_cluster_kernel<1, 2>, latent_cluster_kernel<2, 2>,
                   latent_cluster_kernel<3, 2>, latent_cluster_kernel<4, 2>)
