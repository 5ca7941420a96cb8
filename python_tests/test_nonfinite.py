"""No silent NaN: sample_prior (fused and reference) counts the chains that ended non-finite, once at the end of a
call, and raises NonFiniteChainError naming the count and the first step whose energy or gradient was not finite;
a status tensor receives the count instead (the form CUDA graph capture needs)."""
import math

import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling.generic import NonFiniteChainError

BACKENDS = ["fused", "reference"]


def _prior(time_steps=0):
    torch.manual_seed(0)
    head = H.EnergyMLP(4, 8, 2, time_steps=time_steps)
    return H.LatentEBMPrior([4], [(head, 0)]), head


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_weight_raises_at_step_0(backend):
    prior, head = _prior()
    y0 = torch.randn(6, 4)
    sch = H.LangevinSchedule.lebm(10, 0.4)
    assert torch.isfinite(H.sample_prior(prior, y0, sch, backend=backend)).all()
    with torch.no_grad():
        head.linears[0].weight[0, 0] = math.nan
    with pytest.raises(NonFiniteChainError, match=r"6 of 6 chains .* global step 0 \(timestep t=0, step 0 of 10\)"):
        H.sample_prior(prior, y0, sch, backend=backend)
    with pytest.raises(NonFiniteChainError):  # the trace does not turn it off
        H.sample_prior(prior, y0, sch, backend=backend, trace=True)
    # opting out returns the NaN chains
    assert torch.isnan(H.sample_prior(prior, y0, sch, backend=backend, check_finite=False)).any(dim=1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_step_size_raises(backend):
    prior, _ = _prior()
    with pytest.raises(NonFiniteChainError, match="6 of 6 chains ended with non-finite values"):
        H.sample_prior(prior, torch.randn(6, 4), H.LangevinSchedule.lebm(10, 1e6), backend=backend, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_noise_names_the_step_and_the_count(backend):
    prior, _ = _prior()
    noise = torch.randn(10, 6, 4)
    noise[3, 2, 1] = math.nan  # update 3 makes chain 2 NaN: its energy at step 4 is the first non-finite one
    with pytest.raises(NonFiniteChainError,
                       match=r"1 of 6 chains .* global step 4 \(timestep t=0, step 4 of 10\), in 1 "):
        H.sample_prior(prior, torch.randn(6, 4), H.LangevinSchedule.lebm(10, 0.4), noise=noise, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_chain_timesteps(backend):
    prior, _ = _prior(time_steps=3)
    sch = H.LangevinSchedule.recovery_likelihood(3, 5, 1e-3)
    y0 = torch.randn(6, 4)
    noise = torch.randn(sch.max_steps, 6, 4)
    noise[2, 4, 0] = math.nan
    with pytest.raises(NonFiniteChainError, match=r"1 of 6 chains .* step 3 of the chains' own timesteps, in 1 "):
        H.sample_prior(prior, y0, sch, noise=noise, cond=y0, timesteps=torch.tensor([0, 1, 2, 0, 1, 2]),
                       backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_error_path_reruns_the_same_chains(backend, monkeypatch):
    """The step named comes from a re-run with the same noise (the same Philox seed, or the generator's state from
    before the chains): its trace equals the trace of the same call made with trace=True, and the generator ends
    where that call leaves it."""
    from hebm_ext.sampling import fused

    prior, _ = _prior()
    sch = H.LangevinSchedule.lebm(40, 6.0)  # y <- -17 y + ...: overflows float32 after about 30 steps
    y0 = torch.randn(64, 4) * 3
    g = torch.Generator().manual_seed(3)
    y, tr = H.sample_prior(prior, y0, sch, backend=backend, generator=g, trace=True, check_finite=False)
    bad = ~torch.isfinite(tr["per_chain"]).all(dim=2)
    assert not torch.isfinite(y).all() and bad.any(), "the schedule must diverge for this test"
    k = int(torch.nonzero(bad.sum(1)).flatten()[0])
    after = g.get_state()
    seen = []
    real = fused._raise_nonfinite
    monkeypatch.setattr(fused, "_raise_nonfinite", lambda *a: (seen.append(a[-1]), real(*a)))
    g.manual_seed(3)
    with pytest.raises(NonFiniteChainError, match=rf"global step {k} .*, in {int(bad[k].sum())} chains"):
        H.sample_prior(prior, y0, sch, backend=backend, generator=g)
    torch.testing.assert_close(seen[0], tr["per_chain"], rtol=0, atol=0, equal_nan=True)
    if backend == "reference":  # the reference draws from the generator itself; the kernels draw one seed
        assert torch.equal(g.get_state(), after)


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_tensor_receives_the_count(backend):
    prior, _ = _prior()
    noise = torch.randn(10, 6, 4)
    noise[3, 2, 1] = noise[5, 4, 0] = math.nan
    status = torch.full((), -1, dtype=torch.int64)
    y = H.sample_prior(prior, torch.randn(6, 4), H.LangevinSchedule.lebm(10, 0.4), noise=noise, backend=backend,
                       check_finite=status)
    assert int(status) == 2 and int((~torch.isfinite(y)).any(1).sum()) == 2
    H.sample_prior(prior, torch.randn(6, 4), H.LangevinSchedule.lebm(10, 0.4), backend=backend, check_finite=status)
    assert int(status) == 0
    with pytest.raises(ValueError, match="status tensor must be one integer element"):
        H.sample_prior(prior, torch.randn(6, 4), H.LangevinSchedule.lebm(10, 0.4), check_finite=torch.zeros(2))


def test_a_method_with_a_nan_weight_raises():
    m = H.methods.create("lebm", "digits", e_l_steps=5, g_l_steps=3)
    with torch.no_grad():
        m.ebm.linears[-1].weight.fill_(math.nan)
    with pytest.raises(NonFiniteChainError, match="sample_prior: 7 of 7 chains"):
        m.prior_latents(7)


@pytest.mark.skipif(not torch.cuda.is_available() or not H.ops.available()["cuda"], reason="needs a CUDA build + GPU")
def test_cuda_capture_reads_no_host_value():
    prior, head = _prior()
    prior = prior.cuda()
    y0 = torch.randn(64, 4, device="cuda")
    sch = H.LangevinSchedule.lebm(10, 0.4)
    status = torch.zeros((), dtype=torch.int64, device="cuda")
    H.sample_prior(prior, y0, sch, seed=1, check_finite=status)  # warm-up (packs the program)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = H.sample_prior(prior, y0, sch, seed=1, check_finite=status)
    g.replay()
    torch.cuda.synchronize()
    assert int(status) == 0 and torch.isfinite(y).all()
    with pytest.raises(RuntimeError, match="CUDA graph capture forbids"):
        g2 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g2):
            H.sample_prior(prior, y0, sch, seed=1)
    with torch.no_grad():
        head.linears[0].weight[0, 0] = math.nan
    with pytest.raises(NonFiniteChainError, match="64 of 64 chains"):
        H.sample_prior(prior, y0, sch, seed=1)
