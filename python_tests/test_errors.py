"""Bad input gets a clear error that names the argument."""
import math

import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling import program as P


@pytest.fixture
def setup():
    head = H.EnergyMLP(6, 8, 1)
    prior = H.LatentEBMPrior([4, 2], [(head, "all")])
    return prior, H.LangevinSchedule.lebm(steps=3), torch.randn(5, 6)


def test_dims_that_do_not_match(setup):
    prior, sch, _ = setup
    with pytest.raises(ValueError, match=r"y0 must be \[B, 6\]"):
        H.sample_prior(prior, torch.randn(5, 7), sch)
    with pytest.raises(ValueError, match=r"heads\[0\] takes 6 inputs but its slice \(0\) has 4"):
        H.LatentEBMPrior([4, 2], [(H.EnergyMLP(6, 8, 1), 0)])
    with pytest.raises(ValueError, match=r"heads\[0\]\[1\] must be a layer index"):
        H.LatentEBMPrior([4, 2], [(H.EnergyMLP(4, 8, 1), 2)])
    with pytest.raises(ValueError, match="dims"):
        H.LatentEBMPrior([4, 0], [])


def test_mixed_dtypes_and_devices(setup):
    prior, sch, y0 = setup
    with pytest.raises(TypeError, match="y0 is torch.float64 but the prior's parameters are torch.float32"):
        H.sample_prior(prior, y0.double(), sch)
    with pytest.raises(ValueError, match="y0 is on meta but the prior's parameters are on cpu"):
        H.sample_prior(prior, torch.empty(5, 6, device="meta"), sch)
    with pytest.raises(ValueError, match="cond must have y0's dtype"):
        H.sample_prior(prior, y0, sch, cond=y0.double())
    with pytest.raises(ValueError, match="noise must have y0's dtype"):
        H.sample_prior(prior, y0, sch, noise=torch.randn(3, 5, 6, dtype=torch.float64))


def test_nan_in_y0(setup):
    prior, sch, y0 = setup
    y0[2, 3] = math.nan
    y0[4, 0] = math.inf
    with pytest.raises(ValueError, match="y0 has NaN or inf values in 2 of 5 chains"):
        H.sample_prior(prior, y0, sch)


def test_schedule_of_the_wrong_length(setup):
    prior, sch, y0 = setup
    with pytest.raises(ValueError, match=r"noise must be \[S, B, D\] = \[3, 5, 6\]"):
        H.sample_prior(prior, y0, sch, noise=torch.randn(4, 5, 6))
    timed = H.LatentEBMPrior([6], [(H.EnergyMLP(6, 8, 1, time_steps=2), 0)])
    with pytest.raises(ValueError, match=r"schedule has T=3 timesteps but heads\[0\] is conditioned on only 2"):
        H.sample_prior(timed, y0, H.LangevinSchedule.recovery_likelihood(3, 2, 1e-3))
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 3\)"):
        H.sample_prior(H.LatentEBMPrior([6], []), y0, H.LangevinSchedule.recovery_likelihood(3, 2, 1e-3),
                       timesteps=torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="was built for a base of std 1.0"):
        H.sample_prior(H.LatentEBMPrior([6], [], sigma=2.0), y0, sch)
    with pytest.raises(TypeError, match="schedule must be a hebm_ext.LangevinSchedule"):
        H.sample_prior(prior, y0, [60, 0.4])


def test_unsupported_module_in_a_head(setup):
    _, sch, y0 = setup
    with pytest.raises(TypeError, match=r"heads\[0\]\[0\] must be an nn.Module"):
        H.LatentEBMPrior([6], [("mlp", 0)])
    odd = H.LatentEBMPrior([6], [(torch.nn.Sequential(torch.nn.Linear(6, 1), torch.nn.Flatten(0)), 0)])
    with pytest.raises(ValueError, match=r"heads\[0\] is a Sequential; the fused kernels run hebm_ext.EnergyMLP"):
        H.sample_prior(odd, y0, sch, backend="fused")
    out = H.sample_prior(odd, y0, sch, backend="reference")  # the reference runs any module
    assert out.shape == y0.shape
    with pytest.raises(ValueError, match="backend must be one of"):
        H.sample_prior(odd, y0, sch, backend="cuda")


def test_energy_mlp_arguments():
    with pytest.raises(ValueError, match="activation must be one of"):
        H.EnergyMLP(4, 8, 1, activation="relu")
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        H.EnergyMLP(4, 0, 1)
    with pytest.raises(ValueError, match="t is required"):
        H.EnergyMLP(4, 8, 1, time_steps=3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"z must be \[B, 4\]"):
        H.EnergyMLP(4, 8, 1)(torch.randn(2, 5))


def test_op_rejects_bad_programs():
    prior = H.LatentEBMPrior([6], [(H.EnergyMLP(6, 8, 1), 0)])
    params, program = P.build_program(prior, torch.float32, "cpu")
    y0, e, rng = torch.randn(3, 6), torch.empty(0), torch.tensor([1, 0])
    sch = H.LangevinSchedule.lebm(steps=2)
    args = (sch.coefficients(), list(sch.K), torch.empty(0, dtype=torch.long), e, rng, False)
    with pytest.raises(RuntimeError, match="program: not a hebm latent program"):
        torch.ops.hebm.latent_langevin(y0, e, params, [0] + program[1:], *args)
    with pytest.raises(RuntimeError, match="weight out of the parameter buffer"):
        torch.ops.hebm.latent_langevin(y0, e, params[:10], program, *args)
    with pytest.raises(RuntimeError, match="y0 has 7 latent dims per chain, the program expects 6"):
        torch.ops.hebm.latent_langevin(torch.randn(3, 7), e, params, program, *args)
    with pytest.raises(RuntimeError, match=r"rng must be an int64 tensor \[seed, offset\]"):
        torch.ops.hebm.latent_langevin(y0, e, params, program, *args[:4], torch.tensor([1.0]), False)
    with pytest.raises(RuntimeError, match=r"timesteps\[1\] = 5 is outside \[0, 1\)"):
        torch.ops.hebm.latent_langevin(y0, e, params, program, args[0], args[1], torch.tensor([0, 5, 0]), e, rng, False)
