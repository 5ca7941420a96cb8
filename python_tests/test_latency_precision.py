"""precision='tf32' / 'bf16' on the latency paths (csrc/core/warp_linear.h WarpEngine: the one-block resident
program, the 2- and 4-block clusters) through the emulation: the operands rounded as the eager reference's
matmuls round them (reference.py _ReducedPrecisionMatmuls: the forward's inputs and weights, the backward's
incoming gradient and weights; fp32 sums), the bf16 weights resident as packed k-pairs (WarpEngine::load, half the
bytes), the plan (small B at reduced precision takes a latency path) and the bf16 step's shared-memory wavefronts.
The throughput path's tests (test_throughput_mma.py) give the helpers: its emulate and the accuracy rule."""
import copy

import pytest
import torch

import hebm_ext as H
from hebm_ext import _C
from hebm_ext.sampling import program as P
from hebm_ext.sampling.reference import round_to
from helpers import lebm_prior, sharpen
from test_cuda_emulation import STAT
from test_throughput_mma import _linears, _program, accuracy_rule, emulate

RESIDENT, CLUSTER, STREAMED, THROUGHPUT = 1, 2, 3, 4
CLUSTER_OF = {"resident": 1, "cluster": 2, "cluster4": 4}


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("name, path, tile", [("lebm", "cluster4", 4), ("lebm", "cluster", 2),
                                              ("lebm", "resident", 2), ("odd", "resident", 3),
                                              ("wide", "cluster4", 1), ("wide", "cluster4", 4),
                                              ("odd", "resident", 4),
                                              ("joint_u", "cluster4", 2), ("diffusion_per_chain", "cluster", 3)])
def test_accuracy_rule_on_the_latency_paths(name, path, tile, precision):
    """The throughput path's accuracy rule (error vs float64 <= 2x eager-at-precision's, and well above the fp32
    kernel's) on the one-block resident program, the 2- and 4-block cluster: LEBM 100-200-200-1, odd widths
    (37 inputs: an odd last k-pair; 45 rows), 300 inputs (two passes: 256 inputs in 16-byte bf16 chunks, 44 in
    8-byte ones) and 140 (one pass of 16-byte chunks on 18 lanes), the u-ladder joint prior and time heads with
    per-chain timesteps and a condition; 8 chains (partial tiles of 3). Tiles of 4 chains take the bf16 forward on
    the tensor cores (WarpEngine::forward_rows_mma: LEBM, 300 inputs in two passes, 37 inputs), smaller tiles
    the lane-chunk rows."""
    st = accuracy_rule(name, precision, chains=8, path=path, tile=tile, threads=128)
    st = dict(zip(STAT, st))
    assert (st["path"], st["tile"], st["cluster"]) == (CLUSTER if "cluster" in path else RESIDENT, tile,
                                                       CLUSTER_OF[path])


def _exact_head():
    """LEBM-shaped (100-200-200-1, LReLU slope 1/4) with w_out exact in bf16: the delta dh * w_out the kernel
    forms (fp32, as on the throughput path) is then the reference's rounded -alpha w_out times act' exactly."""
    torch.manual_seed(11)
    head = sharpen(H.EnergyMLP(100, 200, 2, activation="lrelu", slope=0.25), 3.0)
    out = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert out.out_features == 1
    with torch.no_grad():
        out.weight.copy_(round_to(out.weight, "bf16"))
    return H.LatentEBMPrior([100], [(head, 0)])


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("path, tile", [("resident", 2), ("cluster4", 4)])
def test_rounding_matches_eager_at_precision(path, tile, precision):
    """Two steps from the same chains: the kernel rounds exactly the operands the eager reference rounds (every
    linear's input and weights, the gradient flowing into each linear's output), so it matches eager at the same
    precision to fp32 summation order (mean 1e-5 of what the energy moves the chains by), while fp32 eager is a
    format's rounding away (tf32 2^-11, bf16 2^-8 relative): a kernel that skipped one of the roundings (e.g. the
    backward's incoming gradient) lands in between."""
    prior = _exact_head()
    sch = H.LangevinSchedule.lebm(steps=2, step_size=1.0)
    torch.manual_seed(3)
    y0 = torch.randn(8, 100)
    noise = torch.zeros(2, 8, 100)
    flat = H.sample_prior(H.LatentEBMPrior([100], []), y0, sch, noise=noise, backend="reference")
    eager = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", precision=precision)
    fp32 = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _ = emulate(prior, y0, sch, precision, noise=noise, path=path, tile=tile, threads=128)
    scale = (eager - flat).abs().mean().item()  # what the energy's gradient moves the chains by
    d_eager = (out - eager).abs().mean().item() / scale
    d_fp32 = (fp32 - eager).abs().mean().item() / scale
    print(f"{path} {precision}: kernel - eager {d_eager:.2e}, fp32 - eager {d_fp32:.2e} (relative)")
    assert d_eager < 1e-5, (d_eager, d_fp32)
    assert d_fp32 > 3e-5 * (8 if precision == "bf16" else 1), (d_eager, d_fp32)


@pytest.mark.parametrize("path, tile", [("resident", 2), ("cluster4", 4)])
def test_bf16_weights_rounded_once_at_load(path, tile):
    """The resident bf16 weights are the fp32 weights rounded once (WarpEngine::load, pack_bf16x2): the same chains
    bit for bit when every resident linear's weights are rounded to bf16 beforehand (the head's output row is read
    in fp32, as on the throughput path)."""
    p64, sch, D, _, _ = _program("odd")
    p32 = copy.deepcopy(p64).float()
    torch.manual_seed(7)
    y0 = torch.randn(6, D)
    noise = torch.randn(sch.total_steps, 6, D)
    params, program = P.build_program(p32, torch.float32, "cpu")
    out, _ = emulate(p32, y0, sch, "bf16", noise=noise, built=(params, program), path=path, tile=tile, threads=64)
    rounded = params.clone()
    for i, o, w in _linears(program)[:-1]:  # every linear but the head's output row
        rounded[w:w + o * i] = round_to(params[w:w + o * i], "bf16")
    assert not torch.equal(rounded, params)
    again, _ = emulate(p32, y0, sch, "bf16", noise=noise, built=(rounded, program), path=path, tile=tile,
                       threads=64)
    assert torch.equal(out, again)


def test_lebm_plan_at_reduced_precision():
    """LEBM 100-200-200-1 on an H200 at tf32 / bf16: B = 100 takes the latency path fp32 takes (the 4-block
    cluster, 4 chains per cluster: bf16's 121 KB of weights would fit one block, but the planner's step model
    prefers a quarter of them per block); large B the tensor-core throughput path; a program too big for one
    block and for a 4-block cluster at bf16 takes the throughput path at small B (the streamed path is fp32 only)
    and says that 16 chains do not fit; a forced streamed path names the precision."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    fp32 = _C.latent_plan(program, params.numel(), 100, 4, [])[0]
    assert fp32[:3] == [CLUSTER, 4, 4]
    for prec in (1, 2):
        (path, tile, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 100, 4, [], prec)
        assert (path, tile, cluster, threads, tiles) == (CLUSTER, 4, 4, 256, 25) and why == ""
        assert smem <= 232448 and (smem < fp32[4]) == (prec == 2)  # bf16: half the weights' bytes
        (path, tile, _, _, _, tiles), _ = _C.latent_plan(program, params.numel(), 65536, 4, [], prec)
        assert (path, tile, tiles) == (THROUGHPUT, 32, 2048)
    big = lebm_prior("lrelu", torch.float32, in_dim=100, hidden=1200, depth=2)
    pb, gb = P.build_program(big, torch.float32, "cpu")
    assert _C.latent_plan(gb, pb.numel(), 100, 4, [])[0][0] == STREAMED  # fp32
    with pytest.raises(RuntimeError, match="precision='bf16' .* not even 16 chains of this program fit"):
        _C.latent_plan(gb, pb.numel(), 100, 4, [], 2)
    sch = H.LangevinSchedule.lebm(steps=1)
    y0 = torch.randn(4, 100)
    with pytest.raises(RuntimeError, match="precision='bf16' runs on the throughput, resident and cluster paths; "
                                           "the streamed path is fp32 only"):
        emulate(prior, y0, sch, "bf16", noise=torch.randn(1, 4, 100), path="streamed", tile=1)


@pytest.mark.parametrize("precision, wavefronts, conflicted",
                         [("fp32", 2078, 0), ("tf32", 2078, 0), ("bf16", 1527, 52)])
def test_lebm_4_block_step_wavefronts(precision, wavefronts, conflicted):
    """Shared-memory wavefronts per block-step of LEBM on the 4-block cluster, 4 chains, 256 threads, untraced (the
    harness of test_cuda_cluster4.py's 2,078 fp32 figure: one step more minus one less): tf32 the same (fp32
    storage; the last hidden layer's forward and backward in one pass as at fp32), bf16 fewer (each weight row half
    the bytes, the forward on the tensor cores, the last hidden layer not fused: WarpEngine::forward_rows_mma,
    docs/CUDA_KERNELS.md, "Reduced precision on the latency paths"); no conflicts at fp32 and tf32; bf16's are its
    forward-1 B fragments (the chains' y at a row stride of 100 words: two chains' 8-byte pairs share banks, 2-way)
    and its last forward-2 k-step's clamped input pairs."""
    prior = lebm_prior("lrelu", torch.float32)
    torch.manual_seed(4)
    y0 = torch.randn(4, 100)
    noise = torch.randn(3, 4, 100)
    st = [dict(zip(STAT, emulate(prior, y0, H.LangevinSchedule.lebm(steps=s), precision, noise=noise[3 - s:],
                                 path="cluster4", tile=4, threads=256, banks=True)[1])) for s in (2, 3)]
    assert (st[1]["path"], st[1]["cluster"]) == (CLUSTER, 4)
    assert (st[1]["conflicted"] - st[0]["conflicted"]) / 4 == conflicted, st
    assert (st[1]["wavefronts"] - st[0]["wavefronts"]) / 4 == wavefronts, st
