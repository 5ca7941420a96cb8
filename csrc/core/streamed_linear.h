// v2 linear layers for programs whose weights fit neither one block nor a 2-block cluster (WarpEngine,
// warp_linear.h): each layer's weight rows are streamed from global memory (L2) through a double-buffered shared
// stage with cp.async, chunk ch + 1 in flight while chunk ch is computed, with WarpEngine's warp-level arithmetic
// on each chunk (its forward_rows / backward_column cores: warps own rows, lanes own k-ranges with 16-byte loads
// and shuffle sums; the backward reads the same row-major chunk with lanes owning input columns).
//
// Per layer call (forward or backward), with n = ceil(out / rows) chunks of `rows` rows (a.lay.rows[j]):
//   issue(chunk 0 -> stage 0)
//   for ch in 0 .. n-1:
//     cp.async.wait_group 0     this thread's copies of chunk ch have landed
//     barrier                   everyone's have; and every thread is done with chunk ch-1's stage, so
//     issue(chunk ch+1 -> stage (ch+1) % 2)   may overwrite it while
//     compute chunk ch from stage ch % 2
// One barrier per chunk. The walk (block_sampler.h) puts a barrier after every layer call, so chunk 0 of the next
// call may refill either stage. The backward's per-(chain, input) sums run over the chunks in shared memory (each
// entry owned by one thread, no barrier), adding the rows in the same order as WarpEngine: the streamed path
// computes the resident path's numbers bit for bit.
// Shared memory: the chains' state (block_layout), then the two stages, then tile x max_width partial sums.
#pragma once

#include <stdint.h>

#include "block_sampler.h"
#include "warp_linear.h"

namespace hebm {
namespace core {

constexpr int kStreamStageBytes = 32 * 1024;  // one stage buffer, when it fits (docs/CUDA_KERNELS.md: the choice)

// The backward's partial sums (elements): one per chain and input of the widest layer.
HEBM_HD int streamed_part_elems(int tile, int max_width) { return (tile * max_width + 3) / 4 * 4; }

// Elements of one stage buffer in a layout made by streamed_layout.
HEBM_HD int streamed_stage_elems(const BlockLayout& lay, int max_width) {
  return (lay.ws - streamed_part_elems(lay.tile, max_width)) / 2;
}

// The longest row stride of the program (a stage holds at least one row of every linear).
inline int streamed_max_ldw(const ProgramDesc& p) {
  int m = 4;
  for (int j = 0; j < p.n_lin; ++j) m = (p.lin[j].in + 3) / 4 * 4 > m ? (p.lin[j].in + 3) / 4 * 4 : m;
  return m;
}

// The chains' state, two stages of `stage` elements (a multiple of 4) and the partial sums; rows[j] = rows of
// linear j per chunk: as many as a stage holds, a multiple of 8 (the warps of a 256-thread block) from 8 on, at
// most rows_request when given (the emulation's tests run many chunks per layer with it).
inline BlockLayout streamed_layout(const ProgramDesc& p, int tile, int stage, int rows_request = 0) {
  BlockLayout L = block_layout(p, tile, 2 * stage + streamed_part_elems(tile, p.max_width), false, 1);
  for (int j = 0; j < p.n_lin; ++j) {
    int r = stage / L.ldw[j];
    if (r >= 8) r = r / 8 * 8;
    if (rows_request > 0 && r > rows_request) r = rows_request;
    if (r > p.lin[j].out) r = p.lin[j].out;
    L.rows[j] = r < 1 ? 1 : r;
  }
  return L;
}

template <typename T, class Ctx, int C>
struct StreamedEngine : WarpEngine<T, Ctx, C, 1> {
  using Base = WarpEngine<T, Ctx, C, 1>;
  HEBM_BLOCK_FN explicit StreamedEngine(Ctx& ctx) : Base(ctx) {}
  HEBM_BLOCK_FN void load(Ctx&, const BlockArgs<T>&, T*) const {}  // nothing resident: every layer is streamed
  // Its backward (backward_column over the chunks) reads every row of the input delta (one block: the same barrier)
  HEBM_BLOCK_FN bool backward_reads_own_rows() const { return false; }
  static constexpr bool kFusesLast = false;  // its rows are streamed chunks: no fused last hidden layer

  HEBM_BLOCK_FN T* stage(const BlockArgs<T>& a, T* smem, int b) const {
    return smem + a.lay.stage + b * streamed_stage_elems(a.lay, a.prog.max_width);
  }

  // This thread's copies of chunk ch of linear jl (rows [ch * rows, ...), row stride ldw, the padding zeroed)
  // into stage buffer `buf`, committed as one group.
  HEBM_BLOCK_FN void issue(Ctx& ctx, const BlockArgs<T>& a, T* buf, int jl, int ch) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl], rows = a.lay.rows[jl];
    const int j0 = ch * rows, n = (L.out - j0) < rows ? (L.out - j0) : rows;
    constexpr int G = 16 / int(sizeof(T));  // elements per 16-byte copy
    const T* W = a.params + L.w + (int64_t)j0 * L.in;
    // 16-byte copies need every row 16-byte aligned in global memory (the packed program puts weights at multiples
    // of 4 elements); in % 4 != 0 or an unaligned params view take element copies (same pipeline, 4x the copies)
    const bool vec = reinterpret_cast<uintptr_t>(a.params + L.w) % 16 == 0 && L.in % G == 0;
    const int per_row = ldw / G;
    for (int idx = ctx.tid(); idx < n * per_row; idx += ctx.nthreads()) {
      const int r = idx / per_row, k = (idx - r * per_row) * G;
      T* d = buf + r * ldw + k;
      const T* s = W + (int64_t)r * L.in + k;
      if (vec && k + G <= L.in) {
        ctx.cp_async16(d, s);
      } else {
        HEBM_UNROLL
        for (int q = 0; q < G; ++q) {
          if (k + q < L.in)
            ctx.cp_async_elem(d + q, s + q);
          else
            ctx.sh(d + q) = T(0);  // the row padding: read by the forward's vector loads (times zero inputs)
        }
      }
    }
    ctx.cp_async_commit();
  }

  // Waits for chunk ch and makes it visible to the block, then starts chunk ch + 1 (see the top of the file).
  HEBM_BLOCK_FN T* next_chunk(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, int ch, int nch) const {
    ctx.template cp_async_wait<0>();
    ctx.sync();
    if (ch + 1 < nch) issue(ctx, a, stage(a, smem, (ch + 1) & 1), jl, ch + 1);
    return stage(a, smem, ch & 1);
  }

  // WarpEngine::forward's contract (the activation kind dispatched to one instantiation per kind).
  HEBM_BLOCK_FN void forward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                             const int* trow, T slope, int act, const T* dyw = nullptr) const {
    HEBM_DISPATCH_ACT(act, A, (forward_k<A>(ctx, a, smem, jl, X, ldx, H, DH, trow, slope, dyw)));
  }

  template <int A>
  HEBM_BLOCK_FN void forward_k(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* X, int ldx, T* H, T* DH,
                               const int* trow, T slope, const T* dyw) const {
    const int out = a.prog.lin[jl].out, rows = a.lay.rows[jl], nch = (out + rows - 1) / rows;
    issue(ctx, a, stage(a, smem, 0), jl, 0);
    for (int ch = 0; ch < nch; ++ch) {
      const T* Ws = next_chunk(ctx, a, smem, jl, ch, nch);
      const int j0 = ch * rows;
      this->template forward_rows<A>(ctx, a, smem, jl, Ws, j0, (out - j0) < rows ? (out - j0) : rows, X, ldx, H, DH,
                                     trow, slope, dyw);
    }
  }

  // WarpEngine::backward's contract (DOUT, or G += (-alpha) * ...), over the chunks.
  HEBM_BLOCK_FN void backward(Ctx& ctx, const BlockArgs<T>& a, T* smem, int jl, const T* DIN, T* DOUT,
                              const T* DHprev, T* G, int ldg, int goff, const int* alpha_rows) const {
    const LinearDesc& L = a.prog.lin[jl];
    const int ldw = a.lay.ldw[jl], rows = a.lay.rows[jl], nch = (L.out + rows - 1) / rows;
    const int lane = ctx.lane(), ncg = (L.in + kWarp - 1) / kWarp;
    T* part = stage(a, smem, 2);  // [c][i]: the sums over the chunks so far (each entry read and written by one thread)
    issue(ctx, a, stage(a, smem, 0), jl, 0);
    for (int ch = 0; ch < nch; ++ch) {
      const T* Ws = next_chunk(ctx, a, smem, jl, ch, nch);
      const int o0 = ch * rows, o1 = (L.out - o0) < rows ? L.out : o0 + rows;
      for (int cg = ctx.warp(); cg < ncg; cg += ctx.nwarps()) {
        const int i = cg * kWarp + lane;
        const bool ok = i < L.in;
        T acc[C];
        HEBM_UNROLL
        for (int c = 0; c < C; ++c) acc[c] = ch == 0 || !ok ? T(0) : ctx.sh(part + c * L.in + i);
        this->backward_column(ctx, L, Ws, ldw, o0, o1, DIN, nullptr, i, ok, acc);
        if (!ok) continue;
        HEBM_UNROLL
        for (int c = 0; c < C; ++c) {
          if (ch + 1 == nch)
            this->finish(ctx, a, L, c, i, acc[c], DOUT, DHprev, G, ldg, goff, alpha_rows);
          else
            ctx.sh(part + c * L.in + i) = acc[c];
        }
      }
    }
  }
};

}  // namespace core
}  // namespace hebm
