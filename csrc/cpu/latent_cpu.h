// CPU fused latent sampler: the interface between the ATen launcher (latent_cpu.cpp) and the implementation,
// which is compiled once per instruction set (latent_cpu_{default,avx2,avx512}.cpp include latent_cpu_impl.h
// inside their own namespace) and chosen at run time. Nothing here includes ATen.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/program.h"
#include "core/schedule.h"

namespace hebm {
namespace cpu {

constexpr int kColPad = 32;   // widths are zero-padded to a multiple of this (the widest register block)
constexpr int kMaxTile = 64;  // chains per tile (rows of every GEMM)

// One linear layer, repacked by the launcher for the tile GEMMs:
//   wf [in x out_pad]      = W^T, zero columns past out   (forward:  H = X W^T)
//   wb [out_pad x in_pad]  = W,   zero-padded            (backward: dX = dH W; row 0 is the output vector of a head)
//   bias [out_pad], tb [time_steps x out_pad] (or null)
template <typename T>
struct CpuLinear {
  const T* wf;
  const T* wb;
  const T* bias;
  const T* tb;
  int in, out, in_pad, out_pad;
};

template <typename T>
struct CpuArgs {
  core::ProgramDesc prog;
  core::ScheduleDesc sched;
  const T* params;           // the flat parameter buffer (scalars: slopes, base parameters)
  const CpuLinear<T>* lin;   // prog.n_lin entries
  const T* y0;               // [B, D]
  const T* cond;             // [B, D] or null (then y0)
  const int64_t* tsel;       // [B] per-chain timestep, or null (full program)
  const T* noise;            // [S, B, D] or null (Philox)
  T* out;                    // [B, D]
  T* trace;                  // [S, B, 2] (energy, |grad|) or null
  int64_t B;
  uint64_t seed, offset;
  int tile;                  // rows per tile, a multiple of 8, at most kMaxTile
  int Dp;                    // row stride of the latent tiles
  int wpad;                  // max padded width
};

// Offsets (in elements of T) of a tile's scratch buffers.
struct CpuScratchLayout {
  size_t y, yc, g, z, gz, d0, d1, go, e, xi, total;
  size_t h[core::kMaxLinears];   // hidden activations of linear j (post-activation), [tile x out_pad]
  size_t dh[core::kMaxLinears];  // activation derivative at the pre-activation, [tile x out_pad]
};

inline CpuScratchLayout cpu_scratch_layout(const core::ProgramDesc& p, const int* out_pad, int tile, int Dp, int wpad) {
  CpuScratchLayout s;
  size_t o = 0;
  const size_t lat = size_t(tile) * Dp;
  s.y = o; o += lat;
  s.yc = o; o += lat;
  s.g = o; o += lat;
  s.z = o; o += lat;   // z = T(u) for the u-parameterised ladder; unused otherwise
  s.gz = o; o += lat;
  s.d0 = o; o += size_t(tile) * wpad;
  s.d1 = o; o += size_t(tile) * wpad;
  s.go = o; o += size_t(tile) * wpad;  // gradient w.r.t. a ladder conditional's output
  s.e = o; o += size_t(tile);
  s.xi = o; o += size_t(Dp) + 4;  // one row of noise
  for (int j = 0; j < p.n_lin; ++j) {
    s.h[j] = o; o += size_t(tile) * out_pad[j];
    s.dh[j] = o; o += size_t(tile) * out_pad[j];
  }
  s.total = o + 64;  // slack for alignment
  return s;
}

// Entry points, one per instruction set: run tiles [tile_begin, tile_end) with the given scratch (>= layout.total).
#define HEBM_DECLARE_CPU_NS(ns)                                                                      \
  namespace ns {                                                                                     \
  void run_tiles(const CpuArgs<float>& a, const CpuScratchLayout& s, int64_t tile_begin, int64_t tile_end, float* scratch);   \
  void run_tiles(const CpuArgs<double>& a, const CpuScratchLayout& s, int64_t tile_begin, int64_t tile_end, double* scratch); \
  }
HEBM_DECLARE_CPU_NS(cap_default)
#if defined(__x86_64__) || defined(_M_X64)
HEBM_DECLARE_CPU_NS(cap_avx2)
HEBM_DECLARE_CPU_NS(cap_avx512)
#define HEBM_CPU_HAS_X86_CAPS 1
#else
#define HEBM_CPU_HAS_X86_CAPS 0
#endif
#undef HEBM_DECLARE_CPU_NS

}  // namespace cpu
}  // namespace hebm
