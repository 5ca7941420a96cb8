// CPU fused latent sampler: the tile program. Included by latent_cpu_{default,avx2,avx512}.cpp, each of which
// defines HEBM_CPU_NS (its namespace), HEBM_VEC_BYTES (SIMD register width) and HEBM_ROW_BLOCK, and sets the
// target instruction set before including this file. Raw pointers only: no ATen, no std containers (their
// instantiations would be shared, and mis-targeted, across the instruction-set variants).
//
// A tile of chains stays in this thread's scratch (cache-resident) through every step of every timestep:
// forward through each net with register-blocked GEMMs the compiler vectorises, backward to the latent variable,
// base-density gradient, noise, update.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/activations.h"
#include "core/philox.h"
#include "core/program.h"
#include "core/schedule.h"
#include "cpu/latent_cpu.h"

namespace hebm {
namespace cpu {
namespace HEBM_CPU_NS {

using namespace ::hebm::core;

// ---------------------------------------------------------------------------------------------------------------
// GEMM: C[M x N] = A[M x K] * B[K x N], all row-major; M % RB == 0 and N % CB == 0 (the callers pad).
template <typename T, int RB, int CB>
static inline __attribute__((always_inline)) void gemm_block(int K, const T* __restrict A, int lda,
                                                             const T* __restrict Bm, int ldb, T* __restrict C,
                                                             int ldc) {
  T acc[RB][CB];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) acc[r][c] = T(0);
  for (int k = 0; k < K; ++k) {
    const T* __restrict b = Bm + (size_t)k * ldb;
    for (int r = 0; r < RB; ++r) {
      const T av = A[(size_t)r * lda + k];
      for (int c = 0; c < CB; ++c) acc[r][c] += av * b[c];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) C[(size_t)r * ldc + c] = acc[r][c];
}

template <typename T>
static void gemm(int M, int N, int K, const T* A, int lda, const T* Bm, int ldb, T* C, int ldc) {
  constexpr int CB = 2 * HEBM_VEC_BYTES / int(sizeof(T));
  constexpr int RB = HEBM_ROW_BLOCK;
  for (int j = 0; j < N; j += CB)
    for (int i = 0; i < M; i += RB)
      gemm_block<T, RB, CB>(K, A + (size_t)i * lda, lda, Bm + j, ldb, C + (size_t)i * ldc + j, ldc);
}

// ---------------------------------------------------------------------------------------------------------------
// Epilogue of a hidden layer: pre = H + bias (+ time bias of the row's timestep); H <- act(pre), DH <- act'(pre).
template <typename T, int A>
static void hidden_epilogue(T* __restrict H, T* __restrict DH, int rows, int width, const T* __restrict bias,
                            const T* __restrict tb, const int* trow, T slope) {
  for (int r = 0; r < rows; ++r) {
    T* __restrict hr = H + (size_t)r * width;
    T* __restrict dr = DH + (size_t)r * width;
    const T* __restrict tbr = tb ? tb + (size_t)trow[r] * width : nullptr;
    if (tbr) {
      for (int j = 0; j < width; ++j) {
        T y, dy;
        act_value_grad<A, T>(hr[j] + bias[j] + tbr[j], slope, y, dy);
        hr[j] = y;
        dr[j] = dy;
      }
    } else {
      for (int j = 0; j < width; ++j) {
        T y, dy;
        act_value_grad<A, T>(hr[j] + bias[j], slope, y, dy);
        hr[j] = y;
        dr[j] = dy;
      }
    }
  }
}

template <typename T>
struct TileView {
  T* y;   // chain state [tile x Dp]
  T* yc;  // conditioning state
  T* g;   // gradient of log p~ w.r.t. y
  T* z;   // the heads' input (y itself unless the base is the u-parameterised ladder)
  T* gz;  // gradient w.r.t. z (u-parameterised ladder only)
  T* d0;
  T* d1;
  T* go;  // gradient w.r.t. a ladder conditional's (mu_raw, ell_raw)
  T* e;   // energy per row
  T* xi;  // one row of noise
  T* h[kMaxLinears];
  T* dh[kMaxLinears];
};

// Forward of one net over the tile. X: its input rows (ld ldx, net.in_dim columns). Returns a pointer to the last
// hidden activation (or X when the net has no hidden layer) and its leading dimension.
template <typename T>
static const T* net_forward(const CpuArgs<T>& a, const NetDesc& net, TileView<T>& tv, const T* X, int ldx, int rows,
                            const int* trow, int& ld_last) {
  const T* in = X;
  int ld = ldx;
  for (int j = net.first; j < net.first + net.n_lin - 1; ++j) {
    const CpuLinear<T>& L = a.lin[j];
    const LinearDesc& Ld = a.prog.lin[j];
    const T param = Ld.param >= 0 ? a.params[Ld.param] : T(0);
    gemm<T>(rows, L.out_pad, L.in, in, ld, L.wf, L.out_pad, tv.h[j], L.out_pad);
    HEBM_DISPATCH_ACT(Ld.act, ACT, hidden_epilogue<T, ACT>(tv.h[j], tv.dh[j], rows, L.out_pad, L.bias, L.tb, trow, param));
    in = tv.h[j];
    ld = L.out_pad;
  }
  ld_last = ld;
  return in;
}

// Backward of one net: given dOut/dLastHidden in tv.d0 ([rows x out_pad of the last hidden layer]), propagate to the
// input and return the input gradient rows in a buffer with leading dimension ld_in (in_pad of the first linear).
template <typename T>
static T* net_backward_hidden(const CpuArgs<T>& a, const NetDesc& net, TileView<T>& tv, int rows, int& ld_in) {
  T* d0 = tv.d0;
  T* d1 = tv.d1;
  for (int j = net.first + net.n_lin - 2; j >= net.first; --j) {
    const CpuLinear<T>& L = a.lin[j];
    gemm<T>(rows, L.in_pad, L.out_pad, d0, L.out_pad, L.wb, L.in_pad, d1, L.in_pad);
    if (j > net.first) {
      const T* __restrict dh = tv.dh[j - 1];
      const size_t n = (size_t)rows * L.in_pad;
      for (size_t i = 0; i < n; ++i) d1[i] *= dh[i];
    }
    T* tmp = d0;
    d0 = d1;
    d1 = tmp;
  }
  ld_in = a.lin[net.first].in_pad;
  return d0;
}

// One head: energy into tv.e (accumulated) and -alpha_r * dE/dz into G (accumulated), ld of G = a.Dp.
template <typename T>
static void head_energy_and_grad(const CpuArgs<T>& a, const NetDesc& net, TileView<T>& tv, const T* Z, T* G,
                                 int rows, const int* trow, const T* alpha) {
  int ld_last;
  const T* hl = net_forward<T>(a, net, tv, Z + net.in_off, a.Dp, rows, trow, ld_last);
  const CpuLinear<T>& Lo = a.lin[net.first + net.n_lin - 1];
  const T* __restrict w = Lo.wb;  // row 0 of the padded output weight: [in_pad]
  const T b = Lo.bias ? Lo.bias[0] : T(0);
  for (int r = 0; r < rows; ++r) {
    const T* __restrict hr = hl + (size_t)r * ld_last;
    T s = T(0);
    for (int i = 0; i < Lo.in; ++i) s += hr[i] * w[i];
    tv.e[r] += s + b;
  }
  if (net.n_lin == 1) {  // a linear energy: the gradient is the weight vector
    for (int r = 0; r < rows; ++r) {
      T* __restrict gr = G + (size_t)r * a.Dp + net.in_off;
      const T s = -alpha[r];
      for (int i = 0; i < net.in_dim; ++i) gr[i] += s * w[i];
    }
    return;
  }
  // delta of the last hidden layer: w (.) act'(pre)
  {
    const int width = Lo.in_pad;
    const T* __restrict dh = tv.dh[net.first + net.n_lin - 2];
    T* __restrict d0 = tv.d0;
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < width; ++j) d0[(size_t)r * width + j] = w[j] * dh[(size_t)r * width + j];
  }
  int ld_in;
  const T* gin = net_backward_hidden<T>(a, net, tv, rows, ld_in);
  for (int r = 0; r < rows; ++r) {
    T* __restrict gr = G + (size_t)r * a.Dp + net.in_off;
    const T* __restrict src = gin + (size_t)r * ld_in;
    const T s = -alpha[r];
    for (int i = 0; i < net.in_dim; ++i) gr[i] += s * src[i];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The Gaussian ladder (csrc/core/program.h): conditionals mu_l, sigma_l = MLP_l(z_{l-1}), layers top first.

// Forward of conditional `net` on its parent rows X (ld ldx). Leaves in h[last] (ld out_pad) mu in columns [0, d)
// and sigma in [d, 2d), and in dh[last] dmu/dmu_raw and dsigma/dell_raw.
template <typename T>
static void ladder_forward(const CpuArgs<T>& a, const NetDesc& net, TileView<T>& tv, const T* X, int ldx, int rows,
                           const int* trow) {
  int ld;
  const T* hl = net_forward<T>(a, net, tv, X, ldx, rows, trow, ld);
  const int jo = net.first + net.n_lin - 1;
  const CpuLinear<T>& Lo = a.lin[jo];
  T* O = tv.h[jo];
  T* DO = tv.dh[jo];
  gemm<T>(rows, Lo.out_pad, Lo.in, hl, ld, Lo.wf, Lo.out_pad, O, Lo.out_pad);
  const int d = net.out_dim / 2;
  const T sigma_min = a.params[a.prog.base_param];
  const bool clamp = a.prog.soft_clamp != 0;
  for (int r = 0; r < rows; ++r) {
    T* __restrict o = O + (size_t)r * Lo.out_pad;
    T* __restrict g = DO + (size_t)r * Lo.out_pad;
    for (int j = 0; j < d; ++j) {
      T mu, sigma, dmu, dsigma;
      ladder_head<T>(o[j] + Lo.bias[j], o[d + j] + Lo.bias[d + j], sigma_min, clamp, mu, sigma, dmu, dsigma);
      o[j] = mu;
      o[d + j] = sigma;
      g[j] = dmu;
      g[d + j] = dsigma;
    }
  }
}

// Backward of conditional `net` from tv.go (gradient w.r.t. (mu_raw, ell_raw), ld out_pad, zero-padded) to its
// input; G[r][net.in_off + i] += result.
template <typename T>
static void ladder_backward(const CpuArgs<T>& a, const NetDesc& net, TileView<T>& tv, T* G, int rows) {
  const CpuLinear<T>& Lo = a.lin[net.first + net.n_lin - 1];
  const T* gin;
  int ld_in;
  if (net.n_lin == 1) {
    gemm<T>(rows, Lo.in_pad, Lo.out_pad, tv.go, Lo.out_pad, Lo.wb, Lo.in_pad, tv.d1, Lo.in_pad);
    gin = tv.d1;
    ld_in = Lo.in_pad;
  } else {
    gemm<T>(rows, Lo.in_pad, Lo.out_pad, tv.go, Lo.out_pad, Lo.wb, Lo.in_pad, tv.d0, Lo.in_pad);
    const T* __restrict dh = tv.dh[net.first + net.n_lin - 2];
    const size_t n = (size_t)rows * Lo.in_pad;
    for (size_t i = 0; i < n; ++i) tv.d0[i] *= dh[i];
    gin = net_backward_hidden<T>(a, net, tv, rows, ld_in);
  }
  for (int r = 0; r < rows; ++r) {
    T* __restrict gr = G + (size_t)r * a.Dp + net.in_off;
    const T* __restrict src = gin + (size_t)r * ld_in;
    for (int i = 0; i < net.in_dim; ++i) gr[i] += src[i];
  }
}

// u-parameterisation, forward: Z = T(Y) top-down.
template <typename T>
static void ladder_u_forward(const CpuArgs<T>& a, TileView<T>& tv, int rows, const int* trow) {
  const ProgramDesc& p = a.prog;
  const int Dp = a.Dp;
  const T sigma_top = a.params[p.base_param + 1];
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < p.layer_dim[0]; ++j) tv.z[(size_t)r * Dp + j] = sigma_top * tv.y[(size_t)r * Dp + j];
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    ladder_forward<T>(a, net, tv, tv.z + net.in_off, Dp, rows, trow);
    const int jo = net.first + net.n_lin - 1, ld = a.lin[jo].out_pad, d = net.out_dim / 2;
    for (int r = 0; r < rows; ++r) {
      const T* __restrict o = tv.h[jo] + (size_t)r * ld;
      const T* __restrict u = tv.y + (size_t)r * Dp + net.out_off;
      T* __restrict z = tv.z + (size_t)r * Dp + net.out_off;
      for (int j = 0; j < d; ++j) z[j] = o[j] + o[d + j] * u[j];
    }
  }
}

// u-parameterisation, backward: from GZ (gradient w.r.t. z) to G (w.r.t. u), plus the N(0, I) base on u.
template <typename T>
static void ladder_u_backward(const CpuArgs<T>& a, TileView<T>& tv, int rows) {
  const ProgramDesc& p = a.prog;
  const int Dp = a.Dp;
  const size_t n = (size_t)rows * Dp;
  for (size_t i = 0; i < n; ++i) tv.g[i] -= tv.y[i];
  for (int i = p.n_layers - 2; i >= 0; --i) {
    const NetDesc& net = p.nets[i];
    const int jo = net.first + net.n_lin - 1, ld = a.lin[jo].out_pad, d = net.out_dim / 2;
    for (int r = 0; r < rows; ++r) {
      const T* __restrict o = tv.h[jo] + (size_t)r * ld;
      const T* __restrict dO = tv.dh[jo] + (size_t)r * ld;
      const T* __restrict gz = tv.gz + (size_t)r * Dp + net.out_off;
      const T* __restrict u = tv.y + (size_t)r * Dp + net.out_off;
      T* __restrict g = tv.g + (size_t)r * Dp + net.out_off;
      T* __restrict go = tv.go + (size_t)r * ld;
      for (int j = 0; j < d; ++j) {
        g[j] += gz[j] * o[d + j];
        go[j] = gz[j] * dO[j];
        go[d + j] = gz[j] * u[j] * dO[d + j];
      }
      for (int j = 2 * d; j < ld; ++j) go[j] = T(0);
    }
    ladder_backward<T>(a, net, tv, tv.gz, rows);  // into the parent's gradient
  }
  const T sigma_top = a.params[p.base_param + 1];
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < p.layer_dim[0]; ++j) tv.g[(size_t)r * Dp + j] += sigma_top * tv.gz[(size_t)r * Dp + j];
}

// z-parameterisation: G += grad of log N(z_top; 0, sigma_top^2) + sum_l log N(z_l; mu_l(z_{l-1}), sigma_l(z_{l-1})).
template <typename T>
static void ladder_z_grad(const CpuArgs<T>& a, TileView<T>& tv, int rows, const int* trow) {
  const ProgramDesc& p = a.prog;
  const int Dp = a.Dp;
  const T sigma_top = a.params[p.base_param + 1];
  const T inv_top2 = T(1) / (sigma_top * sigma_top);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < p.layer_dim[0]; ++j) tv.g[(size_t)r * Dp + j] -= inv_top2 * tv.y[(size_t)r * Dp + j];
  for (int i = 0; i < p.n_layers - 1; ++i) {
    const NetDesc& net = p.nets[i];
    ladder_forward<T>(a, net, tv, tv.y + net.in_off, Dp, rows, trow);
    const int jo = net.first + net.n_lin - 1, ld = a.lin[jo].out_pad, d = net.out_dim / 2;
    for (int r = 0; r < rows; ++r) {
      const T* __restrict o = tv.h[jo] + (size_t)r * ld;
      const T* __restrict dO = tv.dh[jo] + (size_t)r * ld;
      const T* __restrict z = tv.y + (size_t)r * Dp + net.out_off;
      T* __restrict g = tv.g + (size_t)r * Dp + net.out_off;
      T* __restrict go = tv.go + (size_t)r * ld;
      for (int j = 0; j < d; ++j) {
        const T inv_s = T(1) / o[d + j];
        const T eps = (z[j] - o[j]) * inv_s;
        g[j] -= eps * inv_s;
        go[j] = eps * inv_s * dO[j];
        go[d + j] = (eps * eps - T(1)) * inv_s * dO[d + j];
      }
      for (int j = 2 * d; j < ld; ++j) go[j] = T(0);
    }
    ladder_backward<T>(a, net, tv, tv.g, rows);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One Langevin step over the tile. k: the rows' global step index (noise and trace address).
template <typename T>
static void tile_step(const CpuArgs<T>& a, TileView<T>& tv, int64_t row0, int rows, int nvalid, int k,
                      const int* trow, const bool* active, const StepCoeffs<T>* cf) {
  const ProgramDesc& p = a.prog;
  const int D = p.D, Dp = a.Dp;
  T alpha[kMaxTile];
  for (int r = 0; r < rows; ++r) alpha[r] = cf[r].alpha;
  memset(tv.g, 0, sizeof(T) * (size_t)rows * Dp);
  memset(tv.e, 0, sizeof(T) * (size_t)rows);

  // heads read z (= y, or T(u) for the u-parameterised ladder) and accumulate -alpha dE/dz into GZ
  const T* Z = tv.y;
  T* GZ = tv.g;
  if (p.base == BASE_LADDER_U) {
    ladder_u_forward<T>(a, tv, rows, trow);
    memset(tv.gz, 0, sizeof(T) * (size_t)rows * Dp);
    Z = tv.z;
    GZ = tv.gz;
  }
  for (int i = 0; i < p.n_nets; ++i) {
    const NetDesc& net = p.nets[i];
    if (net.role == NET_HEAD) head_energy_and_grad<T>(a, net, tv, Z, GZ, rows, trow, alpha);
  }
  if (p.base == BASE_GAUSSIAN) {
    const T s = -a.params[p.base_param];
    const size_t n = (size_t)rows * Dp;
    for (size_t i = 0; i < n; ++i) tv.g[i] += s * tv.y[i];
  } else if (p.base == BASE_LADDER_Z) {
    ladder_z_grad<T>(a, tv, rows, trow);
  } else if (p.base == BASE_LADDER_U) {
    ladder_u_backward<T>(a, tv, rows);
  }

  for (int r = 0; r < nvalid; ++r) {
    if (!active[r]) continue;
    const int64_t b = row0 + r;
    T* __restrict yr = tv.y + (size_t)r * Dp;
    const T* __restrict ycr = tv.yc + (size_t)r * Dp;
    const T* __restrict gr = tv.g + (size_t)r * Dp;
    if (a.trace) {
      T s = T(0);
      for (int d = 0; d < D; ++d) s += gr[d] * gr[d];
      T* tr = a.trace + ((size_t)k * a.B + b) * 2;
      tr[0] = tv.e[r];
      tr[1] = sqrt(s);
    }
    const StepCoeffs<T> c = cf[r];
    const T* __restrict xr;
    if (a.noise) {
      xr = a.noise + ((size_t)k * a.B + b) * D;
    } else {
      // the whole row's normals first (a loop the compiler vectorises for float32), then the update
      const uint64_t step = a.offset + (uint64_t)k;
      T* __restrict xi = tv.xi;
      const int groups = (D + 3) / 4;
      for (int gi = 0; gi < groups; ++gi) normal4<T>(a.seed, step, (uint64_t)b, (uint64_t)gi, xi + 4 * gi);
      xr = xi;
    }
    for (int d = 0; d < D; ++d) yr[d] = langevin_update<T>(yr[d], ycr[d], gr[d], xr[d], c.c1, c.c2, c.h, c.n);
  }
}

template <typename T>
static void run_tile(const CpuArgs<T>& a, const CpuScratchLayout& s, int64_t tile_index, T* scratch) {
  const ProgramDesc& p = a.prog;
  const ScheduleDesc& S = a.sched;
  const int D = p.D, Dp = a.Dp, rows = a.tile;
  const int64_t row0 = tile_index * a.tile;
  const int nvalid = (int)((a.B - row0) < rows ? (a.B - row0) : rows);

  TileView<T> tv;
  tv.y = scratch + s.y;
  tv.yc = scratch + s.yc;
  tv.g = scratch + s.g;
  tv.z = scratch + s.z;
  tv.gz = scratch + s.gz;
  tv.d0 = scratch + s.d0;
  tv.d1 = scratch + s.d1;
  tv.go = scratch + s.go;
  tv.e = scratch + s.e;
  tv.xi = scratch + s.xi;
  for (int j = 0; j < p.n_lin; ++j) {
    tv.h[j] = scratch + s.h[j];
    tv.dh[j] = scratch + s.dh[j];
  }
  // Zero everything once: padded rows and columns stay finite (and zero) for the whole run.
  memset(scratch, 0, sizeof(T) * s.total);
  for (int r = 0; r < nvalid; ++r) {
    memcpy(tv.y + (size_t)r * Dp, a.y0 + (size_t)(row0 + r) * D, sizeof(T) * D);
    memcpy(tv.yc + (size_t)r * Dp, (a.cond ? a.cond : a.y0) + (size_t)(row0 + r) * D, sizeof(T) * D);
  }

  int trow[kMaxTile];
  bool active[kMaxTile];
  StepCoeffs<T> cf[kMaxTile];

  if (!a.tsel) {
    int k = 0;
    for (int t = S.T - 1; t >= 0; --t) {
      const StepCoeffs<T> c = step_coeffs<T>(S, t);
      for (int r = 0; r < rows; ++r) {
        trow[r] = t;
        active[r] = r < nvalid;
        cf[r] = c;
      }
      for (int i = 0; i < S.K[t]; ++i, ++k) tile_step<T>(a, tv, row0, rows, nvalid, k, trow, active, cf);
      const size_t n = (size_t)rows * Dp;
      for (size_t i = 0; i < n; ++i) {
        tv.y[i] *= c.d;
        tv.yc[i] = tv.y[i];
      }
    }
  } else {
    for (int r = 0; r < rows; ++r) {
      trow[r] = r < nvalid ? (int)a.tsel[row0 + r] : 0;
      cf[r] = step_coeffs<T>(S, trow[r]);
    }
    for (int k = 0; k < S.max_steps; ++k) {
      bool any = false;
      for (int r = 0; r < rows; ++r) {
        active[r] = r < nvalid && k < S.K[trow[r]];
        any = any || active[r];
      }
      if (!any) break;
      tile_step<T>(a, tv, row0, rows, nvalid, k, trow, active, cf);
    }
    for (int r = 0; r < rows; ++r)
      for (int d = 0; d < D; ++d) tv.y[(size_t)r * Dp + d] *= cf[r].d;
  }
  for (int r = 0; r < nvalid; ++r) memcpy(a.out + (size_t)(row0 + r) * D, tv.y + (size_t)r * Dp, sizeof(T) * D);
}

template <typename T>
static void run_tiles_impl(const CpuArgs<T>& a, const CpuScratchLayout& s, int64_t tile_begin, int64_t tile_end,
                           T* scratch) {
  for (int64_t t = tile_begin; t < tile_end; ++t) run_tile<T>(a, s, t, scratch);
}

void run_tiles(const CpuArgs<float>& a, const CpuScratchLayout& s, int64_t b, int64_t e, float* scratch) {
  run_tiles_impl<float>(a, s, b, e, scratch);
}
void run_tiles(const CpuArgs<double>& a, const CpuScratchLayout& s, int64_t b, int64_t e, double* scratch) {
  run_tiles_impl<double>(a, s, b, e, scratch);
}

}  // namespace HEBM_CPU_NS
}  // namespace cpu
}  // namespace hebm
