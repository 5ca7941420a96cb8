"""Reference steps for the training steps on a spatial backbone, written like the papers' official code
(jcui1224/diffusion-hierarchical-ebm Trainer.py ``train_fn`` / ``_p_sample_langevin``; jcui1224/hierarchical-joint-ebm
two-stage-training/ebms_train.py ``langevin_prior_samples`` / ``train``): the same initial parameters and random
draws, float64; every loss and every updated parameter (and spectral-norm vector) must equal the method's to 1e-10.

The references use the backbone and the EBM networks only as functions (copies of the method's modules); the
diffusion schedule, the draws, the Langevin loops, the losses and the optimizer steps are written here.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import hebm_ext as H

TOL = 1e-10
GROUPS = ((2, 4, 4), (2, 4, 4), (3, 4, 4))


pytestmark = pytest.mark.usefixtures("one_thread")


def _official_noise(shapes):
    """noise_fn drawing the chain noise in the official order: for every step, one randn per group."""
    def fn(S, y0):
        B = y0.shape[0]
        return torch.stack([torch.cat([torch.randn((B,) + s, dtype=y0.dtype).reshape(B, -1) for s in shapes], 1)
                            for _ in range(S)])
    return fn


def _sigma_schedule(T):
    """Trainer.py _DiffusionSchedule (Gao et al.'s get_sigma_schedule), float64."""
    betas = np.append(np.linspace(0.0001, 0.02, 1000, dtype=np.float64), 1.0)
    sqrt_alphas = np.sqrt(1.0 - betas)
    idx = np.concatenate([np.arange(T) * (1000 // ((T - 1) * 2)), [999]]).astype(np.int64)
    a_s = np.concatenate([[np.prod(sqrt_alphas[: idx[0] + 1])],
                          [np.prod(sqrt_alphas[idx[i - 1] + 1: idx[i] + 1]) for i in range(1, len(idx))]])
    sigmas = np.sqrt(1 - a_s ** 2)
    a_s_cum = np.cumprod(a_s)
    sigmas_cum = np.sqrt(1 - a_s_cum ** 2)
    is_recovery = np.ones(T + 1)
    is_recovery[-1] = 0
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in
            dict(a_s=a_s, sigmas=sigmas, a_s_cum=a_s_cum, sigmas_cum=sigmas_cum, is_recovery=is_recovery).items()}


def _assert_modules_equal(a, b, what):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        err = (sa[k].double() - sb[k].double()).abs().max().item() if sa[k].numel() else 0.0
        assert err <= TOL * max(1.0, sb[k].double().abs().max().item()), f"{what} {k}: {err}"


def _x(B, seed=3):
    g = torch.Generator().manual_seed(seed)
    return H.data.Digits(split="train").images[torch.randint(0, 1438, (B,), generator=g)].double()


# ------------------------------------------------------------------------------------------ diffusion-ebm (6.6)
def _reference_diffusion_step(backbone, ebms, x, T, K, b, lr, betas, wd):
    """One train_fn of the hierarchical EBM diffusion code, on copies of the networks (ebm outputs f = -E)."""
    f = [lambda z, t, e=e: -e(z, t) for e in ebms]  # the official networks return f
    sch = _sigma_schedule(T)
    bs = x.shape[0]
    with torch.no_grad():
        posterior_eps = backbone.u_from_z(backbone.encode(x))       # get_posterior_eps
    t = torch.randint(low=0, high=T, size=(bs,))
    view = lambda v: v.reshape(bs, 1, 1, 1)  # noqa: E731  (_extract)
    x_pos_t, x_t_0 = [], []
    for eps in posterior_eps:                                           # sample_latent_training_pairs
        x_t = view(sch["a_s_cum"][t]) * eps + view(sch["sigmas_cum"][t]) * torch.randn(eps.shape, dtype=eps.dtype)
        x_t1 = view(sch["a_s"][t + 1]) * x_t + view(sch["sigmas"][t + 1]) * torch.randn(eps.shape, dtype=eps.dtype)
        x_pos_t.append(x_t)
        x_t_0.append(x_t1)
    # _p_sample_langevin
    e_l_step_size = view(sch["sigmas_cum"][t] / sch["sigmas_cum"][0] * b * sch["sigmas"][t + 1] ** 2)
    sigma, a_s, is_rec = view(sch["sigmas"][t + 1]), view(sch["a_s"][t + 1]), view(sch["is_recovery"][t + 1])
    tilde_x = x_t_0
    ys = [v.clone().detach().requires_grad_(True) for v in tilde_x]
    for _ in range(K):
        z_list = backbone.z_from_u(ys)
        en_loss, kernel_loss = 0.0, 0.0
        for i, (z, y, fi) in enumerate(zip(z_list, ys, f)):
            en = fi(z, t)
            kernel = torch.sum((y * a_s - tilde_x[i]) ** 2 / (2 * sigma ** 2) * is_rec, dim=[1, 2, 3])
            gau_kernel = torch.sum((y ** 2) / 2, dim=[1, 2, 3])
            en_loss = en_loss + en.sum(0)
            kernel_loss = kernel_loss + kernel.sum(0) + gau_kernel.sum(0)
        e_grad = torch.autograd.grad(en_loss, ys)
        g_grad = torch.autograd.grad(kernel_loss, ys)
        for i in range(len(ys)):
            noise = torch.randn_like(ys[i])
            ys[i].data = ys[i].data + 0.5 * e_grad[i] - 0.5 * e_l_step_size * g_grad[i] + \
                torch.sqrt(e_l_step_size) * noise.data
    x_t_k = [y.detach() for y in ys]
    with torch.no_grad():
        z_pos, z_neg = backbone.z_from_u(x_pos_t), backbone.z_from_u(x_t_k)
    opts = [torch.optim.Adam(e.parameters(), lr=lr, weight_decay=wd, betas=betas) for e in ebms]
    for e in ebms:
        e.zero_grad()
    en_loss = 0.0
    for fi, pos, neg in zip(f, z_pos, z_neg):                             # get_loss per group
        pos_f, neg_f = fi(pos, t), fi(neg, t)
        en_loss = en_loss + (-(pos_f - neg_f) / e_l_step_size.view(-1)).mean()
    en_loss.backward()
    for o in opts:
        o.step()
    return en_loss.item(), torch.cat([v.flatten(1) for v in x_t_k], 1)


def _spatial_diffusion(**kw):
    torch.manual_seed(0)
    cfg = dict(group_shapes=GROUPS, vae_ch=8, ebm_ch=8, vae_steps=0, e_l_steps=4, b_square=1e-3, e_lr=1e-3,
               e_weight_decay=3e-5, e_betas=(0.99, 0.999))
    cfg.update(kw)
    m = H.methods.create("diffusion-ebm", "digits-spatial", **cfg).double()
    m.noise_fn = _official_noise(m.group_shapes)
    return m


def test_diffusion_spatial_train_step_matches_the_official_train_fn():
    m = _spatial_diffusion()
    m._freeze_backbone()
    c = m.config
    x = _x(6)
    ref_backbone, ref_ebms = copy.deepcopy(m.backbone), copy.deepcopy(m.ebms)
    torch.manual_seed(11)
    ref_loss, ref_neg = _reference_diffusion_step(ref_backbone, ref_ebms, x, c.T, c.e_l_steps, c.b_square, c.e_lr,
                                                  c.e_betas, c.e_weight_decay)
    torch.manual_seed(11)
    captured = {}
    chain = m.conditional_chain
    m.conditional_chain = lambda u, t: captured.setdefault("neg", chain(u, t))
    out = m.train_step(x)
    assert out["stage"] == 2.0
    assert abs(out["loss_e"] - ref_loss) <= TOL * max(1.0, abs(ref_loss))
    assert (captured["neg"] - ref_neg).abs().max().item() <= TOL
    _assert_modules_equal(m.ebms, ref_ebms, "ebms")          # parameters and the spectral-norm vectors
    _assert_modules_equal(m.backbone, ref_backbone, "backbone")  # frozen


def test_diffusion_spatial_sampling_matches_the_official_p_sample():
    """6.7: u_T ~ N(0, I) group by group, the chain at t = T-1 .. 0, z = T(u_0); EBMs in eval mode."""
    m = _spatial_diffusion(e_l_steps=3)
    m._freeze_backbone()
    c = m.config
    with torch.no_grad():  # power iterations, so that the eval-mode spectral norm is a converged one
        for _ in range(20):
            for e, s in zip(m.ebms, m.group_shapes):
                e(torch.randn((2,) + s, dtype=torch.float64), 0)
    ref_backbone, ref_ebms = copy.deepcopy(m.backbone), copy.deepcopy(m.ebms)
    ref_ebms.eval()
    sch = _sigma_schedule(c.T)
    n = 5
    torch.manual_seed(5)
    ys = [torch.randn((n,) + s, dtype=torch.float64) for s in m.group_shapes]  # init_p_0
    for t in range(c.T - 1, -1, -1):
        s2 = (sch["sigmas_cum"][t] / sch["sigmas_cum"][0] * c.b_square * sch["sigmas"][t + 1] ** 2).item()
        a, sig, r = sch["a_s"][t + 1].item(), sch["sigmas"][t + 1].item(), sch["is_recovery"][t + 1].item()
        tilde = [y.detach() for y in ys]
        ys = [y.clone().requires_grad_(True) for y in tilde]
        tt = torch.full((n,), t, dtype=torch.long)
        for _ in range(c.e_l_steps):
            zs = ref_backbone.z_from_u(ys)
            en = sum((-e(z, tt)).sum() for e, z in zip(ref_ebms, zs))
            ker = sum((((y * a - x0) ** 2) / (2 * sig ** 2) * r).sum() + (y ** 2).sum() / 2 for y, x0 in zip(ys, tilde))
            eg, gg = torch.autograd.grad(en, ys), torch.autograd.grad(ker, ys)
            for i in range(len(ys)):
                ys[i].data = ys[i].data + 0.5 * eg[i] - 0.5 * s2 * gg[i] + math.sqrt(s2) * torch.randn_like(ys[i])
    with torch.no_grad():
        ref = torch.cat([z.flatten(1) for z in ref_backbone.z_from_u([y.detach() for y in ys])], 1)
    torch.manual_seed(5)
    got = m.prior_latents(n)
    assert (got - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item())
    assert m.ebms.training  # restored after sampling


# ------------------------------------------------------------------------------------------ joint-ebm two-stage (3.2)
def _reference_two_stage_step(backbone, ebms, x, K, eta, lr, betas, wd, base):
    f = [lambda z, e=e: -e(z) for e in ebms]
    B = x.shape[0]
    posterior = backbone.encode(x)                                      # get_posterior_samples
    posterior = [p.detach() for p in posterior]
    epz_list = [torch.randn(p.shape, dtype=p.dtype).requires_grad_(True) for p in posterior]  # init_z_requires_grad
    for _ in range(K):                                                  # langevin_prior_samples
        z_list = backbone.z_from_u(epz_list)
        log_p_total = backbone.log_prob(z_list) if base == "z" else \
            -sum((e * e).flatten(1).sum(1) for e in epz_list) / 2
        loss = sum(fi(z).mean() for fi, z in zip(f, z_list)) + log_p_total.mean()
        grads = torch.autograd.grad(loss, epz_list)
        for i in range(len(epz_list)):
            epz_list[i].data.add_(grads[i].data * B, alpha=0.5 * eta)
            epz_list[i].data.add_(torch.randn_like(epz_list[i]), alpha=np.sqrt(eta))
    with torch.no_grad():
        neg = backbone.z_from_u([e.detach() for e in epz_list])
    opts = [torch.optim.Adam(e.parameters(), lr=lr, weight_decay=wd, betas=betas) for e in ebms]
    total = 0.0
    for fi, z_t, z_f, e, o in zip(f, posterior, neg, ebms, opts):
        e.zero_grad()
        ef, et = fi(z_f.detach()).mean(), fi(z_t.detach()).mean()
        loss = ef - et
        loss.backward()
        o.step()
        total += loss.item()
    return total


@pytest.mark.parametrize("base", ["z", "u"])
def test_two_stage_train_step_matches_the_official_ebms_train(base):
    torch.manual_seed(0)
    m = H.methods.create("joint-ebm", "digits-two-stage", group_shapes=GROUPS, vae_ch=8, nef=8, ndf=16, vae_steps=0,
                         ld_steps=4, ld_size=1e-2, e_lr=1e-3, e_weight_decay=3e-5, e_betas=(0.99, 0.999),
                         ld_base=base).double()
    m.noise_fn = _official_noise(m.group_shapes)
    m._freeze_backbone()
    c = m.config
    x = _x(5)
    ref_backbone, ref_ebms = copy.deepcopy(m.backbone), copy.deepcopy(m.ebms)
    torch.manual_seed(21)
    ref_loss = _reference_two_stage_step(ref_backbone, ref_ebms, x, c.ld_steps, c.ld_size, c.e_lr, c.e_betas,
                                         c.e_weight_decay, base)
    torch.manual_seed(21)
    out = m.train_step(x)
    assert abs(out["loss_e"] - ref_loss) <= TOL * max(1.0, abs(ref_loss))
    _assert_modules_equal(m.ebms, ref_ebms, "ebms")


# ------------------------------------------------------------------------------------------ the cifar10 preset
def test_cifar10_preset_is_the_paper_configuration():
    m = H.methods.create("diffusion-ebm", "cifar10")
    c = m.config
    assert m.backbone.group_shapes == [(20, 16, 16)] * 30 and len(m.ebms) == 30
    assert all(isinstance(e, H.nn.Cifar10GroupEBM) for e in m.ebms)
    assert [sum(p.numel() for p in e.parameters()) for e in m.ebms] == [2_116_624] * 30
    assert (c.T, c.e_l_steps, c.b_square, c.batch_size, c.e_lr, tuple(c.e_betas), c.e_weight_decay, c.e_gamma) == \
        (3, 50, 3e-5, 25, 4e-5, (0.99, 0.999), 3e-5, 0.9)
    g = m.optimizers["e"].param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (4e-5, (0.99, 0.999), 3e-5)


def test_cifar10_preset_train_step_and_sample_on_cpu_at_reduced_size():
    """The paper configuration with 2 groups, batch 2 and K = 2: a train step of each stage and a sample call."""
    torch.manual_seed(0)
    m = H.methods.create("diffusion-ebm", "cifar10", group_shapes=((20, 16, 16),) * 2, vae_steps=1, e_l_steps=2,
                         batch_size=2, vae_ch=16)
    assert [sum(p.numel() for p in e.parameters()) for e in m.ebms] == [2_116_624] * 2
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert m.train_step(x)["stage"] == 1.0
    out = m.train_step(x)
    assert out["stage"] == 2.0 and math.isfinite(out["loss_e"])
    s = m.sample(2)
    assert s.shape == (2, 3, 32, 32) and torch.isfinite(s).all()


def test_celebahq256_presets_build_the_paper_groups():
    m = H.methods.create("diffusion-ebm", "celebahq256", vae_ch=8)
    sides = [s[1] for s in m.group_shapes]
    assert sides == [8] * 4 + [16] * 4 + [32] * 4 + [64] * 8 + [128] * 16 and len(m.ebms) == 36
    assert all(isinstance(e, H.nn.CelebA256GroupEBM) for e in m.ebms)
    c = m.config
    assert (c.e_l_steps, c.b_square, c.e_gamma, c.batch_size) == (30, 2e-5, 0.98, 2)
    j = H.methods.create("joint-ebm", "celebahq256", vae_ch=8)
    assert len(j.ebms) == 36 and all(isinstance(e, H.nn.TwoStageGroupEBM) for e in j.ebms)
    assert (j.config.ld_steps, j.config.ld_size, j.config.e_lr, tuple(j.config.e_betas), j.config.e_weight_decay) == \
        (10, 1e-5, 2e-5, (0.99, 0.999), 3e-5)


def test_the_backbone_methods_have_no_langevin_loop_of_their_own():
    import inspect
    import re

    for mod in ("backbone_stage", "spatial_diffusion", "two_stage"):
        src = inspect.getsource(__import__(f"hebm_ext.methods.{mod}", fromlist=["x"]))
        assert "autograd.grad" not in src and not re.search(r"randn_like\(z\)", src), mod
