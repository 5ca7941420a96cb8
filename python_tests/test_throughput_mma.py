"""The throughput path's tensor-core GEMM (csrc/core/tile_mma.h: mma.sync m16n8k8 tf32 / m16n8k16 bf16, fp32
accumulate) run lane by lane through the emulation (hebm::_latent_langevin_emulation with precision=1 / 2):
the accuracy rule of docs/CUDA_KERNELS.md (a reduced-precision chain's error against float64 is at most 2x the
eager chain's at the same precision, reference.matmul_precision, same noise) on the LEBM, joint (z- and
u-ladder), diffusion (time heads, per-chain timesteps) and odd-width programs; the fp32-accumulate structure
(operands exact in bf16 give the fp32 answer); the bf16 kernel's packed k-pair weights (against torch's bf16
rounding; the chains unchanged bit for bit when the weights are rounded beforehand); the chains' moments with the
kernel's own Philox noise; the plan and its errors. The panels are prefetched by cp.async (tf32 two buffers, bf16
three): the emulation reports a copy into a buffer still being read, a read of a copy in flight and a read of a
landed copy with no barrier since as errors, so every test here also checks the prefetch's waits and barriers."""
import copy

import pytest
import torch

import hebm_ext as H
from hebm_ext import _C
from hebm_ext.sampling import program as P
from hebm_ext.sampling.reference import PRECISIONS, round_to
from helpers import assert_moments, joint_prior, lebm_prior, moment_problem, multi_head_prior, sharpen

THROUGHPUT = 4  # core::PATH_THROUGHPUT
ONE_SM = [1, 232448, 9]


def emulate(prior, y0, schedule, precision, *, noise=None, cond=None, timesteps=None, seed=None, path="throughput",
            threads=128, tile=16, device=ONE_SM, built=None, banks=False):
    params, program = built or P.build_program(prior, y0.dtype, y0.device)
    empty = y0.new_empty(0)
    rng = torch.tensor([seed or 0, 0], dtype=torch.int64)
    ts = timesteps if timesteps is not None else torch.empty(0, dtype=torch.int64)
    out, tr, st = torch.ops.hebm._latent_langevin_emulation(
        y0, cond if cond is not None else empty, params, program, schedule.coefficients(), list(schedule.K), ts,
        noise if noise is not None else empty, rng, False, path, threads, tile, 0, banks, list(device),
        PRECISIONS.index(precision))
    return out, st.tolist()


def _program(name):
    """(float64 prior, schedule, D, extra sample_prior kwargs, chains)."""
    torch.manual_seed(4)
    if name == "lebm":
        return lebm_prior("lrelu", torch.float64, in_dim=100, hidden=200, depth=2), H.LangevinSchedule.lebm(
            steps=10), 100, {}, 40  # 40 chains: tiles of 16, 16 and a partial 8
    if name == "odd":  # odd widths: K = 37 (an odd last k-pair), N = K = 45 (odd rows paired with zero)
        return lebm_prior("gelu", torch.float64, in_dim=37, hidden=45, depth=2), H.LangevinSchedule.lebm(
            steps=4), 37, {}, 32
    if name == "wide":  # 300 inputs: a full 256-input pass and a 44-input one; 140 (> 128 in one pass)
        return lebm_prior("gelu", torch.float64, in_dim=300, hidden=140, depth=2), H.LangevinSchedule.lebm(
            steps=4), 300, {}, 16
    if name in ("joint_z", "joint_u"):
        return joint_prior(name[-1], torch.float64), H.LangevinSchedule.lebm(steps=4), 228, {}, 16
    prior = multi_head_prior(torch.float64, time_steps=3, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 3, 2], b_square=1e-3)
    if name == "diffusion":
        return prior, sch, 48, {}, 32
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 3, (32,), generator=g)
    return prior, sch, 48, {"timesteps": t, "cond": "half"}, 32  # per-chain timesteps with a condition


def accuracy_rule(name, precision, chains=None, **emu):
    """The accuracy rule on program `name` (_program; its first `chains` chains when given) through the emulation
    (emulate's keywords: the path, tile, threads): mean |kernel - float64| <= 2 mean |eager at the same precision -
    float64| (same noise), and the kernel does round (its error is well above the fp32 kernel's). Returns the
    reduced-precision run's stats."""
    p64, sch, D, kw, B = _program(name)
    if chains is not None:
        B = chains
        kw = {k: (v[:B] if k == "timesteps" else v) for k, v in kw.items()}
    p32 = copy.deepcopy(p64).float()
    torch.manual_seed(6)
    y0 = torch.randn(B, D, dtype=torch.float64)
    S = sch.max_steps if "timesteps" in kw else sch.total_steps
    noise = torch.randn(S, B, D, dtype=torch.float64)
    kw64 = dict(kw)
    if kw.get("cond") == "half":
        kw64["cond"] = 0.5 * y0
    kw32 = {k: (v.float() if k == "cond" else v) for k, v in kw64.items()}
    exact = H.sample_prior(p64, y0, sch, noise=noise, backend="reference", **kw64)
    eager = H.sample_prior(p32, y0.float(), sch, noise=noise.float(), backend="reference", precision=precision,
                           **kw32)
    out, st = emulate(p32, y0.float(), sch, precision, noise=noise.float(), cond=kw32.get("cond"),
                      timesteps=kw32.get("timesteps"), **emu)
    fp32, _ = emulate(p32, y0.float(), sch, "fp32", noise=noise.float(), cond=kw32.get("cond"),
                      timesteps=kw32.get("timesteps"), **emu)
    err = lambda y: (y.double() - exact).abs().mean().item()  # noqa: E731
    e_kernel, e_eager, e_fp32 = err(out), err(eager), err(fp32)
    assert torch.isfinite(out).all()
    print(f"accuracy rule {name} {precision} {emu}: kernel / eager error vs float64 = {e_kernel / e_eager:.2f}")
    assert e_kernel <= 2 * e_eager, (name, precision, e_kernel, e_eager)
    assert e_kernel > 5 * e_fp32, (name, precision, e_kernel, e_fp32)  # the operands are rounded
    return st


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("name", ["lebm", "odd", "joint_z", "joint_u", "diffusion", "diffusion_per_chain"])
def test_accuracy_rule_against_float64(name, precision):
    """The accuracy rule (accuracy_rule) on the throughput path, tiles of 16."""
    st = accuracy_rule(name, precision)
    assert (st[0], st[1]) == (THROUGHPUT, 16)


def _linears(program):
    """(in, out, w offset) of each linear of a program's ints (csrc/core/program.h, version 2)."""
    program = [int(v) for v in program]
    at = 9 + 2 * program[3] + 7 * program[7]
    return [tuple(program[at + 7 * j: at + 7 * j + 3]) for j in range(program[8])]


def _pair_words(lo, hi):
    """int64 words of two float tensors rounded to bf16 by torch (round to nearest even), lo in bits 0-15."""
    bits = lambda x: x.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF  # noqa: E731
    return bits(lo) | (bits(hi) << 16)


def test_bf16_pairs_packing():
    """The bf16 kernel's packed weights (tile_mma.h bf16_pair_word: what the launcher's pack kernel and the
    emulation write) against torch's bf16 rounding: per linear a forward block of W's k-pairs along its rows and
    a backward block pairing W's rows, the lower k in bits 0-15, an odd tail's high half zero, the forward rows
    and each block padded to 8 words (32-byte sectors); ties round to even (1 + 2^-8 -> 1, 1 + 3 2^-8 ->
    1 + 2^-6, and negated)."""
    torch.manual_seed(12)
    prior = lebm_prior("gelu", torch.float32, in_dim=37, hidden=45, depth=2)
    params, program = P.build_program(prior, torch.float32, "cpu")
    lins = _linears(program)
    w0 = lins[0][2]
    params[w0:w0 + 4] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), -(1 + 3 * 2**-8)])
    words = _C.latent_bf16_pairs(program, params).to(torch.int64) & 0xFFFFFFFF
    assert words[0].item() == 0x3F823F80 and words[1].item() == 0xBF82BF80  # (1, 1 + 2^-6), negated
    expect = []
    pad = torch.nn.functional.pad
    for i, o, w in lins:
        W = params[w:w + o * i].view(o, i)
        Wf = pad(W, (0, i % 2))        # forward: k-pairs along the rows, rows padded to 8 words (a sector)
        fwd = _pair_words(Wf[:, 0::2], Wf[:, 1::2])
        fwd = pad(fwd, (0, -fwd.shape[1] % 8))
        Wb = pad(W, (0, 0, 0, o % 2))  # backward: rows 2q, 2q + 1 paired
        for blk in (fwd.flatten(), _pair_words(Wb[0::2], Wb[1::2]).flatten()):
            expect.append(pad(blk, (0, -blk.numel() % 8)))
    assert torch.equal(words, torch.cat(expect))


@pytest.mark.parametrize("name", ["lebm", "odd"])
def test_bf16_weights_rounded_once(name):
    """The bf16 GEMMs see the weights only as their packed bf16 words: the same chains bit for bit when the
    GEMMs' weights are rounded to bf16 beforehand (rounding once at packing is rounding at fragment load; the
    heads' output row, read in fp32 by warp_energy and the backward's dh * w_out, is left as it is). LEBM in tiles
    of 16 (a partial third tile) and odd widths (odd k-pairs, the backward's word copies)."""
    p64, sch, D, _, B = _program(name)
    p32 = copy.deepcopy(p64).float()
    torch.manual_seed(7)
    y0 = torch.randn(B, D)
    noise = torch.randn(sch.total_steps, B, D)
    params, program = P.build_program(p32, torch.float32, "cpu")
    out, _ = emulate(p32, y0, sch, "bf16", noise=noise, built=(params, program))
    rounded = params.clone()
    for i, o, w in _linears(program)[:-1]:  # every linear but the head's output row
        rounded[w:w + o * i] = round_to(params[w:w + o * i], "bf16")
    assert not torch.equal(rounded, params)
    again, _ = emulate(p32, y0, sch, "bf16", noise=noise, built=(rounded, program))
    assert torch.equal(out, again)


def test_bf16_kernel_against_cpu_autocast():
    """LEBM at bf16, the issue's literal rule: the kernel's error against float64 is at most 2x that of eager
    torch.autocast("cpu", bfloat16) (which rounds the linears' operands and outputs to bf16)."""
    p64, sch, D, _, B = _program("lebm")
    p32 = copy.deepcopy(p64).float()
    torch.manual_seed(6)
    y0 = torch.randn(B, D, dtype=torch.float64)
    noise = torch.randn(sch.total_steps, B, D, dtype=torch.float64)
    exact = H.sample_prior(p64, y0, sch, noise=noise, backend="reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = H.sample_prior(p32, y0.float(), sch, noise=noise.float(), backend="reference", check_finite=False)
    out, _ = emulate(p32, y0.float(), sch, "bf16", noise=noise.float())
    e_auto = (auto.double() - exact).abs().mean().item()
    e_kernel = (out.double() - exact).abs().mean().item()
    assert e_kernel <= 2 * e_auto, (e_kernel, e_auto)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_exact_operands_give_the_fp32_answer(precision):
    """One step of a one-hidden-layer LEBM whose matmul operands are exact in bf16 (and so in tf32): y0 and the
    weights rounded to bf16, LReLU slope 1/4 and w_out in bf16 (so the backward's delta dh * w_out is exact too).
    Then the products are exact and only the fp32 accumulation rounds: the kernel's energy gradient equals the
    float64 reference's to fp32 accuracy. The same with weights that are not exact in the format is off by the
    format's rounding (so the check can tell)."""
    torch.manual_seed(11)
    head = sharpen(H.EnergyMLP(100, 200, 1, activation="lrelu", slope=0.25), 3.0)
    with torch.no_grad():
        for p_ in head.parameters():
            p_.copy_(round_to(p_, "bf16"))
    sch = H.LangevinSchedule.lebm(steps=1, step_size=1.0)
    y0 = round_to(torch.randn(32, 100), "bf16")
    noise = torch.zeros(1, 32, 100)
    flat = H.sample_prior(H.LatentEBMPrior([100], []).double(), y0.double(), sch, noise=noise.double(),
                          backend="reference")
    errs = []
    for perturb in (0.0, 1e-3):
        h = copy.deepcopy(head)
        with torch.no_grad():
            for p_ in h.parameters():
                p_.add_(perturb * torch.randn_like(p_) * p_.abs())  # relative 1e-3: off the format's grid
        prior = H.LatentEBMPrior([100], [(h, 0)])
        ref = H.sample_prior(copy.deepcopy(prior).double(), y0.double(), sch, noise=noise.double(),
                             backend="reference")
        energy_part = (ref - flat).abs().max().item()  # what the energy's gradient moves the chains by
        out, _ = emulate(prior.float(), y0, sch, precision, noise=noise)
        errs.append((out.double() - ref).abs().max().item() / energy_part)
    assert errs[0] < 1e-5, errs   # fp32 accumulation of exact products
    assert errs[1] > 1e-4, errs   # rounded operands: tf32 2^-11, bf16 2^-8 relative


@pytest.mark.parametrize("precision", ["bf16"])
def test_own_noise_moments_match_the_density(precision):
    """Statistical: the throughput path at bf16 with its own Philox noise on a 2-D energy; the chains' first and
    second moments against the density's (normalised on a grid), within 4.5 standard errors (bf16's rounding of
    the energy moves them by ~1e-3, far below one standard error)."""
    prior, y0, sch, exact, base = moment_problem()
    y, st = emulate(prior, y0, sch, precision, seed=2024, threads=32, tile=32, device=[4, 232448, 9])
    assert (st[0], st[1]) == (THROUGHPUT, 32)
    assert_moments(y, exact, base)


@pytest.mark.parametrize("precision, ideal, most, conflicted", [("tf32", 12776, 16800, 3700),
                                                                  ("bf16", 9022, 10800, 1400)])
def test_lebm_tile_step_wavefronts(precision, ideal, most, conflicted):
    """Shared-memory wavefronts of one 32-chain LEBM tile-step on 256 threads (the emulation's bank model, one step
    more minus one less; cp.async's shared writes are not counted): tf32 16,596 (12,776 without conflicts; 3,676
    conflicted instructions), bf16 10,660 (9,022; 1,382). The conflicts left are tf32's A fragments (rows lda = 100
    / 200 words apart: 2-way), bf16's at lda = 100 (its k-pairs are one 8-byte load each, load_a_bf16: conflict-free
    at lda = 200; two 4-byte loads were 2-way there, 13,060 wavefronts and 3,974 conflicted instructions) and the
    mma epilogues' scalar accesses. Both panels' row stride is mma_panel_ld (200 =
    8 mod 32: the 4 rows of a B fragment in disjoint banks); tf32 on the fp32 GEMM's stride (212 = 20 mod 32: rows
    t and t + 3 share banks) counted 24,290 with the forward staging's earlier lane map (7,444 more: the 2-way B
    loads)."""
    torch.manual_seed(4)
    prior = lebm_prior("lrelu", torch.float32)
    y0 = torch.randn(32, 100)
    noise = torch.randn(2, 32, 100)
    st = [emulate(prior, y0, H.LangevinSchedule.lebm(steps=s), precision, noise=noise[2 - s:], threads=256, tile=32,
                  banks=True)[1] for s in (1, 2)]
    wavefronts, ideal_wavefronts, n_conflicted = (st[1][i] - st[0][i] for i in (10, 11, 12))
    assert ideal_wavefronts == ideal, (wavefronts, ideal_wavefronts, n_conflicted)
    assert wavefronts <= most and n_conflicted <= conflicted, (wavefronts, ideal_wavefronts, n_conflicted)


def test_plan_and_errors():
    """tf32 / bf16 take the throughput path at large B, in tiles of 16 or 32 chains (small B: the latency paths,
    test_latency_precision.py); what cannot run them says why, naming the precision."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    for prec in (1, 2):
        (path, tile, _, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 65536, 4, [], prec)
        assert (path, tile, threads, tiles) == (THROUGHPUT, 32, 256, 2048) and why == ""
        with pytest.raises(RuntimeError, match="precision='(tf32|bf16)' needs compute capability 8.0 .* 7.x"):
            _C.latent_plan(program, params.numel(), 100, 4, [132, 232448, 7], prec)
    assert _C.latent_plan(program, params.numel(), 100, 4, [])[0][0] == 2  # fp32: the cluster path, as before
    y0 = torch.randn(20, 100)
    sch = H.LangevinSchedule.lebm(steps=1)
    noise = torch.randn(1, 20, 100)
    with pytest.raises(RuntimeError, match="precision='tf32' runs the throughput path on tiles of a multiple of 16"):
        emulate(prior, y0, sch, "tf32", noise=noise, tile=8)
    with pytest.raises(RuntimeError, match="precision=2 rounds float32 matmul operands .* got Double"):
        emulate(prior.double(), y0.double(), sch, "bf16", noise=noise.double())
    # a program whose 16 chains do not fit with the panels
    big = lebm_prior("lrelu", torch.float32, in_dim=100, hidden=1200, depth=2)
    params, program = P.build_program(big, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="precision='bf16' .* not even 16 chains of this program fit"):
        _C.latent_plan(program, params.numel(), 100, 4, [], 2)
