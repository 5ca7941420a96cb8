"""The methods, part 2: the adaptive multi-stage density-ratio prior (ALGORITHMS.md 4) and dual-MCMC teaching (5).
A few train_steps on the embedded digits, the documented shapes, exact state_dict round trips (also across a stage
switch and with the replay buffer), the final multi-head prior on the fused op against the reference sampler, and
the dual-MCMC chains against the papers' loops."""
import copy

import pytest
import torch

import hebm_ext as H
from hebm_ext import methods
from hebm_ext.sampling import program as prog
from hebm_ext.sampling.fused import fused_unsupported_reason
from hebm_ext.sampling.reference import dual_mcmc_x_loop, dual_mcmc_z_loop
from helpers import assert_round_trip, digits_batch, params

SMALL = {
    # 3 stages of 2, 3 and 2 iterations: the round trip's next step switches from stage 1 to stage 2
    "multistage-nce": dict(n_stages=3, iters_per_stage=(2, 3, 2), e_l_steps=5, g_l_steps=5, head_hidden=16,
                           batch_size=16, buffer_size=40),
    "dual-mcmc": dict(nz=8, ngf=16, ndf=16, nif=8, e_l_steps=3, l_steps=3, batch_size=16),
}
CASES = [("multistage-nce", {}), ("multistage-nce", {"prior_sampling": "persistent", "posterior_prior": "p_k_r_k"}),
         ("dual-mcmc", {}), ("dual-mcmc", {"bn_mode": "eval", "fine_tune": False})]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run fastest on one thread (and far faster than two on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name, **kw):
    torch.manual_seed(0)
    return methods.create(name, "digits", **{**SMALL[name], **kw})


@pytest.mark.parametrize("name,kw", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_train_steps_shapes_and_round_trip(name, kw):
    m = make(name, **kw)
    x = digits_batch()
    before = params(m)
    for _ in range(4):
        out = m.train_step(x)
        assert out and all(isinstance(v, float) and v == v and abs(v) < 1e12 for v in out.values()), out
    changed = {k for k, v in params(m).items() if not torch.equal(v, before[k])}
    if name == "multistage-nce":
        assert (m.stage, m.stage_step) == (1, 2)
        # the generator and the ratio networks of stages 0 and 1 learned; stage 2's has not started
        assert any(k.startswith("generator.") for k in changed)
        assert {k.split(".")[1] for k in changed if k.startswith("heads.")} == {"0", "1"}
    else:
        assert {k.split(".")[0] for k in changed} == {"generator", "ebm", "inference"}
    s = m.sample(5)
    assert s.shape == (5, 1, 8, 8) and s.min() >= -1 and s.max() <= 1
    assert m.reconstruct(x[:3]).shape == (3, 1, 8, 8)
    score = m.anomaly_score(x[:3])
    assert score.shape == (3,) and torch.isfinite(score).all()
    nz = m.config.nz
    assert m.prior_latents(6).shape == m.base_latents(6).shape == (6, nz)
    assert m.posterior_latents(x[:3]).shape == (3, nz)

    # a state_dict round trip reproduces the next train_step exactly
    state = m.state_dict()
    replay = m.replay.clone() if hasattr(m, "replay") else None
    twin = make(name, **kw)
    twin.load_state_dict(state)
    assert_round_trip(m, twin, x)
    if name == "multistage-nce":
        assert m.stage == twin.stage == 2 and twin.heads[1].linears[0].weight.requires_grad is False
        if kw.get("prior_sampling") == "persistent":
            assert not torch.equal(replay, m.replay)  # the persistent chains moved (and the twin's with them)


def trained_multistage():
    """A multi-stage prior taken through all of its stages, with ratio networks far from zero (large lr)."""
    m = make("multistage-nce", nce_lr=0.05)
    x = digits_batch()
    for _ in range(sum(m.stage_iters)):
        m.train_step(x)
    assert m.stage == m.config.n_stages - 1
    return m


def test_multistage_final_prior_is_one_fused_program_matching_the_reference():
    m = trained_multistage()
    prior = m.prior
    K = m.config.n_stages
    assert len(prior.heads) == K and all(h is e for h, e in zip(prior.heads, m.heads))
    z = torch.randn(64, m.config.nz)
    assert fused_unsupported_reason(prior, z) is None  # backend "auto" runs the op
    assert prog.build_program(prior, torch.float32, "cpu")[1][7] == K  # one program with K heads
    energies = torch.stack([e(z) for e in m.heads]).detach()
    assert (energies.std(dim=1) > 1e-2).all(), energies.std(dim=1)  # every stage's ratio is non-trivial

    p64 = copy.deepcopy(prior).double()
    sch = m.prior_schedule
    z0 = torch.randn(64, m.config.nz, dtype=torch.float64)
    noise = torch.randn(sch.total_steps, 64, m.config.nz, dtype=torch.float64)
    fused = H.sample_prior(p64, z0, sch, noise=noise, backend="fused")
    ref = H.sample_prior(p64, z0, sch, noise=noise, backend="reference")
    assert (fused - ref).abs().max() < 1e-10
    # the comparison sees every head: the prior without the last stage's ratio gives other chains
    fewer = H.LatentEBMPrior([m.config.nz], [(h, 0) for h in p64.heads[:-1]])
    assert (H.sample_prior(fewer, z0, sch, noise=noise, backend="reference") - fused).abs().max() > 1e-4


def test_multistage_plateau_rule_freezes_the_finished_stage():
    # tol = 1e9: no later EMA counts as an improvement, so the plateau rule fires after patience = 1 iteration
    m = make("multistage-nce", switch_rule="plateau", iters_per_stage=100, min_iters_per_stage=1,
             plateau_patience=1, plateau_tol=1e9)
    x = digits_batch()
    m.train_step(x)
    assert m.stage == 0
    m.train_step(x)
    assert (m.stage, m.stage_step) == (1, 0)
    head0, head1 = params(m.heads[0]), params(m.heads[1])
    m.train_step(x)
    assert all(torch.equal(v, head0[k]) for k, v in params(m.heads[0]).items())  # frozen
    assert any(not torch.equal(v, head1[k]) for k, v in params(m.heads[1]).items())  # learning


def test_multistage_config_errors():
    with pytest.raises(ValueError, match=r"posterior_prior must be one of \('p_k', 'p_k_r_k'\), got 'p_k_r'"):
        make("multistage-nce", posterior_prior="p_k_r")
    with pytest.raises(ValueError, match=r"iters_per_stage must be a positive int or 3 positive ints .* got \(2, 3\)"):
        make("multistage-nce", iters_per_stage=(2, 3))
    with pytest.raises(ValueError, match="buffer_size must be at least batch_size"):
        make("multistage-nce", prior_sampling="persistent", buffer_size=8)
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        make("dual-mcmc", bn_mode="frozen")


def test_dual_mcmc_chains_are_the_papers_loops():
    """x-chain and z-chain of the method against the eager loops written like the code (5.3), same noise, float64
    (the step formulas, the missing 1/2 on the squared error, the temperature left to the decoupled noise)."""
    m = make("dual-mcmc").double()
    c = m.config
    x = digits_batch(8).double()
    x0 = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    xi = torch.randn(c.e_l_steps, 8, 1, 8, 8, dtype=torch.float64)
    a, b = copy.deepcopy(m), copy.deepcopy(m)  # the spectral norm's power iteration advances in both runs
    got = a.x_chain(x0, noise=xi)
    want = dual_mcmc_x_loop(b.ebm, x0, c.e_l_steps, c.e_l_step_size, c.e_n_step_size, noise=xi)
    assert (got - want).abs().max() < 1e-10
    assert (got - (x0 + c.e_n_step_size * xi.sum(0))).abs().max() > 1e-8  # the EBM's gradient took part
    z0 = torch.randn(8, c.nz, dtype=torch.float64)
    zi = torch.randn(c.l_steps, 8, c.nz, dtype=torch.float64)
    a, b = copy.deepcopy(m), copy.deepcopy(m)  # BatchNorm in train mode updates its running statistics
    got = a.z_chain(z0, x, noise=zi)
    want = dual_mcmc_z_loop(b.generator, x, z0, c.l_steps, c.l_step_size, c.n_step_size, c.sig, noise=zi)
    assert (got - want).abs().max() < 1e-10
    assert torch.allclose(a.generator.bn.running_mean, b.generator.bn.running_mean, rtol=0, atol=1e-10)
    assert m.mcmc_temp == pytest.approx((c.e_n_step_size / c.e_l_step_size) ** 2)


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_dual_mcmc_batchnorm_mode(bn_mode):
    """bn_mode="train" (the code): the z-chain runs G on batch statistics and moves the running statistics;
    "eval": running statistics inside the chain; G stays in train mode for its own updates in both."""
    m = make("dual-mcmc", bn_mode=bn_mode)
    x = digits_batch(8)
    stats = m.generator.bn.running_mean.clone()
    m.posterior_latents(x)
    assert m.generator.training
    assert torch.equal(m.generator.bn.running_mean, stats) == (bn_mode == "eval")


def test_dual_mcmc_stop_rule():
    m = make("dual-mcmc", stop_threshold=1e-12)
    with pytest.raises(RuntimeError, match=r"dual-MCMC stop rule .* stop_threshold = 1e-12"):
        m.train_step(digits_batch())
