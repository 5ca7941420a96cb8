// ATen launcher of the CPU fused latent sampler: checks, weight repacking, tiles over at::parallel_for, and the
// run-time choice of the instruction-set variant (HEBM_CPU_CAPABILITY=default|avx2|avx512 overrides it).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu/latent_cpu.h"
#include "latent_checks.h"

namespace hebm {
namespace cpu {

namespace {

enum class Cap { Default, Avx2, Avx512 };

Cap detected_cap() {
#if HEBM_CPU_HAS_X86_CAPS && (defined(__GNUC__) || defined(__clang__))
  static const Cap cap = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq"))
      return Cap::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Cap::Avx2;
    return Cap::Default;
  }();
  return cap;
#else
  return Cap::Default;
#endif
}

const char* cap_name(Cap c) { return c == Cap::Avx512 ? "avx512" : c == Cap::Avx2 ? "avx2" : "default"; }

Cap chosen_cap() {
  const Cap hw = detected_cap();
  const char* env = std::getenv("HEBM_CPU_CAPABILITY");
  if (!env || !*env) return hw;
  const std::string s(env);
  Cap want;
  if (s == "default") want = Cap::Default;
  else if (s == "avx2") want = Cap::Avx2;
  else if (s == "avx512") want = Cap::Avx512;
  else TORCH_CHECK(false, "HEBM_CPU_CAPABILITY must be default, avx2 or avx512, got '", s, "'");
  TORCH_CHECK(int(want) <= int(hw), "HEBM_CPU_CAPABILITY=", s, " but this CPU supports at most ", cap_name(hw));
  return want;
}

template <typename T>
void run_tiles_cap(Cap cap, const CpuArgs<T>& a, const CpuScratchLayout& s, int64_t b, int64_t e, T* scratch) {
#if HEBM_CPU_HAS_X86_CAPS
  if (cap == Cap::Avx512) return cap_avx512::run_tiles(a, s, b, e, scratch);
  if (cap == Cap::Avx2) return cap_avx2::run_tiles(a, s, b, e, scratch);
#endif
  (void)cap;
  cap_default::run_tiles(a, s, b, e, scratch);
}

int choose_tile(int64_t B) {
  if (const char* env = std::getenv("HEBM_CPU_TILE")) {  // benchmarking knob
    const int t = std::atoi(env);
    TORCH_CHECK(t >= 8 && t <= kMaxTile && t % 8 == 0, "HEBM_CPU_TILE must be a multiple of 8 in [8, ", kMaxTile, "]");
    return t;
  }
  const int64_t nthreads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = (B + nthreads - 1) / nthreads;
  const int64_t t = ((per_thread + 7) / 8) * 8;
  return int(std::min<int64_t>(std::max<int64_t>(t, 8), 32));
}

template <typename T>
void run_cpu(const LatentTensors& call) {
  const LatentCall& c = call.c;
  const core::ProgramDesc& p = c.prog;
  const T* P = call.params.data_ptr<T>();

  // Repack every linear layer (transposed and zero-padded copies; see CpuLinear).
  std::vector<int> out_pad(p.n_lin), in_pad(p.n_lin);
  size_t total = 0;
  for (int j = 0; j < p.n_lin; ++j) {
    const core::LinearDesc& L = p.lin[j];
    in_pad[j] = core::round_up(L.in, kColPad);
    out_pad[j] = core::round_up(L.out, kColPad);
    total += size_t(L.in) * out_pad[j] + size_t(out_pad[j]) * in_pad[j] + out_pad[j];
    if (L.tb >= 0) total += size_t(p.time_steps) * out_pad[j];
  }
  std::vector<T> pack(total, T(0));
  std::vector<CpuLinear<T>> lins(p.n_lin);
  std::vector<int> tb_rows(p.n_lin, 0);
  for (int i = 0; i < p.n_nets; ++i)
    for (int j = p.nets[i].first; j < p.nets[i].first + p.nets[i].n_lin; ++j) tb_rows[j] = p.nets[i].time_steps;
  size_t o = 0;
  int wpad = kColPad;
  for (int j = 0; j < p.n_lin; ++j) {
    const core::LinearDesc& L = p.lin[j];
    CpuLinear<T>& C = lins[j];
    C.in = L.in;
    C.out = L.out;
    C.in_pad = in_pad[j];
    C.out_pad = out_pad[j];
    wpad = std::max(wpad, std::max(in_pad[j], out_pad[j]));
    T* wf = pack.data() + o; o += size_t(L.in) * out_pad[j];
    T* wb = pack.data() + o; o += size_t(out_pad[j]) * in_pad[j];
    T* bias = pack.data() + o; o += out_pad[j];
    const T* W = P + L.w;
    for (int r = 0; r < L.out; ++r)
      for (int k = 0; k < L.in; ++k) {
        wf[size_t(k) * out_pad[j] + r] = W[size_t(r) * L.in + k];
        wb[size_t(r) * in_pad[j] + k] = W[size_t(r) * L.in + k];
      }
    if (L.b >= 0) std::memcpy(bias, P + L.b, sizeof(T) * L.out);
    C.wf = wf;
    C.wb = wb;
    C.bias = bias;
    C.tb = nullptr;
    if (L.tb >= 0) {
      T* tb = pack.data() + o; o += size_t(p.time_steps) * out_pad[j];
      for (int t = 0; t < tb_rows[j]; ++t) std::memcpy(tb + size_t(t) * out_pad[j], P + L.tb + size_t(t) * L.out, sizeof(T) * L.out);
      C.tb = tb;
    }
  }

  CpuArgs<T> a;
  a.prog = p;
  a.sched = c.sched;
  a.params = P;
  a.lin = lins.data();
  a.y0 = call.y0.data_ptr<T>();
  a.cond = call.cond.numel() ? call.cond.data_ptr<T>() : nullptr;
  a.tsel = c.per_chain ? call.timesteps.data_ptr<int64_t>() : nullptr;
  a.noise = c.explicit_noise ? call.noise.data_ptr<T>() : nullptr;
  a.out = call.out.data_ptr<T>();
  a.trace = call.trace.numel() ? call.trace.data_ptr<T>() : nullptr;
  a.B = c.B;
  a.seed = 0;
  a.offset = 0;
  if (!c.explicit_noise) {
    const int64_t* r = call.rng.data_ptr<int64_t>();
    a.seed = uint64_t(r[0]);
    a.offset = uint64_t(r[1]);
  }
  a.tile = choose_tile(c.B);
  a.Dp = core::round_up(int(c.D), 16);
  a.wpad = wpad;
  const CpuScratchLayout s = cpu_scratch_layout(p, out_pad.data(), a.tile, a.Dp, a.wpad);
  const Cap cap = chosen_cap();
  const int64_t ntiles = (c.B + a.tile - 1) / a.tile;
  at::parallel_for(0, ntiles, 1, [&](int64_t b, int64_t e) {
    std::unique_ptr<T[]> scratch(new T[s.total]);
    run_tiles_cap<T>(cap, a, s, b, e, scratch.get());
  });
}

}  // namespace

const char* cpu_capability() { return cap_name(chosen_cap()); }

std::tuple<at::Tensor, at::Tensor> latent_langevin_cpu(const at::Tensor& y0_, const at::Tensor& cond_,
                                                       const at::Tensor& params_, at::IntArrayRef program,
                                                       at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                                       const at::Tensor& timesteps_, const at::Tensor& noise_,
                                                       const at::Tensor& rng, bool trace_flag, int64_t precision) {
  TORCH_CHECK(precision >= core::kPrecisionFp32 && precision <= core::kPrecisionBf16,
              "latent_langevin: precision must be 0 (fp32), 1 (tf32) or 2 (bf16), got ", precision);
  TORCH_CHECK(precision == core::kPrecisionFp32, "latent_langevin: the CPU kernel runs precision='fp32' only, got "
              "precision='", precision == core::kPrecisionTf32 ? "tf32" : "bf16", "': tf32 and bf16 are the CUDA "
              "tensor cores' operand formats, and a CPU has no faster path at that precision (the reference backend "
              "runs the same rounding eagerly)");
  const LatentTensors t = prepare_latent(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng,
                                         trace_flag);
  const LatentCall& c = t.c;
  if (c.per_chain) {
    const int64_t* ts = t.timesteps.data_ptr<int64_t>();
    for (int64_t b = 0; b < c.B; ++b)
      TORCH_CHECK(ts[b] >= 0 && ts[b] < c.sched.T, "latent_langevin: timesteps[", b, "] = ", ts[b], " is outside [0, ", c.sched.T, ")");
  }
  if (c.B == 0) return {t.out, t.trace};
  AT_DISPATCH_FLOATING_TYPES(t.y0.scalar_type(), "latent_langevin_cpu", [&] { run_cpu<scalar_t>(t); });
  return {t.out, t.trace};
}

}  // namespace cpu
}  // namespace hebm
