"""The latency path's row-owner backward and the 4-block cluster (csrc/core/warp_linear.h, launch_plan.h) through the
SIMT emulation. Every latency-path test of test_cuda_emulation.py (flat Gaussian base, z- and u-ladders, time
heads with per-chain timesteps, activations, the Philox seed) runs on 'cluster4' too (its PATHS); here: the plan
for LEBM on an H200, the barriers and bank conflicts of the 4-block step, layers with fewer rows than blocks and
rows split across a 16-byte group, and every block size the per-warp slots take."""
import pytest
import torch

import hebm_ext as H
from hebm_ext import _C
from hebm_ext.sampling import program as P
from helpers import lebm_prior, multi_head_prior
from test_cuda_emulation import emulate


def test_lebm_plan_takes_the_4_block_cluster():
    """LEBM 100-200-200-1 at B = 100 on an H200: 25 clusters x 4 blocks (100 SMs), 4 chains per cluster, each block
    a quarter of each hidden layer's rows; the planner's step model prefers it to 50 x 2 blocks."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    (path, tile, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 100, 4, [])
    assert (path, tile, cluster, threads, tiles) == (2, 4, 4, 256, 25) and why == ""
    assert smem <= 232448
    # B = 200: 4 blocks would need 50 clusters = 200 SMs (2 waves): the 2-block cluster's one wave of 4 chains wins
    (path, tile, cluster, _, _, tiles), _ = _C.latent_plan(program, params.numel(), 200, 4, [])
    assert (path, tile, cluster, tiles) == (2, 4, 2, 50)
    # no clusters on an A100: streamed
    (path, *_), why = _C.latent_plan(program, params.numel(), 100, 4, [108, 166912, 8])
    assert path == 3 and why == ""


def test_lebm_4_block_barriers_and_banks():
    """The 4-block step of LEBM (4 chains): 3 exchanges through mbarriers (the first forward, 2 backwards: one
    phase of one mbarrier in each of the 4 blocks), 1 block barrier (the update's: the last hidden layer runs its
    forward and backward in one pass, WarpEngine::forward_backward, so no barrier separates them; the energy waits
    for its backward's exchange) and one named barrier per backward (the per-warp slots added after it); 2 cluster
    barriers a launch (after the weight load, before the exit); no bank conflict in the steps; 2,078 wavefronts per
    block-step (2,261 with the last hidden layer's forward and backward apart, 2,685 with the backward on all 8
    warps: docs/CUDA_KERNELS.md, the LEBM table and cut (e))."""
    prior = lebm_prior("lrelu", torch.float32)
    steps = 3
    sch = H.LangevinSchedule.lebm(steps=steps)
    y0 = torch.randn(4, 100)
    noise = torch.randn(steps, 4, 100)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _, st = emulate(prior, y0, sch, "auto", noise=noise, threads=256, banks=True, tile=4)
    assert (st["path"], st["tile"], st["cluster"]) == (2, 4, 4)
    assert (out - ref).abs().max() < 1e-4
    assert st["cluster_barriers"] == 2, st
    assert (st["mbarrier_phases"] / 4 - 2) / steps == 3, st  # 2 outside the steps: timestep start and end
    assert (st["block_barriers"] / 4 - 1) / steps == 1, st
    assert st["named_barriers"] / 4 / steps == 2, st
    one = emulate(prior, y0, H.LangevinSchedule.lebm(steps=steps - 1), "auto", noise=noise[1:], threads=256, tile=4,
                  banks=True)[2]
    assert st["smem_instructions"] - one["smem_instructions"] > 1000, (st, one)
    assert st["conflicted"] == one["conflicted"], (st, one)
    assert (st["wavefronts"] - one["wavefronts"]) / 4 == 2078, (st, one)


@pytest.mark.parametrize("threads", [32, 96, 160, 256])
@pytest.mark.parametrize("path", ["resident", "cluster", "cluster4"])
def test_row_owner_backward_any_block_size(path, threads):
    """The row-owner backward on 1, 3, 4 of 5 and 4 of 8 warps (its per-warp slots, the idle warps at its named
    barrier); hidden widths 3 (fewer rows than the 4 blocks: a block without rows), 37 (10 rows a block: a 16-byte
    group of the next layer's rows split over two blocks) and 300 inputs (two 256-input passes of the backward)."""
    for hidden, in_dim in ((3, 12), (37, 20), (37, 300)):
        prior = lebm_prior("gelu", torch.float64, in_dim=in_dim, hidden=hidden, depth=2, scale=1.0)
        sch = H.LangevinSchedule.lebm(steps=3, step_size=0.3)
        y0 = torch.randn(3, in_dim, dtype=torch.float64)
        noise = torch.randn(3, 3, in_dim, dtype=torch.float64)
        ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
        out, _, st = emulate(prior, y0, sch, path, noise=noise, tile=3, threads=threads)
        assert st["cluster"] == {"resident": 1, "cluster": 2, "cluster4": 4}[path]
        assert (out - ref).abs().max() < 1e-10, (hidden, in_dim)


def test_cluster_sizes_agree_in_float32():
    """One block, 2 and 4 blocks compute the same chains (float32: the sums' order differs by the row split)."""
    prior = multi_head_prior(torch.float32)
    sch = H.LangevinSchedule.lebm(steps=3, step_size=0.3)
    y0 = torch.randn(5, 48)
    noise = torch.randn(3, 5, 48)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    outs = [emulate(prior, y0, sch, p, noise=noise, tile=3)[0] for p in ("resident", "cluster", "cluster4")]
    for o in outs:
        assert (o - ref).abs().max() < 1e-4
    assert (outs[1] - outs[2]).abs().max() < 1e-5


@pytest.mark.parametrize("path", ["cluster", "cluster4"])
def test_one_hidden_layer_head_traced(path):
    """One head with one hidden layer, traced, on 2 and 4 blocks: the block barrier after its forward, the energy
    after the backward's exchange, read by the trace; the peers' next forward stores into the same H only after
    the trace's closing exchange (the emulation's cluster-order check reports it otherwise). Per step: the
    backward's exchange and the trace's two (settle, end), each one mbarrier phase per block; one block barrier, the
    update's (the hidden layer's forward and backward run in one pass: WarpEngine::forward_backward)."""
    prior = lebm_prior("gelu", torch.float64, in_dim=20, hidden=37, depth=1, scale=1.0)
    steps = 3
    sch = H.LangevinSchedule.lebm(steps=steps, step_size=0.3)
    y0 = torch.randn(3, 20, dtype=torch.float64)
    noise = torch.randn(steps, 3, 20, dtype=torch.float64)
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", trace=True)
    out, te, st = emulate(prior, y0, sch, path, noise=noise, tile=3, trace=True)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9)
    cs = st["cluster"]
    assert st["cluster_barriers"] == 2 and (st["mbarrier_phases"] / cs - 2) / steps == 3, st
    assert (st["block_barriers"] / cs - 1) / steps == 1, st
