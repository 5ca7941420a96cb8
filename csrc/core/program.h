// The latent program: what the fused sampler evaluates at every Langevin step.
//
//   y = concat of the latent layers (B chains x D dims)
//   log p~_t(y) = -alpha_t * sum_h E_h(z[slice_h], t) + log p_base(y)
//
// The Python side (hebm_ext/sampling/program.py) packs the modules' effective weights into ONE flat parameter
// buffer and describes them with a list of int64 (the "program"); parse_program() turns that list into the POD
// ProgramDesc below, which the CPU kernel reads on the host and the CUDA kernel receives by value.
//
// Int list layout (version 2):
//   [0] kProgramMagic  [1] kProgramVersion  [2] D  [3] n_layers  [4] base kind  [5] base_param  [6] soft_clamp
//   [7] n_nets  [8] n_linears
//   n_layers x (offset, dim)
//   n_nets   x (role, in_off, in_dim, n_lin, out_off, out_dim, time_steps)
//   n_linear x (in, out, w, b, tb, act, act_param)
//                                          weights row-major [out x in]; b, tb = -1 when absent;
//                                          tb = a per-timestep additive bias table [time_steps x out];
//                                          act = the activation applied to this layer's output (ActKind,
//                                          ACT_IDENTITY on every net's output layer); act_param = params offset
//                                          of its parameter (lrelu slope, elu alpha, softplus beta) or -1
// Nets own consecutive linears in order. Heads (role 0) map z[in_off : in_off+in_dim] to one energy;
// ladder nets (role 1) map a parent layer to (mu_raw, log_sigma_raw) of a child layer.
#pragma once

#include <stdint.h>

#include "activations.h"
#include "macros.h"

namespace hebm {
namespace core {

constexpr int64_t kProgramMagic = 0x4842454D;  // "HBEM"
constexpr int64_t kProgramVersion = 2;
constexpr int kMaxLayers = 16;
constexpr int kMaxNets = 32;
constexpr int kMaxLinears = 96;
constexpr int kHeaderInts = 9;
constexpr int kNetInts = 7;
constexpr int kLinearInts = 7;

enum BaseKind : int {
  BASE_NONE = 0,      // flat: no base term (Gao et al.'s recovery likelihood form)
  BASE_GAUSSIAN = 1,  // -||y||^2 / (2 sigma^2); params[base_param] = 1 / sigma^2
  BASE_LADDER_Z = 2,  // top-down Gaussian ladder, the variable is z
  BASE_LADDER_U = 3,  // top-down Gaussian ladder, the variable is the whitened u, z = T(u)
};
// Ladder bases: params[base_param] = sigma_min, params[base_param + 1] = sigma_top; soft_clamp (header [6]) turns
// on NVAE's 5 tanh(x/5) on mu and log sigma. The first n_layers - 1 nets are the conditionals, top-down: net i maps
// layer i (its parent) to (mu_raw, log_sigma_raw) of layer i + 1 (layers are ordered top first).

enum NetRole : int { NET_HEAD = 0, NET_LADDER = 1 };

struct LinearDesc {
  int in, out;
  int w, b, tb;
  int act;    // ActKind of this layer's activation (ACT_IDENTITY on a net's output layer)
  int param;  // params offset of the activation's parameter (slope, alpha, beta), -1 when it has none
};

struct NetDesc {
  int role;
  int in_off, in_dim;
  int first, n_lin;
  int out_off, out_dim;
  int time_steps;
};

struct ProgramDesc {
  int D;
  int n_layers;
  int layer_off[kMaxLayers];
  int layer_dim[kMaxLayers];
  int base;
  int base_param;
  int soft_clamp;
  int n_nets;
  int n_heads;
  NetDesc nets[kMaxNets];
  int n_lin;
  LinearDesc lin[kMaxLinears];
  int max_width;   // max over every linear's in and out
  int max_hidden;  // max over hidden (activated) widths
  int time_steps;  // max over nets (0 when no net is time-conditioned)
};

struct ParseResult {
  bool ok;
  char msg[200];
};

namespace detail {
inline void set_msg(ParseResult& r, const char* a, long long v1 = -1, long long v2 = -1) {
  // tiny formatter (no <cstdio> dependency for device-side includes of this header)
  r.ok = false;
  int n = 0;
  for (const char* p = a; *p && n < 150; ++p) r.msg[n++] = *p;
  auto put = [&](long long v) {
    if (v < 0) return;
    char buf[24];
    int m = 0;
    do { buf[m++] = char('0' + v % 10); v /= 10; } while (v && m < 23);
    r.msg[n++] = ' ';
    while (m && n < 198) r.msg[n++] = buf[--m];
  };
  put(v1);
  put(v2);
  r.msg[n] = 0;
}
}  // namespace detail

// Host-side parse and validation. n_params: length of the flat parameter buffer.
inline ParseResult parse_program(const int64_t* v, int64_t n, int64_t n_params, ProgramDesc& p) {
  ParseResult r;
  r.ok = true;
  r.msg[0] = 0;
  if (n < kHeaderInts || v[0] != kProgramMagic) {
    detail::set_msg(r, "program: not a hebm latent program (bad magic or too short)");
    return r;
  }
  if (v[1] != kProgramVersion) {
    detail::set_msg(r, "program: unsupported version", v[1]);
    return r;
  }
  p.D = int(v[2]);
  p.n_layers = int(v[3]);
  p.base = int(v[4]);
  p.base_param = int(v[5]);
  p.soft_clamp = int(v[6]);
  p.n_nets = int(v[7]);
  p.n_lin = int(v[8]);
  if (p.D <= 0) { detail::set_msg(r, "program: latent dimension must be positive, got", v[2]); return r; }
  if (p.n_layers <= 0 || p.n_layers > kMaxLayers) {
    detail::set_msg(r, "program: number of latent layers out of range [1, 16]:", v[3]);
    return r;
  }
  if (p.n_nets < 0 || p.n_nets > kMaxNets) { detail::set_msg(r, "program: too many networks (max 32):", v[7]); return r; }
  if (p.n_lin < 0 || p.n_lin > kMaxLinears) { detail::set_msg(r, "program: too many linear layers (max 96):", v[8]); return r; }
  if (p.base < BASE_NONE || p.base > BASE_LADDER_U) { detail::set_msg(r, "program: unknown base kind", v[4]); return r; }
  const int64_t need = kHeaderInts + 2 * p.n_layers + kNetInts * p.n_nets + kLinearInts * p.n_lin;
  if (n != need) { detail::set_msg(r, "program: length mismatch (expected, got)", need, n); return r; }
  const int64_t* q = v + kHeaderInts;
  int off = 0;
  for (int l = 0; l < p.n_layers; ++l) {
    p.layer_off[l] = int(q[2 * l]);
    p.layer_dim[l] = int(q[2 * l + 1]);
    if (p.layer_off[l] != off || p.layer_dim[l] <= 0) { detail::set_msg(r, "program: layer layout broken at layer", l); return r; }
    off += p.layer_dim[l];
  }
  if (off != p.D) { detail::set_msg(r, "program: layer dims do not sum to D", off, p.D); return r; }
  q += 2 * p.n_layers;
  if (p.base != BASE_NONE && (p.base_param < 0 || p.base_param >= n_params)) {
    detail::set_msg(r, "program: base parameter offset out of range", p.base_param);
    return r;
  }
  int first = 0;
  p.n_heads = 0;
  p.time_steps = 0;
  p.max_width = 1;
  p.max_hidden = 1;
  for (int i = 0; i < p.n_nets; ++i) {
    NetDesc& d = p.nets[i];
    d.role = int(q[0]);
    d.in_off = int(q[1]);
    d.in_dim = int(q[2]);
    d.n_lin = int(q[3]);
    d.out_off = int(q[4]);
    d.out_dim = int(q[5]);
    d.time_steps = int(q[6]);
    d.first = first;
    first += d.n_lin;
    q += kNetInts;
    if (d.role == NET_HEAD) {
      ++p.n_heads;
      if (d.out_dim != 1) { detail::set_msg(r, "program: a head must output one energy; net", i); return r; }
    } else if (d.role == NET_LADDER) {
      if (p.base != BASE_LADDER_Z && p.base != BASE_LADDER_U) { detail::set_msg(r, "program: ladder net without a ladder base; net", i); return r; }
      if (d.out_off < 0 || d.out_dim <= 0 || d.out_off + d.out_dim / 2 > p.D || d.out_dim % 2) {
        detail::set_msg(r, "program: ladder net output slice out of range; net", i);
        return r;
      }
    } else {
      detail::set_msg(r, "program: unknown net role; net", i);
      return r;
    }
    if (d.in_off < 0 || d.in_dim <= 0 || d.in_off + d.in_dim > p.D) { detail::set_msg(r, "program: net input slice out of range; net", i); return r; }
    if (d.n_lin < 1) { detail::set_msg(r, "program: a net needs at least one linear layer; net", i); return r; }
    if (d.time_steps < 0) { detail::set_msg(r, "program: negative time steps; net", i); return r; }
    if (d.time_steps > p.time_steps) p.time_steps = d.time_steps;
  }
  if (p.base == BASE_LADDER_Z || p.base == BASE_LADDER_U) {
    if (p.base_param + 1 >= n_params) { detail::set_msg(r, "program: ladder base parameters out of range", p.base_param); return r; }
    if (p.n_nets < p.n_layers - 1) { detail::set_msg(r, "program: a ladder over n layers needs n - 1 conditionals", p.n_layers); return r; }
    for (int i = 0; i < p.n_layers - 1; ++i) {
      const NetDesc& d = p.nets[i];
      if (d.role != NET_LADDER || d.in_off != p.layer_off[i] || d.in_dim != p.layer_dim[i] ||
          d.out_off != p.layer_off[i + 1] || d.out_dim != 2 * p.layer_dim[i + 1] || d.time_steps != 0) {
        detail::set_msg(r, "program: net i must be the ladder conditional of layer i + 1 given layer i; net", i);
        return r;
      }
    }
    for (int i = p.n_layers - 1; i < p.n_nets; ++i)
      if (p.nets[i].role != NET_HEAD) { detail::set_msg(r, "program: extra ladder net", i); return r; }
  }
  if (first != p.n_lin) { detail::set_msg(r, "program: nets do not own all linear layers", first, p.n_lin); return r; }
  for (int j = 0; j < p.n_lin; ++j) {
    LinearDesc& L = p.lin[j];
    L.in = int(q[0]);
    L.out = int(q[1]);
    L.w = int(q[2]);
    L.b = int(q[3]);
    L.tb = int(q[4]);
    L.act = int(q[5]);
    L.param = int(q[6]);
    q += kLinearInts;
    if (L.in <= 0 || L.out <= 0) { detail::set_msg(r, "program: empty linear layer", j); return r; }
    if (L.w < 0 || int64_t(L.w) + int64_t(L.in) * L.out > n_params) { detail::set_msg(r, "program: weight out of the parameter buffer; linear", j); return r; }
    if (L.b >= 0 && int64_t(L.b) + L.out > n_params) { detail::set_msg(r, "program: bias out of the parameter buffer; linear", j); return r; }
    if (L.act < 0 || L.act >= ACT_COUNT) { detail::set_msg(r, "program: unknown activation; linear", j); return r; }
    if (act_has_param(L.act) ? (L.param < 0 || L.param >= n_params) : L.param != -1) {
      detail::set_msg(r, "program: activation parameter offset out of range (or given to a kind without one); linear", j);
      return r;
    }
    if (L.in > p.max_width) p.max_width = L.in;
    if (L.out > p.max_width) p.max_width = L.out;
  }
  for (int i = 0; i < p.n_nets; ++i) {
    const NetDesc& d = p.nets[i];
    int width = d.in_dim;
    for (int j = d.first; j < d.first + d.n_lin; ++j) {
      const LinearDesc& L = p.lin[j];
      if (L.in != width) { detail::set_msg(r, "program: linear input width does not chain; linear", j); return r; }
      width = L.out;
      const bool hidden = j < d.first + d.n_lin - 1;
      if (!hidden && L.act != ACT_IDENTITY) { detail::set_msg(r, "program: a net's output layer must have the identity activation; linear", j); return r; }
      if (hidden && L.out > p.max_hidden) p.max_hidden = L.out;
      if (L.tb >= 0) {
        if (!hidden || d.time_steps <= 0) { detail::set_msg(r, "program: time bias only on hidden layers of time-conditioned nets; linear", j); return r; }
        if (int64_t(L.tb) + int64_t(d.time_steps) * L.out > n_params) { detail::set_msg(r, "program: time bias out of the parameter buffer; linear", j); return r; }
      }
    }
    if (width != d.out_dim) { detail::set_msg(r, "program: net output width mismatch; net", i); return r; }
  }
  return r;
}

}  // namespace core
}  // namespace hebm
