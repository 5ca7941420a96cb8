"""The throughput path's fp32 SIMT GEMM (csrc/core/tile_linear.h, TileEngine) through the SIMT emulation, on
the shapes its tiling has edges for: 4 x 8 and (in the backward) 4 x 4 thread tiles (the cheaper per layer by
tile_k_cost), rows past the tile masked (tiles not a multiple of 4, fewer chains than the tile in the last round),
several weight panels per layer with a partial last one (K not a multiple of 16) prefetched by cp.async a panel
ahead, N not a multiple of the thread tile, several passes over the thread tiles (fewer threads than tiles),
persistent blocks with several tiles each. Every case against the eager reference on the same explicit noise:
float64 to 1e-10, float32 to 1e-4. The emulation reports a cp.async copy into a word another thread read since
the last barrier (the prefetch into the panel being read) and a read of a copy in flight as errors."""
import pytest
import torch

import hebm_ext as H
from hebm_ext import _C
from hebm_ext.sampling import program as P
from helpers import lebm_prior

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
THROUGHPUT = 4  # core::PATH_THROUGHPUT
STAT = ["path", "tile", "cluster", "threads", "smem_bytes", "block_barriers", "cluster_barriers", "named_barriers",
        "warp_collectives", "smem_instructions", "wavefronts", "ideal_wavefronts", "conflicted"]


def emulate(prior, y0, sch, noise, *, tile, threads, sms, banks=False):
    params, program = P.build_program(prior, y0.dtype, y0.device)
    empty = y0.new_empty(0)
    rng = torch.tensor([0, 0], dtype=torch.int64)
    out, _, st = torch.ops.hebm._latent_langevin_emulation(
        y0, empty, params, program, sch.coefficients(), list(sch.K), torch.empty(0, dtype=torch.int64), noise, rng,
        False, "throughput", threads, tile, 0, banks, [sms, 232448, 9])
    return out, dict(zip(STAT, st.tolist()))


def check(prior, B, D, steps, dtype, **kw):
    sch = H.LangevinSchedule.lebm(steps=steps)
    y0 = torch.randn(B, D, dtype=dtype)
    noise = torch.randn(steps, B, D, dtype=dtype)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, st = emulate(prior, y0, sch, noise, **kw)
    assert (st["path"], st["tile"]) == (THROUGHPUT, kw["tile"])
    err = (out - ref).abs().max().item()
    assert err < TOL[dtype], (kw, err)
    return ref


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lebm_full_tiles_persistent_blocks(dtype):
    """LEBM 100-200-200-1 as on the GPU: 32-chain tiles on 256 threads (8 row groups x 25 column groups of 4 x 8),
    K = 100 in 7 panels (the last of 4 rows), K = 200 in 13 (the last of 8); 71 chains = tiles of 32, 32, 7 on 2
    persistent blocks (block 0 runs tiles 0 and 2: a short last tile after a full one)."""
    torch.manual_seed(0)
    ref = check(lebm_prior("lrelu", dtype), 71, 100, 2, dtype, tile=32, threads=256, sms=2)
    assert ref.isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_odd_widths_masked_rows(dtype):
    """in 37 -> 45 -> 45 -> 1 (K = 37: 3 panels, the last of 5 rows; K = 45: the last of 13; N = 45 not a
    multiple of 4 or 8), tiles of 1, 5 and 7 chains (rows past the tile masked: 4 rows per thread tile), 13
    chains (a partial last tile), one block over every tile and three blocks."""
    torch.manual_seed(1)
    prior = lebm_prior("gelu", dtype, in_dim=37, hidden=45, depth=2)
    for tile, sms in ((1, 1), (5, 3), (7, 1)):
        check(prior, 13, 37, 2, dtype, tile=tile, threads=64, sms=sms)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lane_map_partial_row_blocks_odd_column_groups(dtype):
    """The lane-to-tile map (tile_item: pairs of column groups, inside a pair blocks of 4 row groups x 2 column
    groups, then the mg % 4 row groups left) on its edges: 22 chains (6 row groups: one block of 4 and a rest of
    2), 25 chains (7 row groups, a rest of 3; rows 25 .. 27 masked), hidden 52 (7 column groups of 8, 13 of 4:
    the last of each pair-less), 32 and 64 threads (passes that end inside a pair)."""
    torch.manual_seed(3)
    prior = lebm_prior("lrelu", dtype, in_dim=37, hidden=52, depth=2)
    for tile, threads in ((22, 64), (25, 32)):
        check(prior, tile, 37, 2, dtype, tile=tile, threads=threads, sms=1)


def test_lebm_tile_step_wavefronts():
    """Shared-memory wavefronts of one 32-chain LEBM tile-step on 256 threads (the emulation's bank model, one
    step more minus one less): 48,680 (47,812 without conflicts; 680 conflicted instructions, 600 of them the A
    loads of each layer's pair-less last column group: N = 200 in 25 groups of 8, N = 100 in 13). The GEMMs'
    loads are 4 wavefronts per LDS.128 where a quarter-warp holds 4 row groups x 2 column groups (tile_item);
    with 8 consecutive row groups per quarter-warp rows r and r + 4 of A share banks at lda = 200 (69,854
    wavefronts, 5,220 conflicted). The epilogues' scalar accesses visit each lane's columns from rg mod 8 on;
    in one order for every lane, rows 8 banks apart and columns in groups of 8 fall in 4 banks (57,854, 2,220)."""
    torch.manual_seed(4)
    prior = lebm_prior("lrelu", torch.float32)
    y0 = torch.randn(32, 100)
    noise = torch.randn(2, 32, 100)
    st = [emulate(prior, y0, H.LangevinSchedule.lebm(steps=s), noise[2 - s:], tile=32, threads=256, sms=1,
                  banks=True)[1] for s in (1, 2)]
    step = {k: st[1][k] - st[0][k] for k in ("wavefronts", "ideal_wavefronts", "conflicted")}
    assert step["ideal_wavefronts"] == 47812, step
    assert step["wavefronts"] <= 49250 and step["conflicted"] <= 700, step


def test_several_passes_over_the_thread_tiles():
    """Fewer threads than thread tiles, several passes (each restaging every panel after a barrier): 12 chains x
    200 outputs on 32 threads (the backward's 4 x 4 tiles: 150 over 5 passes; the forward's 4 x 8: 75 over 3),
    30 chains x 200 on 128 threads (4 x 8: 200 over 2 passes; row groups 6 and 7 own the masked rows 30 and 31)."""
    torch.manual_seed(2)
    prior = lebm_prior("lrelu", torch.float64, in_dim=20, hidden=200, depth=2)
    check(prior, 12, 20, 2, torch.float64, tile=12, threads=32, sms=1)
    check(prior, 30, 20, 1, torch.float64, tile=30, threads=128, sms=1)


def test_plan_lebm_b65536():
    """The planner's tile for LEBM at B = 65536 on an H200: 32 chains, 2,048 tiles on 132 persistent blocks,
    within the 227 KB opt-in; small batches round ceil(B / SMs) up to 4."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    (path, tile, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 65536, 4, [])
    assert (path, tile, cluster, threads, tiles, why) == (THROUGHPUT, 32, 1, 256, 2048, "")
    assert smem <= 232448, smem
    (path, tile, _, _, _, _), _ = _C.latent_plan(program, params.numel(), 12, 4, [2, 232448, 9])
    assert (path, tile) == (THROUGHPUT, 8)
