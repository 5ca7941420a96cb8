"""The CUDA kernel's block program (csrc/core/block_sampler.h) executed on the CPU by a team of real threads with
a barrier (hebm::_latent_langevin_block_emulation). This checks the GPU algorithm's indexing, chunked weight
staging and synchronisation on machines without a GPU; test_cuda.py runs the real kernel where there is one."""
import math

import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling import program as P
from helpers import lebm_prior, multi_head_prior


def emulate(prior, y0, schedule, *, noise=None, cond=None, timesteps=None, seed=None, trace=False,
            threads=48, tile=4, stage_rows=8):
    params, program = P.build_program(prior, y0.dtype, y0.device)
    empty = y0.new_empty(0)
    rng = torch.tensor([seed or 0, 0], dtype=torch.int64)
    ts = timesteps if timesteps is not None else torch.empty(0, dtype=torch.int64)
    return torch.ops.hebm._latent_langevin_block_emulation(
        y0, cond if cond is not None else empty, params, program, schedule.coefficients(), list(schedule.K), ts,
        noise if noise is not None else empty, rng, trace, threads, tile, stage_rows)


@pytest.mark.parametrize("activation", H.nn.ACTIVATIONS)
def test_block_program_equals_reference(activation):
    prior = lebm_prior(activation, torch.float64, in_dim=24, hidden=50, depth=2)
    schedule = H.LangevinSchedule.lebm(steps=12)
    y0 = torch.randn(11, 24, dtype=torch.float64)  # 3 blocks of 4, the last one partial
    noise = torch.randn(12, 11, 24, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
    out, _ = emulate(prior, y0, schedule, noise=noise)
    assert (out - ref).abs().max() < 1e-10


@pytest.mark.parametrize("threads,tile,stage_rows", [(1, 1, 1), (7, 3, 2), (64, 5, 64), (33, 32, 3)])
def test_block_program_team_and_tile_shapes(threads, tile, stage_rows):
    """Any team size, chains per block and staging chunk gives the same chains (the block-stride loops wrap)."""
    prior = multi_head_prior(torch.float64)
    schedule = H.LangevinSchedule.lebm(steps=6, step_size=0.3)
    y0 = torch.randn(9, 48, dtype=torch.float64)
    noise = torch.randn(6, 9, 48, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
    out, _ = emulate(prior, y0, schedule, noise=noise, threads=threads, tile=tile, stage_rows=stage_rows)
    assert (out - ref).abs().max() < 1e-10


def test_block_program_time_conditioned_per_chain_and_trace():
    prior = multi_head_prior(torch.float64, time_steps=3, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(3, steps=[3, 5, 4], b_square=1e-3)
    y0 = torch.randn(7, 48, dtype=torch.float64)
    noise = torch.randn(12, 7, 48, dtype=torch.float64)
    ref, tr = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference", trace=True)
    out, te = emulate(prior, y0, schedule, noise=noise, trace=True)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9)
    t = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    ref = H.sample_prior(prior, y0, schedule, noise=noise[:5], backend="reference", timesteps=t, cond=y0 * 0.5)
    out, _ = emulate(prior, y0, schedule, noise=noise[:5], timesteps=t, cond=y0 * 0.5)
    assert (out - ref).abs().max() < 1e-10


def test_block_program_gao_form():
    prior = multi_head_prior(torch.float64, time_steps=4, sigma=math.inf, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(4, steps=3, b_square=1e-3, form="gao")
    y0 = torch.randn(5, 48, dtype=torch.float64)
    noise = torch.randn(12, 5, 48, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
    out, _ = emulate(prior, y0, schedule, noise=noise)
    assert (out - ref).abs().max() < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_block_program_draws_the_cpu_kernels_noise(dtype):
    """Same seed -> same Philox noise in the GPU algorithm and the CPU kernel (csrc/core/philox.h addressing)."""
    prior = multi_head_prior(dtype)
    schedule = H.LangevinSchedule.lebm(steps=8, step_size=0.3)
    y0 = torch.randn(6, 48, dtype=dtype)
    cpu = H.sample_prior(prior, y0, schedule, seed=4242, backend="fused")
    out, _ = emulate(prior, y0, schedule, seed=4242)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert (out - cpu).abs().max() < tol
    other = H.sample_prior(prior, y0, schedule, seed=4243, backend="fused")
    assert (other - cpu).abs().max() > 0.1


@pytest.mark.parametrize("param", ["z", "u"])
def test_block_program_ladder(param):
    """The Gaussian ladder in the GPU algorithm: 4 layers, soft clamp, time-conditioned heads, T = 3."""
    from helpers import deep_ladder_prior

    prior = deep_ladder_prior(param, torch.float64, time_steps=3, out_scale=0.05)
    schedule = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 3, 2], b_square=1e-3)
    y0 = torch.randn(7, 36, dtype=torch.float64)
    noise = torch.randn(7, 7, 36, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
    out, _ = emulate(prior, y0, schedule, noise=noise, threads=40, tile=3, stage_rows=4)
    assert (out - ref).abs().max() < 1e-10
    cpu = H.sample_prior(prior, y0, schedule, seed=77, backend="fused")
    out, _ = emulate(prior, y0, schedule, seed=77)
    assert (out - cpu).abs().max() < 1e-10


def test_block_program_joint_prior_shapes():
    from helpers import joint_prior

    for param in ("z", "u"):
        prior = joint_prior(param, torch.float64)
        schedule = H.LangevinSchedule.lebm(steps=4)
        y0 = torch.randn(5, 228, dtype=torch.float64)
        noise = torch.randn(4, 5, 228, dtype=torch.float64)
        ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference")
        out, _ = emulate(prior, y0, schedule, noise=noise, threads=64, tile=2, stage_rows=16)
        assert (out - ref).abs().max() < 1e-10
