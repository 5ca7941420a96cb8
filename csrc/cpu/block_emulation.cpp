// Test support: runs the CUDA kernels' block program (csrc/core/block_sampler.h) on the CPU through the SIMT
// emulation (simt_emulation.h): every thread of a block (of a cluster) lane by lane, with the GPU's shuffle,
// barrier and distributed-shared-memory semantics, bounds-checked shared memory and, on request, bank-conflict
// counts. It checks the kernels' algorithm on machines without a GPU; it is not a sampler for users
// (hebm::latent_langevin is). Tiles of chains run in parallel over the CPU's threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <mutex>
#include <string>
#include <type_traits>

#include "core/block_sampler.h"
#include "core/launch_plan.h"
#include "core/streamed_linear.h"
#include "core/tile_linear.h"
#include "core/warp_linear.h"
#include "cpu/simt_emulation.h"
#include "latent_checks.h"

namespace hebm {
namespace cpu {

namespace {

core::DeviceProps device_props(at::IntArrayRef device) {
  if (device.empty()) return core::h200_props();
  TORCH_CHECK(device.size() == 3, "device must be [multiprocessors, shared-memory bytes per block, compute "
              "capability major] or empty (an H200), got ", device.size(), " values");
  return core::DeviceProps{int(device[0]), int(device[1]), int(device[2])};
}

int path_code(c10::string_view path) {
  if (path == "auto") return -1;
  if (path == "cluster4") return core::PATH_CLUSTER;
  if (path == "staged") return core::PATH_STAGED;
  if (path == "resident") return core::PATH_RESIDENT;
  if (path == "cluster") return core::PATH_CLUSTER;
  if (path == "streamed") return core::PATH_STREAMED;
  if (path == "throughput") return core::PATH_THROUGHPUT;
  TORCH_CHECK(false, "path must be 'auto', 'staged', 'resident', 'cluster' (2 blocks), 'cluster4' (4 blocks), "
              "'streamed' or 'throughput', got '",
              std::string(path), "'");
}

// blocks > 0: that many persistent blocks, each looping over the tiles (core::throughput_program); else one
// block (cluster) per tile.
template <typename T, class Eng>
void run_grid(const core::BlockArgs<T>& a, int cluster, int threads, bool banks, emu::Stats& total,
              int64_t blocks = 0) {
  const int64_t tiles = blocks > 0 ? blocks : (a.B + a.lay.tile - 1) / a.lay.tile;
  const size_t bytes = size_t(a.lay.total) * sizeof(T);
  std::mutex mu;
  std::string error;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    try {
      emu::Cluster cl(cluster, threads, bytes, banks);
      for (int64_t t = begin; t < end; ++t) {
        cl.run(
            [&](emu::EmuCtx& ctx) {
              T* smem = reinterpret_cast<T*>(cl.smem(ctx.cluster_rank()));
              if (blocks > 0)
                core::throughput_program<T, emu::EmuCtx, Eng>(ctx, a, smem, ctx.cluster_index(), blocks);
              else
                core::block_program<T, emu::EmuCtx, Eng>(ctx, a, smem, ctx.cluster_index());
            },
            t);
      }
      std::lock_guard<std::mutex> g(mu);
      total.add(cl.stats());
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> g(mu);
      if (error.empty()) error = e.what();
    }
  });
  TORCH_CHECK(error.empty(), "latent_langevin emulation: ", error);
}

// The packed bf16 weights (core::bf16_pair_word) written on the host: what the CUDA launcher's pack kernel writes.
void fill_bf16_pairs(const core::ProgramDesc& p, const float* params, at::Tensor& words) {
  uint32_t* w = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  for (int64_t i = 0; i < words.numel(); ++i) w[i] = core::bf16_pair_word(p, params, i);
}

template <typename T>
emu::Stats emulate(const LatentTensors& call, const core::LaunchPlan& P, int threads, bool banks, int precision) {
  core::BlockArgs<T> a = block_args<T>(call);
  a.lay = P.lay;
  a.precision = precision;
  at::Tensor pairs;  // bf16: the packed weights, filled here as the CUDA launcher's pack kernel does
  if constexpr (std::is_same<T, float>::value) {
    pairs = bf16_pairs_tensor(call, precision);
    fill_bf16_pairs(a.prog, a.params, pairs);
    a.bf16_pairs = pairs.numel() ? reinterpret_cast<const uint32_t*>(pairs.data_ptr<int32_t>()) : nullptr;
  }
  emu::Stats st;
  if (P.path == core::PATH_STAGED) {
    run_grid<T, core::StagedEngine<T, emu::EmuCtx>>(a, 1, threads, banks, st);
    return st;
  }
  if (P.path == core::PATH_STREAMED) {
    switch (P.tile) {
#define HEBM_EMU_CASE(C) \
  case C: run_grid<T, core::StreamedEngine<T, emu::EmuCtx, C>>(a, 1, threads, banks, st); break;
      HEBM_EMU_CASE(1) HEBM_EMU_CASE(2) HEBM_EMU_CASE(3) HEBM_EMU_CASE(4)
#undef HEBM_EMU_CASE
      default: TORCH_CHECK(false, "the v2 paths take 1-4 chains per block, got ", P.tile);
    }
    return st;
  }
  if (P.path == core::PATH_THROUGHPUT) {
    if constexpr (std::is_same<T, float>::value) {  // the tensor-core GEMM takes float32 chains
      if (precision == core::kPrecisionTf32) {
        run_grid<T, core::TileEngine<T, emu::EmuCtx, core::kPrecisionTf32>>(a, 1, threads, banks, st, P.blocks);
        return st;
      }
      if (precision == core::kPrecisionBf16) {
        run_grid<T, core::TileEngine<T, emu::EmuCtx, core::kPrecisionBf16>>(a, 1, threads, banks, st, P.blocks);
        return st;
      }
    }
    TORCH_CHECK(precision == core::kPrecisionFp32, "precision ", precision, " with ", sizeof(T) * 8, "-bit chains");
    run_grid<T, core::TileEngine<T, emu::EmuCtx>>(a, 1, threads, banks, st, P.blocks);
    return st;
  }
  const int cs = P.cluster;
  switch (P.tile * 8 + cs) {
#define HEBM_EMU_CASE(C, CS) \
  case C * 8 + CS: run_grid<T, core::WarpEngine<T, emu::EmuCtx, C, CS>>(a, CS, threads, banks, st); break;
    HEBM_EMU_CASE(1, 1) HEBM_EMU_CASE(2, 1) HEBM_EMU_CASE(3, 1) HEBM_EMU_CASE(4, 1)
    HEBM_EMU_CASE(1, 2) HEBM_EMU_CASE(2, 2) HEBM_EMU_CASE(3, 2) HEBM_EMU_CASE(4, 2)
    HEBM_EMU_CASE(1, 4) HEBM_EMU_CASE(2, 4) HEBM_EMU_CASE(3, 4) HEBM_EMU_CASE(4, 4)
#undef HEBM_EMU_CASE
    default: TORCH_CHECK(false, "the v2 paths take 1-4 chains per block, got ", P.tile);
  }
  return st;
}

}  // namespace

namespace {

void check_precision(const char* who, int64_t precision) {
  TORCH_CHECK(precision >= core::kPrecisionFp32 && precision <= core::kPrecisionBf16, who,
              ": precision must be 0 (fp32), 1 (tf32) or 2 (bf16), got ", precision);
}

// The launcher's plan (plan_launch) with its precision errors raised (precision_plan_error), as the CUDA launcher
// does: the emulation and latent_langevin_plan report what a GPU call would.
core::LaunchPlan checked_plan(const char* who, const core::ProgramDesc& p, int64_t B, const core::DeviceProps& dev,
                              int elem, int req, int tile, int cluster, int warps, int64_t precision) {
  check_precision(who, precision);
  const core::LaunchPlan P = core::plan_launch(p, B, dev, elem, req, tile, cluster, warps, int(precision));
  char perr[400];
  const char* pe = core::precision_plan_error(P, p, dev, elem, int(precision), perr, sizeof(perr));
  TORCH_CHECK(pe == nullptr, who, ": ", pe ? pe : "");
  return P;
}

}  // namespace

// Returns (y, trace, stats); stats (int64): [path, tile, cluster, threads, shared-memory bytes per block,
// block barriers, cluster barriers, named barriers, warp collectives, shared-memory instructions, wavefronts,
// ideal wavefronts, conflicted instructions, mbarrier phases], the counts summed over the grid.
std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_langevin_emulation(
    const at::Tensor& y0_, const at::Tensor& cond_, const at::Tensor& params_, at::IntArrayRef program,
    at::ArrayRef<double> schedule, at::IntArrayRef steps, const at::Tensor& timesteps_, const at::Tensor& noise_,
    const at::Tensor& rng, bool trace_flag, c10::string_view path, int64_t threads, int64_t tile,
    int64_t stage_rows, bool banks, at::IntArrayRef device, int64_t precision) {
  TORCH_CHECK(threads >= 32 && threads <= 1024 && threads % 32 == 0,
              "threads must be a multiple of 32 in [32, 1024], got ", threads);
  TORCH_CHECK(tile >= 0 && tile <= core::kBlockMaxTile, "tile must be in [0, ", core::kBlockMaxTile, "], got ", tile);
  TORCH_CHECK(stage_rows >= 0 && stage_rows <= core::kBlockMaxJC, "stage_rows must be in [0, ", core::kBlockMaxJC,
              "], got ", stage_rows);
  check_precision("latent_langevin emulation", precision);
  TORCH_CHECK(precision == core::kPrecisionFp32 || y0_.scalar_type() == at::kFloat, "latent_langevin emulation: "
              "precision=", precision, " rounds float32 matmul operands (tensor cores), so y0 must be float32, got ",
              y0_.scalar_type());
  const LatentTensors t = prepare_latent(y0_, cond_, params_, program, schedule, steps, timesteps_, noise_, rng,
                                         trace_flag);
  const core::DeviceProps dev = device_props(device);
  const int elem = int(t.y0.element_size());
  const int req = path_code(path);
  // the layout's per-warp slots for this many warps (the launcher's blocks have 8)
  core::LaunchPlan P = checked_plan("latent_langevin emulation", t.c.prog, t.c.B, dev, elem, req, int(tile),
                                    path == "cluster4" ? 4 : 0, int(threads / 32), precision);
  TORCH_CHECK(req < 0 || P.path == req, "latent_langevin emulation: path '", std::string(path), "' was not taken");
  if (P.path == core::PATH_STAGED && stage_rows > 0) {
    P.lay = core::block_layout(t.c.prog, P.tile, core::block_stage_elems(t.c.prog, int(stage_rows)));
  }
  if (P.path == core::PATH_STREAMED && stage_rows > 0) {  // at most stage_rows rows per chunk
    P.lay = core::streamed_layout(t.c.prog, P.tile, core::streamed_stage_elems(P.lay, t.c.prog.max_width),
                                  int(stage_rows));
  }
  TORCH_CHECK(P.tile >= 1, "latent_langevin emulation: not even one chain fits the shared-memory budget");
  TORCH_CHECK(P.path == core::PATH_STAGED || P.path == core::PATH_THROUGHPUT || P.tile <= core::kWarpMaxChains,
              "the v2 latency paths take 1-", core::kWarpMaxChains, " chains per block, got tile ", P.tile);
  TORCH_CHECK(P.path != core::PATH_THROUGHPUT || P.tile % core::tile_quantum(int(precision)) == 0, "the "
              "throughput path takes a multiple of ", core::tile_quantum(int(precision)), " chains per block (the "
              "mma's rows), got tile ", P.tile);
  emu::Stats st;
  if (t.c.B > 0) {
    AT_DISPATCH_FLOATING_TYPES(t.y0.scalar_type(), "latent_langevin_emulation", [&] {
      st = emulate<scalar_t>(t, P, int(threads), banks, int(precision));
    });
  }
  at::Tensor stats = at::tensor(std::vector<int64_t>{P.path, P.tile, P.cluster, threads, int64_t(P.lay.total) * elem,
                                                     st.block_barriers, st.cluster_barriers, st.named_barriers,
                                                     st.warp_collectives, st.smem_instructions, st.wavefronts,
                                                     st.ideal_wavefronts, st.conflicted, st.mbarrier_phases});
  return {t.out, t.trace, stats};
}

// The launcher's choice for a call (the same host code as the CUDA launcher): ([path, tile, cluster, threads,
// shared-memory bytes per block, tiles], why v1 was taken or "").
std::tuple<std::vector<int64_t>, std::string> latent_langevin_plan(at::IntArrayRef program, int64_t n_params, int64_t B,
                                                                   int64_t elem, at::IntArrayRef device,
                                                                   int64_t precision) {
  core::ProgramDesc p;
  const core::ParseResult pr = core::parse_program(program.data(), int64_t(program.size()), n_params, p);
  TORCH_CHECK(pr.ok, "latent_langevin plan: ", pr.msg);
  const core::LaunchPlan P = checked_plan("latent_langevin plan", p, B, device_props(device), int(elem), -1, 0, 0,
                                          core::kWarpThreads / 32, precision);
  return {std::vector<int64_t>{P.path, P.tile, P.cluster, P.threads, P.smem_bytes, P.tiles}, std::string(P.why)};
}

// Test support: the bf16 throughput kernel's packed weights (tile_mma.h, bf16_pair_word) for float32 params, as
// the int32 words the launcher writes.
at::Tensor latent_bf16_pairs(at::IntArrayRef program, const at::Tensor& params) {
  TORCH_CHECK(params.device().is_cpu() && params.scalar_type() == at::kFloat && params.dim() == 1,
              "latent_bf16_pairs: params must be a 1-D float32 CPU tensor, got ", params.scalar_type(), " on ",
              params.device(), " with ", params.dim(), " dims");
  core::ProgramDesc p;
  const core::ParseResult pr = core::parse_program(program.data(), int64_t(program.size()), params.numel(), p);
  TORCH_CHECK(pr.ok, "latent_bf16_pairs: ", pr.msg);
  at::Tensor words = at::empty({core::bf16_pair_words(p)}, params.options().dtype(at::kInt));
  const at::Tensor pc = params.contiguous();
  fill_bf16_pairs(p, pc.data_ptr<float>(), words);
  return words;
}

}  // namespace cpu
}  // namespace hebm
