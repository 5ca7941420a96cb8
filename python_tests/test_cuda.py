"""The CUDA fused sampler (skipped without a GPU): against the eager reference with explicit noise, against the CPU
kernel with the same seed, opcheck, CUDA graphs, no host synchronisation, large widths."""
import functools

import pytest
import torch

import hebm_ext as H
from conftest import cuda_ready, requires_cuda
from hebm_ext.sampling import program as P
from helpers import lebm_prior, multi_head_prior

pytestmark = [pytest.mark.cuda, requires_cuda]
TOL32 = 1e-4


@pytest.fixture(autouse=True)
def _check_build():
    assert cuda_ready()


def to_cuda(prior):
    return prior.float().cuda()


@pytest.mark.parametrize("activation", H.nn.ACTIVATIONS)
def test_cuda_equals_reference_lebm(activation):
    prior = to_cuda(lebm_prior(activation, torch.float32))
    sch = H.LangevinSchedule.lebm(steps=60, step_size=0.4)
    y0 = torch.randn(100, 100, device="cuda")
    noise = torch.randn(60, 100, 100, device="cuda")
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out = H.sample_prior(prior, y0, sch, noise=noise, backend="fused")
    assert (out - ref).abs().max().item() < TOL32


def test_cuda_equals_reference_heads_time_per_chain():
    prior = to_cuda(multi_head_prior(torch.float32, time_steps=3, out_scale=0.05))
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=[5, 7, 6], b_square=1e-3)
    y0 = torch.randn(77, 48, device="cuda")
    noise = torch.randn(18, 77, 48, device="cuda")
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", trace=True)
    out, tf = H.sample_prior(prior, y0, sch, noise=noise, backend="fused", trace=True)
    assert (out - ref).abs().max().item() < TOL32
    torch.testing.assert_close(tf["per_chain"], tr["per_chain"], rtol=1e-4, atol=1e-4)
    t = torch.randint(0, 3, (77,), device="cuda")
    ref = H.sample_prior(prior, y0, sch, noise=noise[:7], cond=y0, timesteps=t, backend="reference")
    out = H.sample_prior(prior, y0, sch, noise=noise[:7], cond=y0, timesteps=t, backend="fused")
    assert (out - ref).abs().max().item() < TOL32


@pytest.mark.parametrize("B", [1, 100, 1000])
def test_cuda_equals_cpu_same_seed(B):
    prior_cpu = multi_head_prior(torch.float32, time_steps=3, out_scale=0.05)
    prior_gpu = to_cuda(multi_head_prior(torch.float32, time_steps=3, out_scale=0.05))
    prior_gpu.load_state_dict(prior_cpu.state_dict())
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=10, b_square=1e-3)
    y0 = torch.randn(B, 48)
    cpu = H.sample_prior(prior_cpu, y0, sch, seed=99, backend="fused")
    gpu = H.sample_prior(prior_gpu, y0.cuda(), sch, seed=99, backend="fused")
    assert (gpu.cpu() - cpu).abs().max().item() < TOL32


def test_cuda_wide_layers():
    """Hidden width 1024 and latent dim 512 (the sizes the kernel must take)."""
    head = H.EnergyMLP(512, 1024, 2, "gelu")
    prior_cpu = H.LatentEBMPrior([512], [(head, 0)])
    prior_gpu = to_cuda(H.LatentEBMPrior([512], [(H.EnergyMLP(512, 1024, 2, "gelu"), 0)]))
    prior_gpu.load_state_dict(prior_cpu.state_dict())
    sch = H.LangevinSchedule.lebm(steps=10)
    y0 = torch.randn(40, 512)
    cpu = H.sample_prior(prior_cpu, y0, sch, seed=3, backend="fused")
    gpu = H.sample_prior(prior_gpu, y0.cuda(), sch, seed=3, backend="fused")
    assert (gpu.cpu() - cpu).abs().max().item() < TOL32


def test_cuda_opcheck():
    from test_op_registration import _samples

    for args in _samples("cuda"):
        if args[0].dtype == torch.float32:
            torch.library.opcheck(torch.ops.hebm.latent_langevin.default, args)


def test_cuda_float64_is_refused_clearly():
    prior = lebm_prior("lrelu", torch.float64, in_dim=8, hidden=8).cuda()
    with pytest.raises(ValueError, match="CUDA kernel runs float32 only"):
        H.sample_prior(prior, torch.randn(3, 8, dtype=torch.float64, device="cuda"), H.LangevinSchedule.lebm(2),
                       backend="fused")


def _raw_call(prior, y0, sch, rng):
    params, program = P.build_program(prior, y0.dtype, y0.device)
    e = y0.new_empty(0)
    return torch.ops.hebm.latent_langevin(y0, e, params, program, sch.coefficients(), list(sch.K),
                                          torch.empty(0, dtype=torch.int64, device="cuda"), e, rng, False)[0]


def test_cuda_no_host_sync_and_graph_capture():
    prior = to_cuda(lebm_prior("lrelu", torch.float32, in_dim=20, hidden=32))
    sch = H.LangevinSchedule.lebm(steps=20)
    y0 = torch.randn(64, 20, device="cuda")
    rng = torch.tensor([5, 0], dtype=torch.int64, device="cuda")
    _raw_call(prior, y0, sch, rng)  # warm up (function attributes)
    torch.cuda.set_sync_debug_mode("error")
    try:
        eager = _raw_call(prior, y0, sch, rng)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        _raw_call(prior, y0, sch, rng)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        out = _raw_call(prior, y0, sch, rng)
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    rng.copy_(torch.tensor([6, 0]))  # the seed is read on the device at replay
    g.replay()
    torch.cuda.synchronize()
    assert (out - eager).abs().max() > 0.1


def test_cuda_statistics():
    """The CUDA kernel's own noise: long chains on a 2-D energy against the grid density."""
    from helpers import sharpen
    from test_latent_statistics import grid_bin_probabilities, histogram

    torch.manual_seed(0)
    head = sharpen(H.EnergyMLP(2, 32, 2, activation="tanh"), 3.0)
    prior = H.LatentEBMPrior([2], [(head, 0)], sigma=1.5)
    p_grid = grid_bin_probabilities(prior.double())
    prior = prior.float().cuda()
    sch = H.LangevinSchedule.lebm(steps=1500, step_size=0.12, sigma=1.5)
    y = H.sample_prior(prior, torch.randn(20000, 2, device="cuda") * 1.5, sch, seed=7, backend="fused")
    tv = 0.5 * (histogram(y.double().cpu()) - p_grid).abs().sum().item()
    assert tv < 0.05


@pytest.mark.parametrize("param", ["z", "u"])
def test_cuda_ladder_equals_reference_and_cpu(param):
    from helpers import deep_ladder_prior, joint_prior

    prior = to_cuda(joint_prior(param, torch.float32))
    sch = H.LangevinSchedule.lebm(steps=60, step_size=0.4)
    y0 = torch.randn(100, 228, device="cuda")
    noise = torch.randn(60, 100, 228, device="cuda")
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out = H.sample_prior(prior, y0, sch, noise=noise, backend="fused")
    assert (out - ref).abs().max().item() < TOL32
    cpu_prior = deep_ladder_prior(param, torch.float32, time_steps=3, out_scale=0.05)
    gpu_prior = to_cuda(deep_ladder_prior(param, torch.float32, time_steps=3, out_scale=0.05))
    gpu_prior.load_state_dict(cpu_prior.state_dict())
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=10, b_square=1e-3)
    y0 = torch.randn(64, 36)
    cpu = H.sample_prior(cpu_prior, y0, sch, seed=5, backend="fused")
    gpu = H.sample_prior(gpu_prior, y0.cuda(), sch, seed=5, backend="fused")
    assert (gpu.cpu() - cpu).abs().max().item() < TOL32


def test_cuda_sample_prior_has_no_host_sync_and_captures():
    """The CUDA host path: no synchronisation (sync debug mode 'error'), capturable in a CUDA graph, the data
    checks on the device (input_status), the non-finite count into a status tensor (check_finite=<tensor>; the
    default check_finite=True reads it once at the end of a call) and the v2 path for LEBM on sm_90."""
    from hebm_ext.sampling import fused

    status = torch.zeros((), dtype=torch.int64, device="cuda")

    prior = to_cuda(lebm_prior("lrelu", torch.float32))
    sch = H.LangevinSchedule.lebm(steps=20, step_size=0.4)
    y0 = torch.randn(100, 100, device="cuda")
    H.sample_prior(prior, y0, sch, seed=1, backend="fused")  # warm-up: the packed program is cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = H.sample_prior(prior, y0, sch, seed=1, backend="fused", check_finite=status)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert int(fused.input_status().sum()) == 0 and int(status) == 0
    bad = y0.clone()
    bad[3, 4] = float("nan")
    H.sample_prior(prior, bad, sch, seed=1, backend="fused")
    with pytest.raises(ValueError, match="NaN or inf values in 1 of 100 chains"):
        fused.raise_for_input_status()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g):
            yg = H.sample_prior(prior, y0, sch, seed=1, backend="fused", check_finite=status)
    g.replay()
    torch.cuda.synchronize()
    assert (yg - y).abs().max().item() < 1e-5


@pytest.mark.parametrize("model", ["lebm", "ladder"])
def test_cuda_equals_its_emulation(model):
    """The GPU runs the same path the emulation runs for this device (the planner is shared), with the same
    Philox noise: the results agree to float32 rounding (test_cuda_emulation.py holds the emulation against the
    eager reference)."""
    from helpers import deep_ladder_prior
    from test_cuda_emulation import emulate

    if model == "lebm":
        prior = lebm_prior("gelu", torch.float32)
        y0 = torch.randn(6, 100)
    else:
        prior = deep_ladder_prior("u", torch.float32, time_steps=3, out_scale=0.05)
        y0 = torch.randn(6, 36)
    sch = H.LangevinSchedule.lebm(steps=10, step_size=0.3)
    p = torch.cuda.get_device_properties(0)
    smem = torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    emu, _, st = emulate(prior, y0, sch, "auto", seed=5, threads=256, device=[p.multi_processor_count, smem, p.major])
    gpu = H.sample_prior(to_cuda(prior), y0.cuda(), sch, seed=5, backend="fused")
    assert (gpu.cpu() - emu).abs().max().item() < TOL32, st


@functools.lru_cache(maxsize=None)
def _precision_case(B, prec):
    """(prior, y0, schedule, the emulation's chains and stats at `prec` for this device): LEBM with sharpened
    weights (the energy moves the chains by ~0.2 mean), 10 steps, seed 5."""
    from test_cuda_emulation import STAT
    from test_throughput_mma import emulate as emulate_at

    torch.manual_seed(0)
    prior = lebm_prior("lrelu", torch.float32, scale=4.0)
    y0 = torch.randn(B, 100)
    sch = H.LangevinSchedule.lebm(steps=10, step_size=0.3)
    p = torch.cuda.get_device_properties(0)
    dev = [p.multi_processor_count, p.shared_memory_per_block_optin, p.major]
    out, st = emulate_at(prior, y0, sch, prec, seed=5, path="auto", threads=256, tile=0, device=dev)
    return prior, y0, sch, out, dict(zip(STAT, st))


@pytest.mark.parametrize("B", [100, 600])
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_cuda_reduced_precision_equals_its_emulation(precision, B):
    """The tensor-core paths on the GPU against their lane-by-lane emulation (the same plan for this device, the
    same Philox noise): B = 100 the 4-block cluster with 4 chains a block (bf16: its forward on mma.sync m16n8k16),
    B = 600 the throughput path (the mma GEMMs, bf16's packed k-pair panels). The emulation follows the PTX ISA's
    fragment layouts; a layout the hardware reads otherwise moves the chains by about the energy's whole effect
    (~0.2 mean here). The hardware's summation order inside an mma is its own, so the bound is a fraction of what
    the precision itself moves the chains (reduced against fp32, both emulated)."""
    prior, y0, sch, emu, st = _precision_case(B, precision)
    emu32 = _precision_case(B, "fp32")[3]
    gpu = H.sample_prior(to_cuda(prior), y0.cuda(), sch, seed=5, backend="fused", precision=precision).cpu()
    d, shift = (gpu - emu).abs(), (emu - emu32).abs()
    assert shift.mean() > 1e-4, (precision, B, st)  # the precision matters for these chains
    assert d.max() < 2e-3 and d.mean() < 0.05 * shift.mean(), (precision, B, d.max().item(), d.mean().item(),
                                                                 shift.mean().item(), st)
