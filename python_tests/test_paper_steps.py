"""Reference steps: one training iteration of every method and scheme, written line by line like the official
script it comes from, against ``Method.train_step``: float64, tiny networks, the same initial parameters and the
same random draws (recorded from the method, replayed to the reference: python_tests/paper_steps.py); every loss
and every parameter / buffer after the optimizer steps equal to 1e-10.

The reference shares nothing with the method but the networks' initial parameters (deep copies, used for their
forward) and the random draws: chains, losses, optimizers, the top-down maps u <-> z and the diffusion schedule are
written here from the official files named in each test (ALGORITHMS.md gives the formulas).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hebm_ext as H
from hebm_ext.methods import diffusion_ebm as diffusion_mod
from hebm_ext.methods import dual_mcmc as dual_mod
from hebm_ext.methods import joint_ebm as joint_mod
from hebm_ext.methods import lebm as lebm_mod
from hebm_ext.methods import multistage_nce as nce_mod

from paper_steps import assert_moved, assert_same_losses, assert_same_state, networks, record_step

B = 6


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(1224)
    yield
    torch.set_default_dtype(old)


def images(shape=(1, 8, 8), n=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n,) + shape, generator=g, dtype=torch.float64) * 1.8 - 0.9


def sharpen_(*modules, scale=2.0):
    """Larger weights than PyTorch's init, so that every gradient term of the chains matters."""
    with torch.no_grad():
        for m in modules:
            for name, p in m.named_parameters():
                if "weight" in name:
                    p.mul_(scale)


class Normal:
    """The official codes' Normal: sigma = exp(log_sigma) + 0.01 (joint-training/train_cifar10.py), with NVAE's soft
    clamp 5 tanh(x / 5) on mu and log_sigma when asked (diffusion-hierarchical-ebm nvae/distributions.py)."""

    def __init__(self, mu, log_sigma, soft_clamp=False):
        if soft_clamp:
            mu, log_sigma = 5.0 * torch.tanh(mu / 5.0), 5.0 * torch.tanh(log_sigma / 5.0)
        self.mu = mu
        self.sigma = torch.exp(log_sigma) + 1e-2

    def sample_given_eps(self, eps):
        return eps * self.sigma + self.mu

    def log_prob(self, samples):
        normalized = (samples - self.mu) / self.sigma
        return -0.5 * normalized * normalized - 0.5 * np.log(2 * np.pi) - torch.log(self.sigma)


def q_sample(enc, x, draws):
    """z ~ q(z | x) = prod_l N(mu_l(x), exp(logvar_l(x))), reparameterised layer by layer (top first), and
    log q(z | x) [B] with its constants."""
    z_list, log_q = [], 0.0
    for mu, logvar in enc(x):
        z = mu + torch.exp(0.5 * logvar) * draws.randn(*mu.shape)
        z_list.append(z)
        log_q = log_q - 0.5 * (logvar + (z - mu) ** 2 / torch.exp(logvar) + math.log(2 * math.pi)).sum(1)
    return z_list, log_q


# =====================================================================================================================
# LEBM: bpucla/latent-space-EBM-prior train_svhn.py, sample_p_0 (l. 484-485), sample_langevin_prior_z (l. 487-503),
# sample_langevin_post_z (l. 505-526), the iteration (l. 594-621)

def lebm_reference(netG, netE, x, args, draws):
    mse = nn.MSELoss(reduction="sum")
    optE = torch.optim.Adam(netE.parameters(), lr=args.e_lr, weight_decay=0, betas=args.e_betas)
    optG = torch.optim.Adam(netG.parameters(), lr=args.g_lr, weight_decay=0, betas=args.g_betas)

    def energy(score):  # e_energy_form = 'identity'
        return score.squeeze()

    def sample_p_0(n):
        return args.e_init_sig * draws.randn(n, args.nz)

    def sample_langevin_prior_z(z):
        z = z.clone().detach()
        z.requires_grad = True
        for _ in range(args.e_l_steps):
            en = energy(netE(z))
            z_grad = torch.autograd.grad(en.sum(), z)[0]
            z.data = z.data - 0.5 * args.e_l_step_size * args.e_l_step_size * (
                z_grad + 1.0 / (args.e_prior_sig * args.e_prior_sig) * z.data)
            z.data += args.e_l_step_size * draws.randn_like(z).data
        return z.detach()

    def sample_langevin_post_z(z, x):
        z = z.clone().detach()
        z.requires_grad = True
        for _ in range(args.g_l_steps):
            x_hat = netG(z)
            g_log_lkhd = 1.0 / (2.0 * args.g_llhd_sigma * args.g_llhd_sigma) * mse(x_hat, x)
            z_grad_g = torch.autograd.grad(g_log_lkhd, z)[0]
            en = energy(netE(z))
            z_grad_e = torch.autograd.grad(en.sum(), z)[0]
            z.data = z.data - 0.5 * args.g_l_step_size * args.g_l_step_size * (
                z_grad_g + z_grad_e + 1.0 / (args.e_prior_sig * args.e_prior_sig) * z.data)
            z.data += args.g_l_step_size * draws.randn_like(z).data
        return z.detach()

    batch_size = x.shape[0]
    z_g_0 = sample_p_0(batch_size)
    z_e_0 = sample_p_0(batch_size)
    z_g_k = sample_langevin_post_z(z_g_0, x)
    z_e_k = sample_langevin_prior_z(z_e_0)

    optG.zero_grad()
    x_hat = netG(z_g_k.detach())
    loss_g = mse(x_hat, x) / batch_size
    loss_g.backward()
    optG.step()

    optE.zero_grad()
    en_neg = energy(netE(z_e_k.detach())).mean()
    en_pos = energy(netE(z_g_k.detach())).mean()
    loss_e = en_pos - en_neg
    loss_e.backward()
    optE.step()
    return {"loss_g": loss_g, "loss_e": loss_e, "en_pos": en_pos, "en_neg": en_neg}


@pytest.mark.parametrize("overrides", [dict(e_activation="gelu"),
                                       dict(e_activation="lrelu", e_init_sig=0.7, e_prior_sig=1.3)],
                         ids=["gelu", "lrelu-init-sig"])
def test_lebm_step_equals_train_svhn(overrides):
    m = H.methods.create("lebm", "digits", nz=5, ngf=6, ndf=12, e_l_steps=6, g_l_steps=5, e_lr=1e-3, g_lr=1e-3,
                         **overrides)
    sharpen_(m.ebm)
    netG, netE = networks(m.generator, m.ebm)
    init = networks(m.generator, m.ebm)
    x = images()
    out, draws = record_step(m, lebm_mod, x)
    ref = lebm_reference(netG, netE, x, m.config, draws)
    draws.assert_all_taken()
    assert_same_losses(out, ref)
    assert_same_state(m.generator, netG, "generator")
    assert_same_state(m.ebm, netE, "ebm")
    assert_moved(init[0], m.generator, "generator")
    assert_moved(init[1], m.ebm, "ebm")


# =====================================================================================================================
# Joint latent EBM prior, MCMC scheme: jcui1224/hierarchical-joint-ebm joint-training/train_cifar10.py: Normal
# (l. 36-52), compute_log_px / compute_log_pz / compute_energy (l. 56-92), langevin_posterior_sampling (l. 94-118),
# langevin_prior_sampling (l. 120-144), sample_p_0 (l. 146-150), train_step (l. 195-228); nets.py _netGzi_mlp.loss
# (the conditional only). The code's f_l are negative energies: f_l = -E_l of our heads.

def joint_parts(m):
    d2, d1 = m.gen.dims  # top first: z2 (top), z1 (bottom)
    netG0, ladder_net, e2, e1 = networks(m.gen.g.decoder, m.gen.ladder.nets[0], m.heads[0], m.heads[1])
    sigma_top = m.config.sigma_top

    def netG1(z2):  # _netGzi_mlp.forward without its (unused) rsample
        mu, log_sig = ladder_net(z2).chunk(2, dim=1)
        return Normal(mu, log_sig)

    def log_pz(z1, z2):
        log_pz1gz2 = torch.sum(netG1(z2).log_prob(z1), dim=1).sum()
        top = Normal(torch.zeros_like(z2), torch.full_like(z2, math.log(sigma_top - 1e-2)))
        return log_pz1gz2 + torch.sum(top.log_prob(z2), dim=1).sum()

    def compute_energy(z1, z2):
        return (-e1(z1)).sum() + (-e2(z2)).sum()

    return d2, d1, netG0, ladder_net, e2, e1, netG1, log_pz, compute_energy


def joint_langevin(zs, steps, step_size, logp, compute_energy, draws):
    """langevin_{prior,posterior}_sampling: z_i += 0.5 s^2 (en_grad + pz_grad) + s xi_i, every layer at once.
    zs = [z1, z2]; the noise of one step is one draw over the concatenation [z2, z1] (our layout)."""
    for _ in range(steps):
        g_loss = logp(*zs)
        en = compute_energy(*zs)
        pz_grad = torch.autograd.grad(g_loss, zs)
        en_grad = torch.autograd.grad(en, zs)
        zs[0].data += 0.5 * step_size * step_size * (en_grad[0] + pz_grad[0])
        zs[1].data += 0.5 * step_size * step_size * (en_grad[1] + pz_grad[1])
        xi = draws.randn(zs[0].shape[0], zs[0].shape[1] + zs[1].shape[1])
        d2 = zs[1].shape[1]
        zs[0].data += step_size * xi[:, d2:]
        zs[1].data += step_size * xi[:, :d2]
    return [z.detach() for z in zs]


def sample_p_0_joint(draws, batch_size, d2, d1):
    z = draws.randn(batch_size, d2 + d1)  # our layout [z2, z1]; the code draws z1 then z2
    return [z[:, d2:].clone().requires_grad_(True), z[:, :d2].clone().requires_grad_(True)]


def test_joint_ebm_mcmc_step_equals_train_cifar10():
    m = H.methods.create("joint-ebm", "digits", z_dims=(3, 5), ngf=6, ladder_hidden=10, ladder_depth=2,
                         sigma_min=0.01, head_hidden=(8, 9), head_depth=(2, 3), e_l_steps=5, g_l_steps=4,
                         e_l_step_size=0.1, g_lr=1e-3, e_lr=1e-3)
    sharpen_(m.heads)
    c = m.config
    d2, d1, netG0, ladder_net, e2, e1, netG1, log_pz, compute_energy = joint_parts(m)
    x = images()
    out, draws = record_step(m, joint_mod, x)

    mse = nn.MSELoss(reduction="none")
    optE = [torch.optim.Adam(e1.parameters(), lr=c.e_lr), torch.optim.Adam(e2.parameters(), lr=c.e_lr)]
    optG = [torch.optim.Adam(netG0.parameters(), lr=c.g_lr), torch.optim.Adam(ladder_net.parameters(), lr=c.g_lr)]

    def log_px(z1, z2):
        recon_loss = torch.sum(mse(netG0(z1), x), dim=[1, 2, 3]).sum()
        return (-1.0 / (2.0 * c.g_llhd_sigma ** 2)) * recon_loss + log_pz(z1, z2)

    batch_size = x.shape[0]
    z_g_0 = sample_p_0_joint(draws, batch_size, d2, d1)
    z_g_k = joint_langevin(z_g_0, c.g_l_steps, c.g_l_step_size, log_px, compute_energy, draws)
    z_e_0 = sample_p_0_joint(draws, batch_size, d2, d1)
    z_e_k = joint_langevin(z_e_0, c.e_l_steps, c.e_l_step_size, log_pz, compute_energy, draws)

    optG[0].zero_grad()
    pxgz1_loss = torch.sum(mse(netG0(z_g_k[0]), x), dim=[1, 2, 3]).mean()
    loss = (1.0 / (2.0 * c.g_llhd_sigma ** 2)) * pxgz1_loss
    loss.backward()
    optG[0].step()

    optG[1].zero_grad()
    pz1gz2_t = torch.sum(netG1(z_g_k[1]).log_prob(z_g_k[0]), dim=1).mean()
    pz1gz2_f = torch.sum(netG1(z_e_k[1]).log_prob(z_e_k[0]), dim=1).mean()
    pz1gz2_loss = pz1gz2_f - pz1gz2_t
    pz1gz2_loss.backward()
    optG[1].step()

    losses = []
    for opt, f, l in ((optE[0], lambda z: -e1(z), 0), (optE[1], lambda z: -e2(z), 1)):
        opt.zero_grad()
        e_t = f(z_g_k[l]).mean()
        e_f = f(z_e_k[l]).mean()
        e_loss = e_f - e_t
        e_loss.backward()
        opt.step()
        losses.append(e_loss)
    draws.assert_all_taken()
    assert_same_losses(out, {"loss_g1": loss, "loss_g2": pz1gz2_loss, "loss_e": losses[0] + losses[1]})
    assert_same_state(m.gen.g.decoder, netG0, "decoder")
    assert_same_state(m.gen.ladder.nets[0], ladder_net, "ladder")
    assert_same_state(m.heads[0], e2, "heads[0] (top)")
    assert_same_state(m.heads[1], e1, "heads[1] (bottom)")


# =====================================================================================================================
# Joint latent EBM prior, variational scheme. The paper's code for it is not public (ALGORITHMS.md 3.1: the
# inference nets are in nets.py but unused); the reference follows the scheme as documented in
# hebm_ext/methods/joint_ebm.py (the ELBO with the ladder prior, the EBM loss of 3.1, ICCV-23's optimiser, 3.4),
# with the prior chain of train_cifar10.py.

def test_joint_ebm_variational_step_equals_documented_scheme():
    m = H.methods.create("joint-ebm", "digits", scheme="variational", z_dims=(3, 5), ngf=6, nif=6, ladder_hidden=10,
                         ladder_depth=2, sigma_min=0.01, head_hidden=(8, 9), head_depth=(2, 2), e_l_steps=5,
                         e_l_step_size=0.1, e_lr=1e-3, vae_lr=1e-3)
    sharpen_(m.heads)
    c = m.config
    d2, d1, netG0, ladder_net, e2, e1, netG1, log_pz, compute_energy = joint_parts(m)
    (enc,) = networks(m.gen.encoder)
    x = images()
    out, draws = record_step(m, joint_mod, x)

    (z2_q, z1_q), log_q = q_sample(enc, x, draws)
    z_e_0 = sample_p_0_joint(draws, x.shape[0], d2, d1)
    z_e_k = joint_langevin(z_e_0, c.e_l_steps, c.e_l_step_size, log_pz, compute_energy, draws)

    vae_params = list(ladder_net.parameters()) + list(netG0.parameters()) + list(enc.parameters())
    opt_vae = torch.optim.Adam(vae_params, lr=c.vae_lr, betas=c.vae_betas)
    opt_e = torch.optim.Adam(list(e2.parameters()) + list(e1.parameters()), lr=c.e_lr, betas=c.e_betas)
    opt_vae.zero_grad()
    rec = ((netG0(z1_q) - x) ** 2).flatten(1).sum(1)
    log_p = torch.sum(netG1(z2_q).log_prob(z1_q), dim=1) + torch.sum(
        Normal(torch.zeros_like(z2_q), torch.full_like(z2_q, math.log(c.sigma_top - 1e-2))).log_prob(z2_q), dim=1)
    kl = log_q - log_p
    loss_vae = rec.mean() / (2 * c.g_llhd_sigma ** 2) + kl.mean()
    loss_vae.backward()
    opt_vae.step()

    opt_e.zero_grad()
    z2_pos, z1_pos = z2_q.detach(), z1_q.detach()
    en_pos = (e2(z2_pos) + e1(z1_pos)).mean()
    en_neg = (e2(z_e_k[1]) + e1(z_e_k[0])).mean()
    (en_pos - en_neg).backward()
    opt_e.step()
    draws.assert_all_taken()
    assert_same_losses(out, {"loss_vae": loss_vae, "kl": kl.mean(), "loss_e": en_pos - en_neg, "en_pos": en_pos,
                             "en_neg": en_neg})
    assert_same_state(m.gen.encoder, enc, "encoder")
    assert_same_state(m.gen.g.decoder, netG0, "decoder")
    assert_same_state(m.gen.ladder.nets[0], ladder_net, "ladder")
    assert_same_state(m.heads[0], e2, "heads[0]")
    assert_same_state(m.heads[1], e1, "heads[1]")


# =====================================================================================================================
# Hierarchical EBM diffusion prior: jcui1224/diffusion-hierarchical-ebm Trainer.py: _get_sigma_schedule (l. 44-69),
# _q_sample / _q_sample_pairs (l. 84-121), tune_LD_step_size (l. 189-198), _p_sample_langevin (l. 200-245),
# get_loss (l. 299-309), train_fn (l. 311-358); nvae/model.py new_sample_z_by_eps / new_sample_eps_by_z and
# nvae/distributions.py Normal for the top-down map (here over our MLP ladder, the stand-in for NVAE).

def gao_schedule(T):
    """_get_sigma_schedule(beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=T), float64 (numpy)."""
    betas = np.append(np.linspace(1e-4, 0.02, 1000, dtype=np.float64), 1.0)
    sqrt_alphas = np.sqrt(1.0 - betas)
    idx = np.concatenate([np.arange(T) * (1000 // ((T - 1) * 2)), [999]]).astype(np.int64)
    a_s = np.concatenate([[np.prod(sqrt_alphas[: idx[0] + 1])],
                          np.asarray([np.prod(sqrt_alphas[idx[i - 1] + 1: idx[i] + 1]) for i in range(1, len(idx))])])
    sigmas = np.sqrt(1 - a_s ** 2)
    a_s_cum = np.cumprod(a_s)
    sigmas_cum = np.sqrt(1 - a_s_cum ** 2)
    is_recovery = np.ones(T + 1)
    is_recovery[-1] = 0
    return {k: torch.tensor(v) for k, v in dict(a_s=a_s, sigmas=sigmas, a_s_cum=a_s_cum, sigmas_cum=sigmas_cum,
                                                is_recovery=is_recovery).items()}


class TopDown:
    """NVAE's new_sample_z_by_eps / new_sample_eps_by_z over the MLP ladder (layers top first): z_0 = sigma_top u_0,
    z_l = Normal(ladder_l(z_{l-1})).sample_given_eps(u_l), and back."""

    def __init__(self, nets, dims, sigma_top, soft_clamp):
        self.nets, self.dims, self.sigma_top, self.soft_clamp = nets, dims, sigma_top, soft_clamp

    def split(self, y):
        return list(torch.split(y, self.dims, dim=1))

    def dist(self, l, z_parent):
        mu, log_sig = self.nets[l - 1](z_parent).chunk(2, dim=1)
        return Normal(mu, log_sig, soft_clamp=self.soft_clamp)

    def z_by_eps(self, eps_list):
        z_list = [self.sigma_top * eps_list[0]]
        for l in range(1, len(eps_list)):
            z_list.append(self.dist(l, z_list[-1]).sample_given_eps(eps_list[l]))
        return z_list

    def eps_by_z(self, z_list):
        eps = [z_list[0] / self.sigma_top]
        for l in range(1, len(z_list)):
            d = self.dist(l, z_list[l - 1])
            eps.append((z_list[l] - d.mu) / d.sigma)
        return eps


def diffusion_method(**kw):
    m = H.methods.create("diffusion-ebm", "digits", z_dims=(3, 4, 5), ngf=6, nif=6, ladder_hidden=8, ladder_depth=2,
                         head_hidden=7, head_depth=2, e_l_steps=4, b_square=2e-2, e_lr=1e-3, vae_lr=1e-3,
                         sigma_top=1.01, e_betas=(0.99, 0.999), **kw)
    sharpen_(m.heads, scale=3.0)
    sharpen_(m.gen.ladder, scale=1.5)
    return m


def test_diffusion_ebm_stage1_step_equals_elbo():
    """Stage 1 (the paper loads a pretrained NVAE; ours trains the stand-in by the ELBO of the module docstring):
    (1/(2 sigma^2)) sum (g(z_1) - x)^2 + log q(z | x) - log p_beta(z), z ~ q(z | x)."""
    m = diffusion_method()
    c = m.config
    enc, dec, *nets = networks(m.gen.encoder, m.gen.g.decoder, *m.gen.ladder.nets)
    top = TopDown(nets, list(m.gen.dims), c.sigma_top, c.soft_clamp)
    x = images()
    out, draws = record_step(m, diffusion_mod, x)
    z_list, log_q = q_sample(enc, x, draws)
    log_p = (-0.5 * (z_list[0] / c.sigma_top) ** 2 - math.log(c.sigma_top) - 0.5 * math.log(2 * math.pi)).sum(1)
    for l in range(1, len(z_list)):
        log_p = log_p + top.dist(l, z_list[l - 1]).log_prob(z_list[l]).sum(1)
    params_all = [p for n in nets for p in n.parameters()] + list(dec.parameters()) + list(enc.parameters())
    opt = torch.optim.Adam(params_all, lr=c.vae_lr, betas=c.vae_betas)
    opt.zero_grad()
    rec = ((dec(z_list[-1]) - x) ** 2).flatten(1).sum(1)
    kl = log_q - log_p
    loss = rec.mean() / (2 * c.g_llhd_sigma ** 2) + kl.mean()
    loss.backward()
    opt.step()
    draws.assert_all_taken()
    assert_same_losses(out, {"loss_vae": loss, "kl": kl.mean()})
    assert_same_state(m.gen.encoder, enc, "encoder")
    assert_same_state(m.gen.g.decoder, dec, "decoder")
    for l, n in enumerate(nets):
        assert_same_state(m.gen.ladder.nets[l], n, f"ladder.nets[{l}]")


@pytest.mark.parametrize("spectral_norm, backend", [(False, "auto"), (True, "reference"), (True, "auto")],
                         ids=["plain", "spectral-norm-eager-chain", "spectral-norm-fused-chain"])
def test_diffusion_ebm_stage2_step_equals_trainer_train_fn(spectral_norm, backend):
    """With spectral norm, the code's EBMs are in train mode inside Langevin: every forward runs one power
    iteration. The eager chain (prior_backend="reference") does the same and equals the code; the fused chain reads
    W / sigma(W) as it stands (no power iteration inside the chain, documented in diffusion_ebm.py), so its
    reference runs the chain's forwards without one (torch's eval-mode spectral norm) and the loss's with one."""
    m = diffusion_method(vae_steps=0, e_spectral_norm=spectral_norm, prior_backend=backend)
    chain_power_iteration = not (spectral_norm and backend == "auto")
    c = m.config
    enc, *nets = networks(m.gen.encoder, *m.gen.ladder.nets)
    ebm_list = networks(*m.heads)
    top = TopDown(nets, list(m.gen.dims), c.sigma_top, c.soft_clamp)
    sch = gao_schedule(c.T)
    x = images()
    out, draws = record_step(m, diffusion_mod, x)

    def extract(a, t):
        return a[t].view(-1, 1)

    def tune_LD_step_size(t):
        sigma, sigma_cum = extract(sch["sigmas"], t + 1), extract(sch["sigmas_cum"], t)
        return sigma_cum / sch["sigmas_cum"][0] * c.b_square * sigma ** 2

    def f(l, z, t):  # the code's ebm(z, t): a negative energy
        return -ebm_list[l](z, t)

    # posterior u_0 (get_posterior_eps), t, the training pairs (one noise draw over all groups for each of the two)
    with torch.no_grad():
        u0 = torch.cat(top.eps_by_z(q_sample(enc, x, draws)[0]), dim=1)  # get_posterior_eps
    bs = x.shape[0]
    t = draws.randint((bs,))
    n1, n2 = draws.randn(bs, sum(m.gen.dims)), draws.randn(bs, sum(m.gen.dims))
    x_pos_t = extract(sch["a_s_cum"], t) * u0 + extract(sch["sigmas_cum"], t) * n1
    x_t_0 = extract(sch["a_s"], t + 1) * x_pos_t + extract(sch["sigmas"], t + 1) * n2

    # _p_sample_langevin(VAE, x_t_0, t): the EBMs have requires_grad False, the NVAE is frozen
    for e in ebm_list:
        e.requires_grad_(False)
        e.train(chain_power_iteration)
    tilde_x = top.split(x_t_0)
    ys = [y.clone().detach().requires_grad_(True) for y in tilde_x]
    e_l_step_size = tune_LD_step_size(t)
    sigma, a_s, is_recovery = (extract(sch[k], t + 1) for k in ("sigmas", "a_s", "is_recovery"))
    for _ in range(c.e_l_steps):
        z_list = top.z_by_eps(ys)
        en_loss, kernel_loss = 0.0, 0.0
        for i, (z, y) in enumerate(zip(z_list, ys)):
            en = f(i, z, t)
            kernel = torch.sum((y * a_s - tilde_x[i]) ** 2 / (2 * sigma ** 2) * is_recovery, dim=1)
            gau_kernel = torch.sum((y ** 2) / 2, dim=1)
            en_loss = en_loss + en.sum(0)
            kernel_loss = kernel_loss + (kernel.sum(0) + gau_kernel.sum(0))
        e_grad = torch.autograd.grad(en_loss, ys)
        g_grad = torch.autograd.grad(kernel_loss, ys)
        noise = top.split(draws.randn(bs, sum(m.gen.dims)))
        for i in range(len(ys)):
            ys[i].data = ys[i].data + 0.5 * e_grad[i] - 0.5 * e_l_step_size * g_grad[i] + \
                torch.sqrt(e_l_step_size) * noise[i].data
    x_t_k = [y.detach() for y in ys]

    with torch.no_grad():
        z_pos = top.z_by_eps(top.split(x_pos_t))
        z_neg = top.z_by_eps(x_t_k)
    for e in ebm_list:
        e.requires_grad_(True)
        e.train(True)
    opt_list = [torch.optim.Adam(e.parameters(), lr=c.e_lr, weight_decay=c.e_weight_decay, betas=(0.99, 0.999))
                for e in ebm_list]
    en_loss = 0.0
    for i, (pos_t, neg_t) in enumerate(zip(z_pos, z_neg)):
        pos_f, neg_f = f(i, pos_t, t), f(i, neg_t, t)
        en_loss = en_loss + (-(pos_f - neg_f) / tune_LD_step_size(t).view(-1)).mean()
    en_loss.backward()
    for opt in opt_list:
        opt.step()
    draws.assert_all_taken()
    assert c.e_betas == (0.99, 0.999)
    assert_same_losses(out, {"loss_e": en_loss})
    for l, e in enumerate(ebm_list):
        assert_same_state(m.heads[l], e, f"heads[{l}]")


# =====================================================================================================================
# Adaptive multi-stage density-ratio prior: no official code exists (ALGORITHMS.md 4); the reference follows the
# reconstruction of 4.1 as written there, with LEBM's chains (train_svhn.py, as above) for the posterior and prior.

@pytest.mark.parametrize("sampling", ["short_run", "persistent"])
def test_multistage_nce_step_equals_algorithm_4_1(sampling):
    m = H.methods.create("multistage-nce", "digits", nz=4, ngf=6, n_stages=3, iters_per_stage=(5, 5, 5),
                         head_hidden=9, head_depth=2, e_l_steps=5, g_l_steps=4, g_lr=1e-3, nce_lr=1e-3,
                         prior_sampling=sampling, buffer_size=10, reinit_prob=0.5, batch_size=B)
    for e in m.heads:  # trained-looking ratio networks (their last layers start at zero)
        with torch.no_grad():
            for p in e.parameters():
                p.add_(0.5 * torch.randn_like(p))
    m.next_stage()  # stage 1: p_1 = p_0 exp(f_0) is the NCE's noise, f_1 is learned
    c = m.config
    netG, E0, E1 = networks(m.generator, m.heads[0], m.heads[1])
    replay = m.replay.clone() if sampling == "persistent" else None
    x = images()
    out, draws = record_step(m, nce_mod, x)

    def langevin_p1(z, steps, s, x=None):  # LEBM's loops with E = E_0 (p_1 = N(0, I) exp(-E_0))
        z = z.clone().detach().requires_grad_(True)
        for _ in range(steps):
            loss = E0(z).sum()
            if x is not None:
                loss = loss + ((netG(z) - x) ** 2).sum() / (2.0 * c.g_llhd_sigma ** 2)
            grad = torch.autograd.grad(loss, z)[0]
            z.data = z.data - 0.5 * s * s * (grad + z.data) + s * draws.randn_like(z).data
        return z.detach()

    z_pos = langevin_p1(draws.randn(B, c.nz), c.g_l_steps, c.g_l_step_size, x)
    if sampling == "short_run":
        z_neg = langevin_p1(draws.randn(B, c.nz), c.e_l_steps, c.e_l_step_size)
    else:
        idx = draws.randint((c.buffer_size,))[:B]
        restart = draws.take((B,), "rand") < c.reinit_prob
        z0 = torch.where(restart.unsqueeze(1), draws.randn(B, c.nz), replay[idx])
        z_neg = langevin_p1(z0, c.e_l_steps, c.e_l_step_size)
        replay[idx] = z_neg
    opt_g = torch.optim.Adam(netG.parameters(), lr=c.g_lr, betas=c.g_betas)
    opt_g.zero_grad()
    loss_g = ((netG(z_pos) - x) ** 2).sum() / B
    loss_g.backward()
    opt_g.step()
    opt_f = torch.optim.Adam(E1.parameters(), lr=c.nce_lr, betas=c.nce_betas)
    opt_f.zero_grad()
    f_pos, f_neg = -E1(z_pos), -E1(z_neg)  # f_1 = log r_1
    loss_nce = -F.logsigmoid(f_pos).mean() - torch.log(1 - torch.sigmoid(f_neg)).mean()
    loss_nce.backward()
    opt_f.step()
    draws.assert_all_taken()
    assert_same_losses(out, {"loss_g": loss_g, "loss_nce": loss_nce, "f_pos": f_pos.mean(), "f_neg": f_neg.mean()})
    assert_same_state(m.generator, netG, "generator")
    assert_same_state(m.heads[1], E1, "heads[1]")
    assert_same_state(m.heads[0], E0, "heads[0] (frozen)")
    if replay is not None:
        assert (m.replay - replay).abs().max() <= 1e-10


# =====================================================================================================================
# Dual-MCMC teaching: jcui1224/dual-MCMC train.py: reparametrize (l. 17-20), diag_normal_NLL (l. 22-25), langevin_z
# (l. 27-45), langevin_x (l. 47-62), fit's iteration (l. 106-156: the x-chain first, then I(x) and the z-chain).

def test_dual_mcmc_step_equals_train_fit():
    m = H.methods.create("dual-mcmc", "digits", nz=5, ngf=8, ndf=8, nif=6, e_l_steps=4, l_steps=3,
                         e_l_step_size=0.5, e_n_step_size=1e-2)
    args = m.config
    netG, netE, netI = networks(m.generator, m.ebm, m.inference)
    x = images()
    out, draws = record_step(m, dual_mod, x)

    mse = nn.MSELoss(reduction="sum")

    def reparametrize(mu, log_sigma):
        std = torch.exp(log_sigma.mul(0.5))
        eps = draws.randn(*std.shape)
        return eps.mul(std).add_(mu)

    def diag_normal_NLL(z, z_mu, z_log_sigma):
        nll = 0.5 * torch.sum(z_log_sigma.squeeze(), dim=1) + \
            0.5 * torch.sum((torch.mul(z - z_mu, z - z_mu) / (1e-6 + torch.exp(z_log_sigma))).squeeze(), dim=1)
        return nll.squeeze()

    def langevin_z(z, x):
        z = z.clone().detach()
        z.requires_grad = True
        for _ in range(args.l_steps):
            errRecon = mse(netG(z), x)
            grad = torch.autograd.grad(errRecon, z)[0]
            z.data = z.data - 0.5 * args.l_step_size * args.l_step_size * (
                grad / args.sig / args.sig + 1.0 / (1.0 * 1.0) * z.data) + args.n_step_size * draws.randn_like(z).data
        return z.detach()

    def langevin_x(x):
        x = x.clone().detach()
        x.requires_grad = True
        for _ in range(args.e_l_steps):
            energy = netE(x).sum()
            grad = torch.autograd.grad(energy, x)[0]
            x.data = x.data - 0.5 * args.e_l_step_size * args.e_l_step_size * grad
            x.data = x.data + args.e_n_step_size * draws.randn_like(x).data
        return x.detach()

    optG = torch.optim.Adam(netG.parameters(), lr=args.lrG, weight_decay=args.g_decay, betas=args.betas)
    optE = torch.optim.Adam(netE.parameters(), lr=args.lrE, weight_decay=args.e_decay, betas=args.betas)
    optI = torch.optim.Adam(netI.parameters(), lr=args.lrI, weight_decay=args.i_decay, betas=args.betas)
    mcmc_temp = (args.e_n_step_size / args.e_l_step_size) ** 2
    batch_size = x.shape[0]

    noise = draws.randn(batch_size, args.nz)
    samples = netG(noise)
    samples_corr = langevin_x(samples)
    optG.zero_grad()
    infer_z_mu_true, infer_z_log_sigma_true = netI(x)
    z_input = reparametrize(infer_z_mu_true, infer_z_log_sigma_true)
    z_input_corr = langevin_z(z_input, x)
    inputV_recon = netG(z_input_corr.detach())
    errRecon = mse(inputV_recon, x) / batch_size
    errSample = mse(samples, samples_corr) / batch_size
    errG = args.Gfactor * errRecon + args.Sfactor * errSample
    errG.backward()
    optG.step()
    with torch.no_grad():
        netE(x).squeeze().mean()

    optI.zero_grad()
    neg_log_q_z = torch.mean(diag_normal_NLL(z_input_corr, infer_z_mu_true, infer_z_log_sigma_true))
    infer_z_mu_gen, infer_z_log_sigma_gen = netI(samples_corr)
    errLatent = torch.mean(diag_normal_NLL(noise, infer_z_mu_gen, infer_z_log_sigma_gen))
    errI = args.Gfactor * neg_log_q_z + args.Ifactor * errLatent
    errI.backward()
    optI.step()

    optE.zero_grad()
    E_T = torch.mean(netE(x).squeeze())
    samples = netG(noise)
    samples = langevin_x(samples)  # fine_tune
    E_F = torch.mean(netE(samples.detach()).squeeze())
    errE = E_T - E_F
    (errE / mcmc_temp).backward()  # use_temp
    optE.step()
    draws.assert_all_taken()
    assert args.use_temp and args.fine_tune
    assert_same_losses(out, {"errG": errG, "errRecon": errRecon, "errSample": errSample, "errI": errI,
                             "neg_log_q_z": neg_log_q_z, "errLatent": errLatent, "errE": errE, "E_T": E_T,
                             "E_F": E_F})
    assert_same_state(m.generator, netG, "generator")
    assert_same_state(m.ebm, netE, "ebm")
    assert_same_state(m.inference, netI, "inference")
