"""The fused CPU sampler against the eager reference, with the same explicit noise (issue: fused latent sampler)."""
import math

import pytest
import torch

import hebm_ext as H
from conftest import cpu_capabilities
from helpers import TOL, lebm_prior, multi_head_prior, run_both


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", H.nn.ACTIVATIONS)
def test_lebm_fused_equals_reference(activation, dtype):
    """LEBM 100 -> 200 -> 200 -> 1, K = 60, s = 0.4 (ALGORITHMS.md 1.2)."""
    prior = lebm_prior(activation, dtype)
    schedule = H.LangevinSchedule.lebm(steps=60, step_size=0.4)
    y0 = torch.randn(37, 100, dtype=dtype)
    ref, fused, noise = run_both(prior, y0, schedule)
    assert (ref - fused).abs().max().item() < TOL[dtype]
    # the energy matters: without it the chains end far away (so the comparison above can fail)
    flat = H.LatentEBMPrior([100], [])
    free = H.sample_prior(flat, y0, schedule, noise=noise, backend="fused")
    assert (free - ref).abs().max().item() > 0.1


@pytest.mark.parametrize("cap", cpu_capabilities())
@pytest.mark.parametrize("B", [1, 8, 13, 70])
def test_every_instruction_set_and_tile_remainder(cap, B, monkeypatch):
    monkeypatch.setenv("HEBM_CPU_CAPABILITY", cap)
    assert H.ops.cpu_capability() == cap
    for dtype in (torch.float64, torch.float32):
        prior = lebm_prior("gelu", dtype, in_dim=20, hidden=45, depth=2)
        schedule = H.LangevinSchedule.lebm(steps=15, step_size=0.4)
        ref, fused, _ = run_both(prior, torch.randn(B, 20, dtype=dtype), schedule)
        assert (ref - fused).abs().max().item() < TOL[dtype], (cap, B, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_several_heads(dtype):
    """Per-layer heads, an "all" head and a linear head over three layers (LEBM schedule)."""
    prior = multi_head_prior(dtype)
    schedule = H.LangevinSchedule.lebm(steps=30, step_size=0.3)
    ref, fused, _ = run_both(prior, torch.randn(21, 48, dtype=dtype), schedule)
    assert (ref - fused).abs().max().item() < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_time_conditioned_recovery_likelihood(dtype):
    """Time-conditioned heads under a T = 3 recovery-likelihood schedule (ALGORITHMS.md 6.3, 6.7)."""
    prior = multi_head_prior(dtype, time_steps=3, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(3, steps=12, b_square=1e-3)
    y0 = torch.randn(19, 48, dtype=dtype)
    ref, fused, _ = run_both(prior, y0, schedule)
    assert (ref - fused).abs().max().item() < TOL[dtype]
    assert ref.abs().max() < 20  # a sane regime, where float32 rounding is small
    # different timesteps do different things: the time bias is used
    with torch.no_grad():
        e = [prior.energy(y0, torch.full((19,), t)) for t in range(3)]
    assert (e[0] - e[2]).abs().max() > 1e-4


def test_gao_form_and_cond():
    prior = multi_head_prior(torch.float64, time_steps=4, sigma=math.inf, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(4, steps=[5, 6, 7, 8], b_square=1e-3, form="gao")
    y0 = torch.randn(9, 48, dtype=torch.float64)
    ref, fused, _ = run_both(prior, y0, schedule, cond=torch.randn_like(y0))
    assert (ref - fused).abs().max().item() < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_chain_timesteps(dtype):
    """Recovery-likelihood training: chain b runs only timestep t_b, conditioned on cond (ALGORITHMS.md 6.6)."""
    prior = multi_head_prior(dtype, time_steps=3, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(3, steps=[4, 9, 6], b_square=1e-3)
    y0 = torch.randn(23, 48, dtype=dtype)
    t = torch.randint(0, 3, (23,))
    ref, fused, _ = run_both(prior, y0, schedule, cond=y0.clone(), timesteps=t)
    assert (ref - fused).abs().max().item() < TOL[dtype]


def test_trace_matches_reference():
    prior = multi_head_prior(torch.float64, time_steps=3)
    schedule = H.LangevinSchedule.recovery_likelihood(3, steps=5, b_square=1e-3)
    y0 = torch.randn(6, 48, dtype=torch.float64)
    noise = torch.randn(15, 6, 48, dtype=torch.float64)
    _, tr = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference", trace=True)
    _, tf = H.sample_prior(prior, y0, schedule, noise=noise, backend="fused", trace=True)
    assert tf["energy"].shape == (15,) and tf["per_chain"].shape == (15, 6, 2)
    torch.testing.assert_close(tf["per_chain"], tr["per_chain"], rtol=1e-9, atol=1e-9)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    _, tr = H.sample_prior(prior, y0, schedule, noise=noise[:5], backend="reference", trace=True, timesteps=t, cond=y0)
    _, tf = H.sample_prior(prior, y0, schedule, noise=noise[:5], backend="fused", trace=True, timesteps=t, cond=y0)
    torch.testing.assert_close(tf["per_chain"], tr["per_chain"], rtol=1e-9, atol=1e-9, equal_nan=True)


def test_seeds_and_generators():
    prior = lebm_prior("lrelu", torch.float32, in_dim=10, hidden=16)
    schedule = H.LangevinSchedule.lebm(steps=10)
    y0 = torch.randn(5, 10)
    torch.manual_seed(3)
    a = H.sample_prior(prior, y0, schedule, backend="fused")
    torch.manual_seed(3)
    b = H.sample_prior(prior, y0, schedule, backend="fused")
    c = H.sample_prior(prior, y0, schedule, backend="fused")
    assert torch.equal(a, b) and not torch.equal(b, c)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(H.sample_prior(prior, y0, schedule, generator=g1), H.sample_prior(prior, y0, schedule, generator=g2))
    assert torch.equal(H.sample_prior(prior, y0, schedule, seed=11), H.sample_prior(prior, y0, schedule, seed=11))
    assert not torch.equal(H.sample_prior(prior, y0, schedule, seed=11), H.sample_prior(prior, y0, schedule, seed=12))


def test_rebuilds_after_optimizer_step():
    """The packed program is cached and rebuilt when the parameters change in place."""
    prior = lebm_prior("silu", torch.float64, in_dim=12, hidden=16)
    schedule = H.LangevinSchedule.lebm(steps=10)
    y0 = torch.randn(4, 12, dtype=torch.float64)
    ref, fused, noise = run_both(prior, y0, schedule)
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    prior.energy(torch.randn(8, 12, dtype=torch.float64)).sum().backward()
    opt.step()
    ref2 = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
    fused2 = H.sample_prior(prior, y0, schedule, noise=noise, backend="fused")
    assert (ref2 - fused2).abs().max() < 1e-10 and (fused2 - fused).abs().max() > 1e-6


def test_spectral_norm_heads():
    head = H.EnergyMLP(10, 16, 2, spectral_norm=True).double().eval()
    prior = H.LatentEBMPrior([10], [(head, 0)])
    ref, fused, _ = run_both(prior, torch.randn(7, 10, dtype=torch.float64), H.LangevinSchedule.lebm(steps=10))
    assert (ref - fused).abs().max() < 1e-10


def test_auto_backend_and_warnings():
    prior = lebm_prior("lrelu", torch.float32, in_dim=8, hidden=8)
    y0 = torch.randn(3, 8)
    H.sample_prior(prior, y0, H.LangevinSchedule.lebm(steps=2))  # fused: no warning
    odd = H.LatentEBMPrior([8], [(torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.Flatten(0)), 0)])
    with pytest.warns(UserWarning, match=r"heads\[0\] is a Sequential"):
        H.sample_prior(odd, y0, H.LangevinSchedule.lebm(steps=2))


def test_lebm_papers_loop_equals_reference():
    """reference.lebm_prior_loop (the LEBM code's loop, the benchmarks' leanest baseline) is the same sampler."""
    from hebm_ext.sampling.reference import lebm_prior_loop

    prior = lebm_prior("gelu", torch.float64, in_dim=30, hidden=40)
    schedule = H.LangevinSchedule.lebm(steps=20, step_size=0.4)
    y0 = torch.randn(9, 30, dtype=torch.float64)
    ref, fused, noise = run_both(prior, y0, schedule)
    loop = lebm_prior_loop(prior.heads[0], y0, 20, 0.4, noise=noise)
    assert (loop - ref).abs().max() < 1e-12 and (loop - fused).abs().max() < 1e-10
