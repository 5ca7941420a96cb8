// The CUDA fused latent sampler, written once as a "block program": one thread block owns a tile of chains that
// stays in shared memory through every step of every timestep; the weights are staged through shared memory in
// chunks. The program is templated on an execution context (tid, nthreads, sync), so the SAME code runs
//   - on the GPU (csrc/cuda/latent_cuda.cu: DeviceCtx, __syncthreads), and
//   - on the CPU with real threads and a barrier (csrc/cpu/block_emulation.cpp), which is how this machine, with
//     no GPU, tests the kernel's indexing, chunking and synchronisation against the eager reference.
// It uses only block-stride loops and barriers (no warp intrinsics), so both executions compute the same thing.
#pragma once

#include <stdint.h>

#include "activations.h"
#include "macros.h"
#include "philox.h"
#include "program.h"
#include "schedule.h"

#if defined(__CUDACC__)
#define HEBM_BLOCK_FN __device__ inline
#else
#define HEBM_BLOCK_FN inline
#endif

namespace hebm {
namespace core {

constexpr int kBlockMaxTile = 32;  // chains per block at most
constexpr int kBlockMaxJC = 64;    // weight rows staged per chunk at most

// Shared-memory layout of one block, in elements of T (offsets), computed on the host.
struct BlockLayout {
  int tile;   // chains per block
  int ws;     // staging area (elements)
  int y, yc, g, z, gz, e, d0, d1, go, stage, trow;  // trow: int array [tile] stored in T-sized slots
  int h[kMaxLinears], dh[kMaxLinears];
  int total;  // elements
};

HEBM_HD int odd_stride(int n) { return n | 1; }

inline BlockLayout block_layout(const ProgramDesc& p, int tile, int ws) {
  BlockLayout L;
  L.tile = tile;
  L.ws = ws;
  int o = 0;
  L.y = o; o += tile * p.D;
  L.yc = o; o += tile * p.D;
  L.g = o; o += tile * p.D;
  L.z = o; o += tile * p.D;   // z = T(u) (u-parameterised ladder)
  L.gz = o; o += tile * p.D;
  L.e = o; o += tile;
  L.trow = o; o += tile;
  L.d0 = o; o += tile * p.max_width;
  L.d1 = o; o += tile * p.max_width;
  L.go = o; o += tile * p.max_width;
  for (int j = 0; j < p.n_lin; ++j) {
    L.h[j] = o; o += tile * p.lin[j].out;
    L.dh[j] = o; o += tile * p.lin[j].out;
  }
  L.stage = o; o += ws;
  L.total = o;
  return L;
}

// Elements per chain (everything but the staging area), for choosing the tile on the host.
inline int block_elems_per_chain(const ProgramDesc& p) {
  int n = 5 * p.D + 2 + 3 * p.max_width;
  for (int j = 0; j < p.n_lin; ++j) n += 2 * p.lin[j].out;
  return n;
}

// Staging area: enough for at least one odd-strided row of the widest layer (and up to kBlockMaxJC rows).
inline int block_stage_elems(const ProgramDesc& p, int rows) { return rows * odd_stride(p.max_width); }

template <typename T>
struct BlockArgs {
  ProgramDesc prog;
  ScheduleDesc sched;
  BlockLayout lay;
  const T* params;
  const T* y0;
  const T* cond;          // or null
  const int64_t* tsel;    // or null
  const T* noise;         // or null
  const int64_t* rng;     // [seed, offset] (read in the kernel: no host synchronisation), or null with noise
  T* out;
  T* trace;               // or null
  int64_t B;
};

// ----------------------------------------------------------------------------------------------------------------
// Forward of one linear layer for all rows: OUT[r][j] = act(X[r] . W[j] + b[j] (+ tb[t_r][j])); DH = act'.
// (Output layer of a head: no activation, handled separately.)
template <typename T, int A, class Ctx>
HEBM_BLOCK_FN void block_linear_forward(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& L, const T* X, int ldx,
                                        T* H, T* DH, const int* trow, T slope, T* stage) {
  const int tile = a.lay.tile;
  const int ws = odd_stride(L.in);
  int jc = a.lay.ws / ws;
  jc = jc < kBlockMaxJC ? jc : kBlockMaxJC;
  const T* W = a.params + L.w;
  for (int j0 = 0; j0 < L.out; j0 += jc) {
    const int n = (L.out - j0) < jc ? (L.out - j0) : jc;
    for (int idx = ctx.tid(); idx < n * L.in; idx += ctx.nthreads()) {
      const int jj = idx / L.in, k = idx - jj * L.in;
      stage[jj * ws + k] = W[(int64_t)(j0 + jj) * L.in + k];
    }
    ctx.sync();
    for (int item = ctx.tid(); item < tile * n; item += ctx.nthreads()) {
      const int r = item / n, jj = item - r * n, j = j0 + jj;
      T acc = L.b >= 0 ? a.params[L.b + j] : T(0);
      if (L.tb >= 0) acc += a.params[L.tb + (int64_t)trow[r] * L.out + j];
      const T* x = X + r * ldx;
      const T* w = stage + jj * ws;
      for (int k = 0; k < L.in; ++k) acc += x[k] * w[k];
      T y, dy;
      act_value_grad<A, T>(acc, slope, y, dy);
      H[r * L.out + j] = y;
      DH[r * L.out + j] = dy;
    }
    ctx.sync();
  }
}

// Backward of one linear layer: DOUT[r][i] = (sum_o DIN[r][o] W[o][i]) * (DHprev ? DHprev[r][i] : 1), or, when
// G is given (first layer of a net), G[r][goff + i] += gscale[r] * sum_o DIN[r][o] W[o][i].
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_linear_backward(Ctx& ctx, const BlockArgs<T>& a, const LinearDesc& L, const T* DIN,
                                         T* DOUT, const T* DHprev, T* G, int ldg, int goff, const T* gscale,
                                         T* stage) {
  const int tile = a.lay.tile;
  const int ws = odd_stride(L.out);
  int ic = a.lay.ws / ws;
  ic = ic < kBlockMaxJC ? ic : kBlockMaxJC;
  const T* W = a.params + L.w;
  for (int i0 = 0; i0 < L.in; i0 += ic) {
    const int n = (L.in - i0) < ic ? (L.in - i0) : ic;
    for (int idx = ctx.tid(); idx < n * L.out; idx += ctx.nthreads()) {
      const int o = idx / n, ii = idx - o * n;
      stage[ii * ws + o] = W[(int64_t)o * L.in + i0 + ii];
    }
    ctx.sync();
    for (int item = ctx.tid(); item < tile * n; item += ctx.nthreads()) {
      const int r = item / n, ii = item - r * n, i = i0 + ii;
      const T* d = DIN + r * L.out;
      const T* w = stage + ii * ws;
      T acc = T(0);
      for (int o = 0; o < L.out; ++o) acc += d[o] * w[o];
      if (G) {
        G[r * ldg + goff + i] += (gscale ? gscale[r] : T(1)) * acc;
      } else {
        DOUT[r * L.in + i] = DHprev ? acc * DHprev[r * L.in + i] : acc;
      }
    }
    ctx.sync();
  }
}

// From d0 = the delta of the net's last hidden layer, down to its input: G[r][goff + i] += gscale[r] * dOut/dx
// (gscale null: 1).
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_hidden_backward(Ctx& ctx, const BlockArgs<T>& a, const NetDesc& net, T* smem, T* G, int ldg,
                                         const T* gscale) {
  const BlockLayout& lay = a.lay;
  T* stage = smem + lay.stage;
  T* d0 = smem + lay.d0;
  T* d1 = smem + lay.d1;
  for (int j = net.first + net.n_lin - 2; j >= net.first; --j) {
    const LinearDesc& L = a.prog.lin[j];
    if (j > net.first) {
      block_linear_backward<T, Ctx>(ctx, a, L, d0, d1, smem + lay.dh[j - 1], nullptr, 0, 0, nullptr, stage);
      T* tmp = d0;
      d0 = d1;
      d1 = tmp;
    } else {
      block_linear_backward<T, Ctx>(ctx, a, L, d0, nullptr, nullptr, G, ldg, net.in_off, gscale, stage);
    }
  }
}

// One head: E[r] += energy; G[r][slice] += -alpha_r * dE/dz.
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_head(Ctx& ctx, const BlockArgs<T>& a, const NetDesc& net, T* smem, const T* Z, T* G,
                              const int* trow, const T* galpha) {
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = a.prog.D;
  T* stage = smem + lay.stage;
  T* E = smem + lay.e;
  const T* X = Z + net.in_off;
  int ldx = D;
  for (int j = net.first; j < net.first + net.n_lin - 1; ++j) {
    const LinearDesc& L = a.prog.lin[j];
    const T param = L.param >= 0 ? a.params[L.param] : T(0);
    HEBM_DISPATCH_ACT(L.act, ACT,
                      (block_linear_forward<T, ACT, Ctx>(ctx, a, L, X, ldx, smem + lay.h[j], smem + lay.dh[j], trow,
                                                         param, stage)));
    X = smem + lay.h[j];
    ldx = L.out;
  }
  const LinearDesc& Lo = a.prog.lin[net.first + net.n_lin - 1];
  const T* w = a.params + Lo.w;
  const T b = Lo.b >= 0 ? a.params[Lo.b] : T(0);
  for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) {
    T s = T(0);
    const T* x = X + r * ldx;
    for (int k = 0; k < Lo.in; ++k) s += x[k] * w[k];
    E[r] += s + b;
  }
  if (net.n_lin == 1) {
    for (int idx = ctx.tid(); idx < tile * net.in_dim; idx += ctx.nthreads()) {
      const int r = idx / net.in_dim, i = idx - r * net.in_dim;
      G[r * D + net.in_off + i] += galpha[r] * w[i];
    }
    ctx.sync();
    return;
  }
  // delta of the last hidden layer, then down to the input
  T* d0 = smem + lay.d0;
  {
    const int last = net.first + net.n_lin - 2;
    const T* dh = smem + lay.dh[last];
    const int width = a.prog.lin[last].out;
    for (int idx = ctx.tid(); idx < tile * width; idx += ctx.nthreads()) d0[idx] = w[idx % width] * dh[idx];
  }
  ctx.sync();
  block_hidden_backward<T, Ctx>(ctx, a, net, smem, G, D, galpha);
}

// ----------------------------------------------------------------------------------------------------------------
// The Gaussian ladder: conditionals mu_l, sigma_l = MLP_l(z_{l-1}), layers top first (csrc/core/program.h).

// Forward of a conditional on its parent rows X (ld D): h[last] holds mu in [0, d) and sigma in [d, 2d) of each
// row (ld 2d), dh[last] dmu/dmu_raw and dsigma/dell_raw.
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_ladder_forward(Ctx& ctx, const BlockArgs<T>& a, const NetDesc& net, T* smem, const T* X,
                                        const int* trow) {
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile;
  T* stage = smem + lay.stage;
  int ldx = a.prog.D;
  for (int j = net.first; j < net.first + net.n_lin - 1; ++j) {
    const LinearDesc& L = a.prog.lin[j];
    const T param = L.param >= 0 ? a.params[L.param] : T(0);
    HEBM_DISPATCH_ACT(L.act, ACT,
                      (block_linear_forward<T, ACT, Ctx>(ctx, a, L, X, ldx, smem + lay.h[j], smem + lay.dh[j], trow,
                                                         param, stage)));
    X = smem + lay.h[j];
    ldx = L.out;
  }
  const int jo = net.first + net.n_lin - 1;
  T* O = smem + lay.h[jo];
  T* DO = smem + lay.dh[jo];
  block_linear_forward<T, ACT_IDENTITY, Ctx>(ctx, a, a.prog.lin[jo], X, ldx, O, DO, trow, T(0), stage);
  const int d = net.out_dim / 2;
  const T sigma_min = a.params[a.prog.base_param];
  const bool clamp = a.prog.soft_clamp != 0;
  for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
    const int r = idx / d, j = idx - r * d;
    T* o = O + r * 2 * d;
    T* g = DO + r * 2 * d;
    T mu, sigma, dmu, dsigma;
    ladder_head<T>(o[j], o[d + j], sigma_min, clamp, mu, sigma, dmu, dsigma);
    o[j] = mu;
    o[d + j] = sigma;
    g[j] = dmu;
    g[d + j] = dsigma;
  }
  ctx.sync();
}

// Backward of a conditional from GO (gradient w.r.t. (mu_raw, ell_raw), ld 2d) into G[r][net.in_off + i].
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_ladder_backward(Ctx& ctx, const BlockArgs<T>& a, const NetDesc& net, T* smem, T* G) {
  const BlockLayout& lay = a.lay;
  const int jo = net.first + net.n_lin - 1;
  const LinearDesc& Lo = a.prog.lin[jo];
  T* stage = smem + lay.stage;
  if (net.n_lin == 1) {
    block_linear_backward<T, Ctx>(ctx, a, Lo, smem + lay.go, nullptr, nullptr, G, a.prog.D, net.in_off, nullptr, stage);
    return;
  }
  block_linear_backward<T, Ctx>(ctx, a, Lo, smem + lay.go, smem + lay.d0, smem + lay.dh[jo - 1], nullptr, 0, 0,
                                nullptr, stage);
  block_hidden_backward<T, Ctx>(ctx, a, net, smem, G, a.prog.D, nullptr);
}

// u-parameterisation: Z = T(Y) top-down.
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_ladder_u_forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, const int* trow) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* Z = smem + lay.z;
  const T sigma_top = a.params[p.base_param + 1];
  const int d0 = p.layer_dim[0];
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    Z[r * D + j] = sigma_top * Y[r * D + j];
  }
  ctx.sync();
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    block_ladder_forward<T, Ctx>(ctx, a, net, smem, Z + net.in_off, trow);
    const T* O = smem + lay.h[net.first + net.n_lin - 1];
    const int d = net.out_dim / 2;
    for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
      const int r = idx / d, j = idx - r * d;
      Z[r * D + net.out_off + j] = O[r * 2 * d + j] + O[r * 2 * d + d + j] * Y[r * D + net.out_off + j];
    }
    ctx.sync();
  }
}

// u-parameterisation: G += -Y (the N(0, I) base) + the pull-back of GZ through T.
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_ladder_u_backward(Ctx& ctx, const BlockArgs<T>& a, T* smem) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* G = smem + lay.g;
  T* GZ = smem + lay.gz;
  T* GO = smem + lay.go;
  for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) G[idx] -= Y[idx];
  ctx.sync();
  for (int i = p.n_layers - 2; i >= 0; --i) {
    const NetDesc& net = p.nets[i];
    const int jo = net.first + net.n_lin - 1, d = net.out_dim / 2;
    const T* O = smem + lay.h[jo];
    const T* DO = smem + lay.dh[jo];
    for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
      const int r = idx / d, j = idx - r * d, c = r * D + net.out_off + j;
      const T gz = GZ[c];
      G[c] += gz * O[r * 2 * d + d + j];
      GO[r * 2 * d + j] = gz * DO[r * 2 * d + j];
      GO[r * 2 * d + d + j] = gz * Y[c] * DO[r * 2 * d + d + j];
    }
    ctx.sync();
    block_ladder_backward<T, Ctx>(ctx, a, net, smem, GZ);
  }
  const T sigma_top = a.params[p.base_param + 1];
  const int d0 = p.layer_dim[0];
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    G[r * D + j] += sigma_top * GZ[r * D + j];
  }
  ctx.sync();
}

// z-parameterisation: G += grad of the ladder's log p(z).
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_ladder_z_grad(Ctx& ctx, const BlockArgs<T>& a, T* smem, const int* trow) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const T* Y = smem + lay.y;
  T* G = smem + lay.g;
  T* GO = smem + lay.go;
  const T sigma_top = a.params[p.base_param + 1];
  const T inv_top2 = T(1) / (sigma_top * sigma_top);
  const int d0 = p.layer_dim[0];
  for (int idx = ctx.tid(); idx < tile * d0; idx += ctx.nthreads()) {
    const int r = idx / d0, j = idx - r * d0;
    G[r * D + j] -= inv_top2 * Y[r * D + j];
  }
  ctx.sync();
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    block_ladder_forward<T, Ctx>(ctx, a, net, smem, Y + net.in_off, trow);
    const int jo = net.first + net.n_lin - 1, d = net.out_dim / 2;
    const T* O = smem + lay.h[jo];
    const T* DO = smem + lay.dh[jo];
    for (int idx = ctx.tid(); idx < tile * d; idx += ctx.nthreads()) {
      const int r = idx / d, j = idx - r * d, c = r * D + net.out_off + j;
      const T inv_s = T(1) / O[r * 2 * d + d + j];
      const T eps = (Y[c] - O[r * 2 * d + j]) * inv_s;
      G[c] -= eps * inv_s;
      GO[r * 2 * d + j] = eps * inv_s * DO[r * 2 * d + j];
      GO[r * 2 * d + d + j] = (eps * eps - T(1)) * inv_s * DO[r * 2 * d + d + j];
    }
    ctx.sync();
    block_ladder_backward<T, Ctx>(ctx, a, net, smem, G);
  }
}

// One Langevin step of the whole tile; k is the rows' global step index.
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_step(Ctx& ctx, const BlockArgs<T>& a, T* smem, int64_t row0, int nvalid, int k,
                              const int* trow, const bool* active, T* galpha, uint64_t seed, uint64_t offset) {
  const ProgramDesc& p = a.prog;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  T* Y = smem + lay.y;
  T* YC = smem + lay.yc;
  T* G = smem + lay.g;
  T* E = smem + lay.e;
  for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) G[idx] = T(0);
  for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) E[r] = T(0);
  ctx.sync();
  // heads read z (= y, or T(u) for the u-parameterised ladder) and accumulate -alpha dE/dz into GZ
  const T* Zp = Y;
  T* GZp = G;
  if (p.base == BASE_LADDER_U) {
    block_ladder_u_forward<T, Ctx>(ctx, a, smem, trow);
    Zp = smem + lay.z;
    GZp = smem + lay.gz;
    for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) GZp[idx] = T(0);
    ctx.sync();
  }
  for (int i = 0; i < p.n_nets; ++i)
    if (p.nets[i].role == NET_HEAD) block_head<T, Ctx>(ctx, a, p.nets[i], smem, Zp, GZp, trow, galpha);
  if (p.base == BASE_GAUSSIAN) {
    const T s = -a.params[p.base_param];
    for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) G[idx] += s * Y[idx];
    ctx.sync();
  } else if (p.base == BASE_LADDER_Z) {
    block_ladder_z_grad<T, Ctx>(ctx, a, smem, trow);
  } else if (p.base == BASE_LADDER_U) {
    block_ladder_u_backward<T, Ctx>(ctx, a, smem);
  }
  if (a.trace) {
    for (int r = ctx.tid(); r < nvalid; r += ctx.nthreads()) {
      if (!active[r]) continue;
      T s = T(0);
      for (int d = 0; d < D; ++d) s += G[r * D + d] * G[r * D + d];
      T* tr = a.trace + ((int64_t)k * a.B + row0 + r) * 2;
      tr[0] = E[r];
      tr[1] = detail::sqrt_(s);
    }
  }
  const int groups = (D + 3) / 4;
  for (int idx = ctx.tid(); idx < nvalid * groups; idx += ctx.nthreads()) {
    const int r = idx / groups, gi = idx - r * groups;
    if (!active[r]) continue;
    const StepCoeffs<T> c = step_coeffs<T>(a.sched, trow[r]);
    const int64_t b = row0 + r;
    T xi[4];
    if (a.noise) {
      for (int q = 0; q < 4; ++q) {
        const int d = 4 * gi + q;
        xi[q] = d < D ? a.noise[((int64_t)k * a.B + b) * D + d] : T(0);
      }
    } else {
      normal4<T>(seed, offset + (uint64_t)k, (uint64_t)b, (uint64_t)gi, xi);
    }
    for (int q = 0; q < 4; ++q) {
      const int d = 4 * gi + q;
      if (d < D) {
        const int o = r * D + d;
        Y[o] = langevin_update<T>(Y[o], YC[o], G[o], xi[q], c.c1, c.c2, c.h, c.n);
      }
    }
  }
  ctx.sync();
}

// The whole program for block `block_index` (chains [block_index * tile, ... + tile)).
template <typename T, class Ctx>
HEBM_BLOCK_FN void block_program(Ctx& ctx, const BlockArgs<T>& a, T* smem, int64_t block_index) {
  const ProgramDesc& p = a.prog;
  const ScheduleDesc& S = a.sched;
  const BlockLayout& lay = a.lay;
  const int tile = lay.tile, D = p.D;
  const int64_t row0 = block_index * tile;
  const int nvalid = (int)((a.B - row0) < tile ? (a.B - row0) : tile);
  T* Y = smem + lay.y;
  T* YC = smem + lay.yc;
  int* trow = reinterpret_cast<int*>(smem + lay.trow);
  const uint64_t seed = a.rng ? (uint64_t)a.rng[0] : 0;
  const uint64_t offset = a.rng ? (uint64_t)a.rng[1] : 0;

  // Zero the whole tile (padded rows stay finite), then load the chains.
  for (int idx = ctx.tid(); idx < lay.total; idx += ctx.nthreads()) smem[idx] = T(0);
  ctx.sync();
  for (int idx = ctx.tid(); idx < nvalid * D; idx += ctx.nthreads()) {
    Y[idx] = a.y0[row0 * D + idx];
    YC[idx] = (a.cond ? a.cond : a.y0)[row0 * D + idx];
  }
  // Per-row state lives in registers of every thread (each thread keeps the same copy: uniform control flow).
  bool active[kBlockMaxTile];
  T galpha[kBlockMaxTile];
  if (a.tsel) {
    for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) {
      int t = r < nvalid ? (int)a.tsel[row0 + r] : 0;
      t = t < 0 ? 0 : (t >= S.T ? S.T - 1 : t);  // validated on the host; clamp keeps a bad value in bounds
      trow[r] = t;
    }
  }
  ctx.sync();

  if (!a.tsel) {
    int k = 0;
    for (int t = S.T - 1; t >= 0; --t) {
      for (int r = ctx.tid(); r < tile; r += ctx.nthreads()) trow[r] = t;
      const T alpha = T(S.alpha[t]);
      for (int r = 0; r < tile; ++r) {
        active[r] = r < nvalid;
        galpha[r] = -alpha;
      }
      ctx.sync();
      for (int i = 0; i < S.K[t]; ++i, ++k) block_step<T, Ctx>(ctx, a, smem, row0, nvalid, k, trow, active, galpha, seed, offset);
      const T dt = T(S.d[t]);
      for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) {
        Y[idx] *= dt;
        YC[idx] = Y[idx];
      }
      ctx.sync();
    }
  } else {
    for (int r = 0; r < tile; ++r) galpha[r] = -T(S.alpha[trow[r]]);
    for (int k = 0; k < S.max_steps; ++k) {
      bool any = false;
      for (int r = 0; r < tile; ++r) {
        active[r] = r < nvalid && k < S.K[trow[r]];
        any = any || active[r];
      }
      if (!any) break;  // uniform: every thread computed the same flags
      block_step<T, Ctx>(ctx, a, smem, row0, nvalid, k, trow, active, galpha, seed, offset);
    }
    for (int idx = ctx.tid(); idx < tile * D; idx += ctx.nthreads()) Y[idx] *= T(S.d[trow[idx / D]]);
    ctx.sync();
  }
  for (int idx = ctx.tid(); idx < nvalid * D; idx += ctx.nthreads()) a.out[row0 * D + idx] = Y[idx];
}

}  // namespace core
}  // namespace hebm
