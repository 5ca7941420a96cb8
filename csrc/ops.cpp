// Operator schemas (TORCH_LIBRARY) and the CPU registrations; the CUDA registrations live in
// csrc/cuda/latent_cuda_aten.cpp, built only with CUDA. Fake (meta) kernels are in hebm_ext/ops.py.
#include <ATen/ATen.h>
#include <torch/extension.h>
#include <torch/library.h>

namespace hebm {
namespace cpu {
const char* cpu_capability();
std::tuple<at::Tensor, at::Tensor> latent_langevin_cpu(const at::Tensor& y0, const at::Tensor& cond,
                                                       const at::Tensor& params, at::IntArrayRef program,
                                                       at::ArrayRef<double> schedule, at::IntArrayRef steps,
                                                       const at::Tensor& timesteps, const at::Tensor& noise,
                                                       const at::Tensor& rng, bool trace, int64_t precision);
std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_langevin_emulation(
    const at::Tensor& y0, const at::Tensor& cond, const at::Tensor& params, at::IntArrayRef program,
    at::ArrayRef<double> schedule, at::IntArrayRef steps, const at::Tensor& timesteps, const at::Tensor& noise,
    const at::Tensor& rng, bool trace, c10::string_view path, int64_t threads, int64_t tile, int64_t stage_rows,
    bool banks, at::IntArrayRef device, int64_t precision);
at::Tensor simt_selftest(c10::string_view name);
at::Tensor latent_bf16_pairs(at::IntArrayRef program, const at::Tensor& params);
std::tuple<std::vector<int64_t>, std::string> latent_langevin_plan(at::IntArrayRef program, int64_t n_params,
                                                                   int64_t B, int64_t elem, at::IntArrayRef device,
                                                                   int64_t precision);
at::Tensor langevin_update_cpu(const at::Tensor& y, const at::Tensor& y_cond, const at::Tensor& grad,
                               const at::Tensor& noise, const at::Tensor& rng, int64_t step, double c1, double c2,
                               double h, double n);
}  // namespace cpu
bool cuda_built() {
#ifdef HEBM_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace hebm

TORCH_LIBRARY(hebm, m) {
  // The fused latent sampler: every Langevin step of every timestep in one call (see csrc/core/schedule.h).
  // Returns (y, trace); trace is [S, B, 2] (energy, gradient norm per step and chain) when asked, else empty.
  // precision: the matmuls' precision, core::Precision (csrc/core/simt.h): 0 fp32, 1 tf32, 2 bf16 (CUDA only).
  m.def(
      "latent_langevin(Tensor y0, Tensor cond, Tensor params, int[] program, float[] schedule, int[] steps, "
      "Tensor timesteps, Tensor noise, Tensor rng, bool trace, int precision=0) -> (Tensor, Tensor)");
  // Test support: the CUDA kernels' block program executed on the CPU lane by lane (csrc/cpu/block_emulation.cpp,
  // simt_emulation.h). Same arguments, plus the path ('auto', 'staged', 'resident', 'cluster', 'throughput'),
  // threads per block, chains per block (0: the launcher's choice), staged weight rows (v1; 0: the launcher's), bank-conflict
  // counting and the device's [multiprocessors, shared-memory bytes per block, compute capability major] (empty:
  // an H200), and the matmul precision (core::Precision: tf32 / bf16 run the throughput path's tensor-core GEMM,
  // float32 only). Returns (y, trace, stats) (stats: see block_emulation.cpp).
  m.def(
      "_latent_langevin_emulation(Tensor y0, Tensor cond, Tensor params, int[] program, float[] schedule, "
      "int[] steps, Tensor timesteps, Tensor noise, Tensor rng, bool trace, str path, int threads, int tile, "
      "int stage_rows, bool banks, int[] device, int precision=0) -> (Tensor, Tensor, Tensor)");
  // One step of THE update rule for the generic engine (hebm_ext.langevin), given the gradient:
  //   out = c1 * y + c2 * y_cond + h * grad + n * xi
  // xi = noise (that step's [B, ...] slice) when given, else the Philox normal of chain b (first dim of y),
  // flattened element d, global step `step`: core::normal_at(seed, offset + step, b, d), rng = [seed, offset] read
  // on y's device, exactly as the fused sampler draws it. y_cond and noise may be empty (no y_cond term / Philox).
  m.def(
      "langevin_update(Tensor y, Tensor y_cond, Tensor grad, Tensor noise, Tensor rng, int step, float c1, "
      "float c2, float h, float n) -> Tensor");
}

TORCH_LIBRARY_IMPL(hebm, CPU, m) {
  m.impl("latent_langevin", &hebm::cpu::latent_langevin_cpu);
  m.impl("_latent_langevin_emulation", &hebm::cpu::latent_langevin_emulation);
  m.impl("langevin_update", &hebm::cpu::langevin_update_cpu);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "hebm_ext compiled kernels (operators are registered under torch.ops.hebm)";
  m.def("cpu_capability", &hebm::cpu::cpu_capability,
        "Instruction set of the CPU kernels in use (default, avx2 or avx512; HEBM_CPU_CAPABILITY overrides)");
  m.def("cuda_built", &hebm::cuda_built, "Whether this build contains the CUDA kernels");
  m.def("simt_selftest", [](const std::string& n) { return hebm::cpu::simt_selftest(n); },
        "Test support: a SIMT primitive test kernel run through the CPU emulation (csrc/cpu/simt_selftest.cpp)");
  m.def("latent_plan", &hebm::cpu::latent_langevin_plan,
        "The CUDA launcher's choice for (program ints, parameter count, B, element bytes, device [sms, smem bytes "
        "per block, cc major] or [] for an H200, precision 0 fp32 / 1 tf32 / 2 bf16): ([path, tile, cluster, "
        "threads, smem bytes, tiles], why v1)",
        py::arg("program"), py::arg("n_params"), py::arg("B"), py::arg("elem"), py::arg("device"),
        py::arg("precision") = 0);
  m.def("latent_bf16_pairs", &hebm::cpu::latent_bf16_pairs,
        "Test support: the bf16 throughput kernel's weights as packed bf16 k-pairs (int32 words; csrc/core/tile_mma.h "
        "bf16_pair_word) for (program ints, float32 params)", py::arg("program"), py::arg("params"));
}
