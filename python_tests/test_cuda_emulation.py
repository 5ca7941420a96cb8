"""The CUDA kernels' paths executed lane by lane on the CPU (hebm::_latent_langevin_emulation, csrc/cpu/
simt_emulation.h): every thread of a block (and of a 2-block cluster) runs as a fiber with the GPU's shuffle,
barrier, distributed-shared-memory and cp.async semantics and bounds-checked shared memory. Each path (v1 staged, v2
resident, v2 cluster, v2 streamed) is compared with the eager reference on the same explicit noise, with the CPU
kernel on the same Philox seed, and statistically; test_cuda.py runs the real kernels where there is a GPU."""
import math

import pytest
import torch

import hebm_ext as H
from hebm_ext import _C
from hebm_ext.sampling import program as P
from helpers import assert_moments, deep_ladder_prior, joint_prior, lebm_prior, moment_problem, multi_head_prior

PATHS = ["staged", "resident", "cluster", "streamed", "cluster4"]  # cluster: 2 blocks, cluster4: 4 blocks
PATH_CODE = {"staged": 0, "resident": 1, "cluster": 2, "streamed": 3, "cluster4": 2}
STREAM_ROWS = 5  # rows per streamed chunk in the tests: many chunks per layer, a partial last one, both stages
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
STAT = ["path", "tile", "cluster", "threads", "smem_bytes", "block_barriers", "cluster_barriers", "named_barriers",
        "warp_collectives", "smem_instructions", "wavefronts", "ideal_wavefronts", "conflicted", "mbarrier_phases"]


def emulate(prior, y0, schedule, path, *, noise=None, cond=None, timesteps=None, seed=None, trace=False,
            threads=64, tile=0, stage_rows=0, banks=False, device=()):
    params, program = P.build_program(prior, y0.dtype, y0.device)
    if path == "streamed" and stage_rows == 0:
        stage_rows = STREAM_ROWS
    empty = y0.new_empty(0)
    rng = torch.tensor([seed or 0, 0], dtype=torch.int64)
    ts = timesteps if timesteps is not None else torch.empty(0, dtype=torch.int64)
    out, tr, st = torch.ops.hebm._latent_langevin_emulation(
        y0, cond if cond is not None else empty, params, program, schedule.coefficients(), list(schedule.K), ts,
        noise if noise is not None else empty, rng, trace, path, threads, tile, stage_rows, banks, list(device))
    return out, tr, dict(zip(STAT, st.tolist()))


def tiles_for(path):
    return [3] if path == "staged" else [1, 4]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("path", PATHS)
def test_gaussian_base_lebm_shape(path, dtype):
    """LEBM's head (in -> hidden -> hidden -> 1, Gaussian base), a partial last tile."""
    prior = lebm_prior("lrelu", dtype, in_dim=40, hidden=72, depth=2)
    sch = H.LangevinSchedule.lebm(steps=6)
    y0 = torch.randn(7, 40, dtype=dtype)
    noise = torch.randn(6, 7, 40, dtype=dtype)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    for tile in tiles_for(path):
        out, _, st = emulate(prior, y0, sch, path, noise=noise, tile=tile)
        assert st["path"] == PATH_CODE[path] and st["tile"] == tile
        assert st["cluster"] == {"cluster": 2, "cluster4": 4}.get(path, 1)
        assert (out - ref).abs().max() < TOL[dtype], (path, tile)
    flat = H.sample_prior(H.LatentEBMPrior([40], []).to(dtype), y0, sch, noise=noise, backend="reference")
    assert (flat - ref).abs().max() > 0.05  # the energy matters


@pytest.mark.parametrize("path", PATHS)
def test_heads_activations_wide_inputs(path):
    """Five heads (every activation, a linear head, an 'all' head) over three layers; a 300-wide input (more than
    the 256 inputs a lane pass holds in registers) and hidden widths that are not multiples of 4 or 32."""
    prior = multi_head_prior(torch.float64)
    sch = H.LangevinSchedule.lebm(steps=4, step_size=0.3)
    y0 = torch.randn(5, 48, dtype=torch.float64)
    noise = torch.randn(4, 5, 48, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    for tile in tiles_for(path):
        out, _, _ = emulate(prior, y0, sch, path, noise=noise, tile=tile, threads=96)
        assert (out - ref).abs().max() < 1e-10, (path, tile)
    wide = lebm_prior("gelu", torch.float64, in_dim=300, hidden=37, depth=1, scale=1.0)
    y0 = torch.randn(3, 300, dtype=torch.float64)
    noise = torch.randn(4, 3, 300, dtype=torch.float64)
    ref = H.sample_prior(wide, y0, sch, noise=noise, backend="reference")
    out, _, _ = emulate(wide, y0, sch, path, noise=noise, tile=2 if path != "staged" else 3)
    assert (out - ref).abs().max() < 1e-10


@pytest.mark.parametrize("path", PATHS)
def test_time_conditioned_per_chain_and_trace(path):
    prior = multi_head_prior(torch.float64, time_steps=3, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 3, 2], b_square=1e-3)
    y0 = torch.randn(6, 48, dtype=torch.float64)
    noise = torch.randn(7, 6, 48, dtype=torch.float64)
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", trace=True)
    tile = 4 if path != "staged" else 3
    out, te, _ = emulate(prior, y0, sch, path, noise=noise, trace=True, tile=tile)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9)
    t = torch.tensor([2, 0, 1, 1, 0, 2])
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise[:3], backend="reference", timesteps=t, cond=y0 * 0.5,
                             trace=True)
    out, te, _ = emulate(prior, y0, sch, path, noise=noise[:3], timesteps=t, cond=y0 * 0.5, trace=True, tile=tile)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("path", PATHS)
def test_flat_base_gao_form(path):
    prior = multi_head_prior(torch.float64, time_steps=4, sigma=math.inf, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(4, steps=2, b_square=1e-3, form="gao")
    y0 = torch.randn(5, 48, dtype=torch.float64)
    noise = torch.randn(8, 5, 48, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _, _ = emulate(prior, y0, sch, path, noise=noise, tile=2 if path != "staged" else 3)
    assert (out - ref).abs().max() < 1e-10


@pytest.mark.parametrize("param", ["z", "u"])
@pytest.mark.parametrize("path", PATHS)
def test_ladders(path, param):
    """The Gaussian ladder (4 layers, soft clamp, time-conditioned heads, T = 3), in float64 and float32."""
    for dtype in (torch.float64, torch.float32):
        prior = deep_ladder_prior(param, dtype, time_steps=3, out_scale=0.05)
        sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 1, 2], b_square=1e-3)
        y0 = torch.randn(5, 36, dtype=dtype)
        noise = torch.randn(5, 5, 36, dtype=dtype)
        ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
        out, _, _ = emulate(prior, y0, sch, path, noise=noise, tile=3)
        assert (out - ref).abs().max() < TOL[dtype], dtype


@pytest.mark.parametrize("path", PATHS)
def test_same_seed_as_the_cpu_kernel(path):
    """The kernels' own Philox noise (csrc/core/philox.h addressing) equals the CPU kernel's."""
    for dtype in (torch.float64, torch.float32):
        prior = multi_head_prior(dtype)
        sch = H.LangevinSchedule.lebm(steps=4, step_size=0.3)
        y0 = torch.randn(6, 48, dtype=dtype)
        cpu = H.sample_prior(prior, y0, sch, seed=4242, backend="fused")
        out, _, _ = emulate(prior, y0, sch, path, seed=4242, tile=4 if path != "staged" else 3)
        assert (out - cpu).abs().max() < TOL[dtype]
        other = H.sample_prior(prior, y0, sch, seed=4243, backend="fused")
        assert (other - cpu).abs().max() > 0.1


def test_joint_prior_on_the_cluster():
    """The joint prior's shapes (a 4 x 200 conditional, 128 -> 200 x 3 and 100 -> 100 x 2 heads) on a cluster."""
    for param in ("z", "u"):
        prior = joint_prior(param, torch.float64)
        sch = H.LangevinSchedule.lebm(steps=2)
        y0 = torch.randn(2, 228, dtype=torch.float64)
        noise = torch.randn(2, 2, 228, dtype=torch.float64)
        ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
        out, _, st = emulate(prior, y0, sch, "cluster", noise=noise, tile=2, threads=128)
        assert st["cluster"] == 2
        assert (out - ref).abs().max() < 1e-10


def test_lebm_dispatch_barriers_and_banks():
    """LEBM 100-200-200-1 on an H200: its 241 KB of weights take a cluster (4 blocks at B = 100:
    test_cuda_cluster4.py; the 2-block step here); at most 6 barriers per step (3 mbarrier exchanges, 1 block barrier
    - the update's: the last hidden layer's forward and backward run in one pass, WarpEngine::forward_backward - and
    the 2 backwards' named barriers on the cluster, 4 + 2 on one block), no bank conflict on either v2 path."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    (path, tile, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 100, 4, [])
    assert (path, cluster, tile, tiles) == (2, 4, 4, 25) and smem <= 232448 and why == ""
    (path, *_), why = _C.latent_plan(program, params.numel(), 100, 4, [108, 166912, 8])  # an A100: no clusters
    assert path == 3 and why == ""  # streamed (cp.async from compute capability 8.0)
    steps = 3
    sch = H.LangevinSchedule.lebm(steps=steps)
    y0 = torch.randn(2, 100)
    noise = torch.randn(steps, 2, 100)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _, st = emulate(prior, y0, sch, "cluster", noise=noise, threads=256, banks=True, tile=2)
    assert (st["path"], st["tile"], st["cluster"]) == (2, 2, 2)
    assert (out - ref).abs().max() < 1e-4
    # Cluster barriers: after the loads, before the exit. Exchanges (one mbarrier phase per block each): 2 outside
    # the steps (timestep start, timestep end); per step the first forward and the 2 backwards (each backward's
    # partial sums stored into both blocks before its one exchange); block barriers: the update's (the fused last
    # hidden layer has none; the energy waits for its backward's exchange)
    assert st["cluster_barriers"] == 2, st
    assert (st["mbarrier_phases"] / 2 - 2) / steps == 3, st
    assert (st["block_barriers"] / 2 - 1) / steps == 1, st  # per block of the 2 (1 outside: after the zeroing)
    assert st["named_barriers"] / 2 / steps == 2, st  # each backward's: its warps' partial-sum slots written
    # the steps are conflict-free: one step more adds shared-memory instructions but no conflicted one
    one = emulate(prior, y0, H.LangevinSchedule.lebm(steps=steps - 1), "cluster", noise=noise[1:], threads=256,
                  banks=True, tile=2)[2]
    assert st["smem_instructions"] - one["smem_instructions"] > 1000, (st, one)
    assert st["conflicted"] == one["conflicted"] and st["conflicted"] <= 2, (st, one)
    small = lebm_prior("lrelu", torch.float32, in_dim=64, hidden=128, depth=2)
    y0 = torch.randn(3, 64)
    out, _, st = emulate(small, y0, sch, "auto", noise=torch.randn(steps, 3, 64), threads=256, banks=True, tile=3)
    assert (st["path"], st["cluster"]) == (1, 1)
    assert (st["block_barriers"] - 4) / steps == 4 and st["named_barriers"] / steps == 2, st
    # 3 chains of a 128-wide layer: the forward's finishing lanes store (row t, chain c) at c * 128 + t, so one
    # store of 2 rows x 3 chains is 3 wavefronts (3 words per bank) where it would ideally be 1 (the same 3
    # wavefronts per 2 rows the earlier one-lane-per-chain stores cost as 3 instructions): 2 excess wavefronts
    # per H / DH store, 8 batches per warp of the first layer (untraced, the last hidden layer stores neither: its
    # forward and backward run in one pass, the deltas in registers, and its H is read by the energy alone, which
    # only the trace reads); every other access is conflict-free
    epilogue = 2 * 2 * 8 * 8 * steps  # excess x stores (H and DH of the first layer) x batches x warps x steps
    assert st["wavefronts"] - st["ideal_wavefronts"] == epilogue, st


def test_staged_path_any_team_and_chunk():
    prior = multi_head_prior(torch.float64)
    sch = H.LangevinSchedule.lebm(steps=3, step_size=0.3)
    y0 = torch.randn(9, 48, dtype=torch.float64)
    noise = torch.randn(3, 9, 48, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    for threads, tile, stage_rows in [(32, 1, 1), (96, 5, 3), (64, 32, 64)]:
        out, _, _ = emulate(prior, y0, sch, "staged", noise=noise, threads=threads, tile=tile, stage_rows=stage_rows)
        assert (out - ref).abs().max() < 1e-10, (threads, tile, stage_rows)


def test_long_chains_match_the_density():
    """Statistical: the resident path with its own Philox noise, 2-D energy; the chains' first and second moments
    against the density's (normalised on a grid), within 4.5 standard errors."""
    prior, y0, sch, exact, base = moment_problem()
    y, _, _ = emulate(prior, y0, sch, "resident", seed=2024, tile=4, threads=32)
    assert_moments(y, exact, base)


# ------------------------------------------------------------------------------ the primitive layer itself
def test_shuffles_follow_the_programming_guide():
    s = _C.simt_selftest("shuffles")[0, :64 * 6].reshape(64, 6)
    lane = torch.arange(64) % 32
    v = (lane + 100 * (torch.arange(64) // 32)).float()
    base = v - lane  # the warp's lane-0 value
    torch.testing.assert_close(s[:, 0], base + (lane ^ 1))
    torch.testing.assert_close(s[:, 1], torch.where(lane + 3 < 32, v + 3, v))  # past the warp: own value
    torch.testing.assert_close(s[:, 2], torch.where(lane >= 5, v - 5, v))
    torch.testing.assert_close(s[:, 3], base + 7)
    warp_total = base * 32 + 496
    torch.testing.assert_close(s[:, 4], warp_total)
    torch.testing.assert_close(s[:, 5], 2 * warp_total)


def test_named_barrier_and_cluster_shared_memory():
    s = _C.simt_selftest("named")[0]
    torch.testing.assert_close(s[128:192], torch.arange(1, 65).float())  # warps 2-3 read what warps 0-1 wrote
    c = _C.simt_selftest("cluster")
    t = torch.arange(64).float()
    torch.testing.assert_close(c[0, 64:128], 2 * t)  # block 0 reads block 1's (rank + 1) * tid through DSMEM
    torch.testing.assert_close(c[1, 64:128], t)


def test_split_cluster_barrier():
    """barrier.cluster.arrive / wait: after the wait every block reads its peer's pre-arrive writes; a read of the
    peer's store between arrive and wait (premature) is reported by the emulation's cluster-order check (an access
    to a word another block accessed needs a completed cluster barrier between them); misuse is reported."""
    s = _C.simt_selftest("split")
    t = torch.arange(64).float()
    for ph in range(2):
        for r in range(2):
            peer = 1000 * ph + (2 - r) * t + 1
            torch.testing.assert_close(s[r, 128 + ph * 128:192 + ph * 128], peer)  # after the wait
    with pytest.raises(RuntimeError, match="block rank [01] accessed with no cluster barrier completed since"):
        _C.simt_selftest("split_early")
    with pytest.raises(RuntimeError, match="cluster_arrive twice without cluster_wait"):
        _C.simt_selftest("arrive_twice")
    with pytest.raises(RuntimeError, match="cluster_wait without cluster_arrive"):
        _C.simt_selftest("wait_alone")
    with pytest.raises(RuntimeError, match="exited between cluster_arrive and cluster_wait"):
        _C.simt_selftest("arrive_exit")


def test_mbarrier_exchange():
    """mbarriers (mbar_init / mbar_arrive_cluster / mbar_wait_parity) as the cluster WarpEngine's exchanges: two per
    block alternated, each warp arriving on both blocks' after __syncwarp, four exchanges (both parities of both).
    After each wait a block reads the peer's stores; each misuse is reported: a read before the wait and the wrong
    parity (the cluster-order check: no cluster barrier or mbarrier phase orders it), an arrive missing (deadlock,
    naming the mbarrier), an arrive without the __syncwarp (the other lanes' stores are not released), one slot for
    every exchange (the peer's next store over a slot not read yet)."""
    s = _C.simt_selftest("mbar")
    t = torch.arange(64).float()
    for n in range(4):
        for r in range(2):
            torch.testing.assert_close(s[r, 512 + 64 * n:576 + 64 * n], 1000 * n + (2 - r) * t + 1)
    order = "no chain of mbarrier phases"
    for variant in ("mbar_early", "mbar_parity", "mbar_nosyncwarp", "mbar_war"):
        with pytest.raises(RuntimeError, match=order):
            _C.simt_selftest(variant)
    with pytest.raises(RuntimeError, match="deadlock.*wait on the mbarrier at shared byte 4000 of block [01] "
                                           "\\(phase 0 in progress, 1 of 4 arrivals pending\\)"):
        _C.simt_selftest("mbar_noarrive")


def test_emulation_diagnoses():
    with pytest.raises(RuntimeError, match="out of bounds: bytes \\[1024, 1028\\)"):
        _C.simt_selftest("oob")
    with pytest.raises(RuntimeError, match="warp divergence"):
        _C.simt_selftest("diverge")
    with pytest.raises(RuntimeError, match="deadlock"):
        _C.simt_selftest("deadlock")


def test_bank_model():
    """Wavefronts of one warp access: stride 1 / 2 / 32 (8 words in one bank) / 33 words, a broadcast, 16-byte
    vectors contiguous and at stride 2 (32 banks of 4 bytes, 128-byte phases)."""
    got = _C.simt_selftest("banks").tolist()
    assert got == [[1, 1], [2, 1], [8, 1], [1, 1], [1, 1], [4, 4], [8, 4]]


# ------------------------------------------------------------------------------ the throughput path (large B)
THROUGHPUT = 4  # core::PATH_THROUGHPUT
ONE_SM = [1, 232448, 9]  # one persistent block loops over every tile


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_throughput_lebm(dtype):
    """LEBM 100-200-200-1 (panels padded 100 -> 112, 200 -> 208) on the register-tiled GEMMs: 13 chains in tiles
    of 8 (a partial tile) on one persistent block, then on two."""
    prior = lebm_prior("lrelu", dtype)
    sch = H.LangevinSchedule.lebm(steps=2)
    y0 = torch.randn(13, 100, dtype=dtype)
    noise = torch.randn(2, 13, 100, dtype=dtype)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    for device in (ONE_SM, [2, 232448, 9]):
        out, _, st = emulate(prior, y0, sch, "throughput", noise=noise, tile=8, device=device)
        assert (st["path"], st["tile"], st["cluster"]) == (THROUGHPUT, 8, 1)
        assert (out - ref).abs().max() < TOL[dtype], device
    assert (H.sample_prior(H.LatentEBMPrior([100], []).to(dtype), y0, sch, noise=noise, backend="reference")
            - ref).abs().max() > 0.005  # the energy matters (2 steps)


def test_throughput_heads_time_conditioning_per_chain_trace():
    """Five heads (every shape: a 3-hidden-layer head uses both delta buffers, a linear head, an 'all' head),
    time-conditioned, T = 3, with the trace; then per-chain timesteps with a condition."""
    prior = multi_head_prior(torch.float64, time_steps=3, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 1, 2], b_square=1e-3)
    y0 = torch.randn(6, 48, dtype=torch.float64)
    noise = torch.randn(5, 6, 48, dtype=torch.float64)
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", trace=True)
    out, te, _ = emulate(prior, y0, sch, "throughput", noise=noise, trace=True, tile=4, device=ONE_SM)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9)
    t = torch.tensor([2, 0, 1, 1, 0, 2])
    ref, tr = H.sample_prior(prior, y0, sch, noise=noise[:2], backend="reference", timesteps=t, cond=y0 * 0.5,
                             trace=True)
    out, te, _ = emulate(prior, y0, sch, "throughput", noise=noise[:2], timesteps=t, cond=y0 * 0.5, trace=True,
                         tile=4, device=ONE_SM)
    assert (out - ref).abs().max() < 1e-10
    torch.testing.assert_close(te, tr["per_chain"], rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("param", ["z", "u"])
def test_throughput_ladders_and_joint_prior(param):
    """The diffusion-style ladder (4 layers, soft clamp, time-conditioned heads, T = 3) in float64 and float32,
    and the joint prior's shapes (a 4 x 200 conditional, 128 -> 200 x 3 and 100 -> 100 x 2 heads)."""
    for dtype in (torch.float64, torch.float32):
        prior = deep_ladder_prior(param, dtype, time_steps=3, out_scale=0.05)
        sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 1, 1], b_square=1e-3)
        y0 = torch.randn(5, 36, dtype=dtype)
        noise = torch.randn(4, 5, 36, dtype=dtype)
        ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
        out, _, _ = emulate(prior, y0, sch, "throughput", noise=noise, tile=4, device=ONE_SM)
        assert (out - ref).abs().max() < TOL[dtype], dtype
    prior = joint_prior(param, torch.float64)
    sch = H.LangevinSchedule.lebm(steps=2)
    y0 = torch.randn(4, 228, dtype=torch.float64)
    noise = torch.randn(2, 4, 228, dtype=torch.float64)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _, _ = emulate(prior, y0, sch, "throughput", noise=noise, tile=4, threads=128)
    assert (out - ref).abs().max() < 1e-10


def test_throughput_dispatch_and_seed():
    """The planner takes the throughput path beyond one wave of the latency paths (B > SMs x 4): LEBM at
    B = 65536 on an H200 in tiles of 32 chains within the 227 KB (B = 100 stays on the cluster); through the
    emulation on a 2-SM device the automatic choice runs it, with the kernels' Philox noise equal to the CPU
    kernel's."""
    prior = lebm_prior("lrelu", torch.float32)
    params, program = P.build_program(prior, torch.float32, "cpu")
    (path, tile, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), 65536, 4, [])
    assert (path, tile, cluster, threads, tiles) == (THROUGHPUT, 32, 1, 256, 2048) and smem <= 232448, smem
    assert why == ""
    assert _C.latent_plan(program, params.numel(), 528, 4, [])[0][0] == 2  # one wave of 4-chain clusters
    assert _C.latent_plan(program, params.numel(), 529, 4, [])[0][0] == THROUGHPUT
    small = multi_head_prior(torch.float32)
    sch = H.LangevinSchedule.lebm(steps=3, step_size=0.3)
    y0 = torch.randn(12, 48)
    cpu = H.sample_prior(small, y0, sch, seed=77, backend="fused")
    out, _, st = emulate(small, y0, sch, "auto", seed=77, threads=256, device=[2, 232448, 9])
    assert (st["path"], st["tile"], st["threads"]) == (THROUGHPUT, 8, 256)
    assert (out - cpu).abs().max() < 1e-4

# ---------------------------------------------------------------------------------------------------------------
# MMA fragments (csrc/core/simt.h): the rounding functions, the PTX ISA's lane layouts, the fragment helpers.

def _bits(x):
    return torch.as_tensor(x, dtype=torch.float32).view(torch.int32)


def _special_floats():
    """Random floats of every magnitude plus the cases rounding gets wrong first: exact ties (even and odd kept
    lsb), one ulp either side of a tie, subnormals, the largest finite values (overflow to infinity), +-0, inf."""
    g = torch.Generator().manual_seed(5)
    rnd = torch.randint(-2 ** 31, 2 ** 31 - 1, (20000,), generator=g, dtype=torch.int64).to(torch.int32)
    rnd = rnd[~torch.isnan(rnd.view(torch.float32))]
    base = torch.randint(0, 2 ** 31 - 1, (2000,), generator=g, dtype=torch.int64).to(torch.int32)
    base = base[base.view(torch.float32).abs() < 1e38]
    ties = []
    for low, half in ((0xFFFF, 0x8000), (0x1FFF, 0x1000)):  # bf16, tf32: the dropped bits and their half
        t = (base & ~low) | half
        ties += [t, t + 1, t - 1, t | (low + 1), (t | (low + 1)) - 1]
    fixed = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 3.3895314e38, -3.4028235e38,
                          1e-40, -1e-40, 1.4e-45, 1.1754942e-38, 65504.0], dtype=torch.float32)
    allv = torch.cat([rnd.view(torch.float32), *(t.view(torch.float32) for t in ties), fixed])
    return torch.cat([allv, -allv])


def _tf32_numpy(x):
    """tf32 rounding in numpy, written from the format (not from the C++ bit trick): 11 significant bits for normal
    numbers, the fixed quantum 2^-136 of fp32's subnormal range, round half away from zero."""
    import numpy as np
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    fin = np.isfinite(x) & (x != 0)
    m, e = np.frexp(x[fin])                            # |m| in [0.5, 1): 24 bits of m are fp32's significand
    q = np.ldexp(1.0, np.maximum(e - 11, -136))        # the tf32 ulp (the subnormal range has a fixed one)
    r = np.sign(x[fin]) * np.floor(np.abs(x[fin]) / q + 0.5) * q
    r[np.abs(r) >= 2.0 ** 128] = np.inf               # rounded past the largest finite
    out[fin] = np.copysign(r, x[fin])
    return torch.from_numpy(out).to(torch.float32)


def test_mma_rounding_is_bit_exact():
    x = _special_floats()
    ref = x.to(torch.bfloat16).to(torch.float32)   # torch's own conversion: round to nearest, ties to even
    got = torch.ops.hebm._simt_round("bf16", x)
    assert torch.equal(_bits(got), _bits(ref))
    nan = torch.tensor([float("nan"), -float("nan")] + [torch.tensor(0x7F800001 + i * 4099, dtype=torch.int32)
                                                         .view(torch.float32).item() for i in range(8)])
    assert torch.isnan(torch.ops.hebm._simt_round("bf16", nan)).all()
    assert torch.isnan(torch.ops.hebm._simt_round("tf32", nan)).all()
    got = torch.ops.hebm._simt_round("tf32", x)
    assert torch.equal(_bits(got), _bits(_tf32_numpy(x)))
    assert ((_bits(got) & 0x1FFF) == 0).all()
    # bf16x2 packs lo in bits 0-15, hi in bits 16-31 (cvt.rn.bf16x2.f32 d, hi, lo)
    pairs = x[: 2 * (x.numel() // 2)]
    packed = torch.ops.hebm._simt_round("bf16x2", pairs).to(torch.int64) & 0xFFFFFFFF
    h = pairs.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
    assert torch.equal(packed, h[0::2] | (h[1::2] << 16))


def _lane_registers(kind, A, B, C):
    """Each lane's registers [32, 10] (a0-a3, b0-b1, c0-c3) built from the PTX ISA's fragment tables, independently
    of the C++ helpers; A, B already representable in the format."""
    regs = torch.zeros(32, 10, dtype=torch.int64)

    def h16(v):
        return int(torch.tensor([float(v)]).to(torch.bfloat16).view(torch.int16).item()) & 0xFFFF

    def b32(v):
        return int(torch.tensor([float(v)]).view(torch.int32).item()) & 0xFFFFFFFF
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        if kind == "bf16":   # m16n8k16: "Matrix fragments for mma.m16n8k16 with floating point type"
            a = [(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]
            for i, (r, k) in enumerate(a):
                regs[lane, i] = h16(A[r, k]) | (h16(A[r, k + 1]) << 16)
            for i, k in enumerate((2 * t, 2 * t + 8)):
                regs[lane, 4 + i] = h16(B[k, g]) | (h16(B[k + 1, g]) << 16)
        else:                # m16n8k8 tf32
            for i, (r, k) in enumerate([(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)]):
                regs[lane, i] = b32(A[r, k])
            for i, k in enumerate((t, t + 4)):
                regs[lane, 4 + i] = b32(B[k, g])
        for i, (r, n) in enumerate([(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]):
            regs[lane, 6 + i] = b32(C[r, n])
    return regs.to(torch.int32)   # two's complement wrap of the uint32 bits


def _rounded(kind, x):
    return x.to(torch.bfloat16).to(torch.float32) if kind == "bf16" else _tf32_numpy(x)


@pytest.mark.parametrize("kind", ["bf16", "tf32"])
def test_mma_lane_layouts_follow_the_ptx_isa(kind):
    """One emulated mma.sync with the lanes' registers laid out by the PTX ISA tables (built here, in Python): each
    lane's D registers are its C/D-layout elements of A B + C."""
    K = 16 if kind == "bf16" else 8
    g = torch.Generator().manual_seed(11)
    A = _rounded(kind, torch.randn(16, K, generator=g))
    B = _rounded(kind, torch.randn(K, 8, generator=g))
    C = torch.randn(16, 8, generator=g)
    d = torch.ops.hebm._simt_mma_lanes(kind, _lane_registers(kind, A, B, C))
    ref = A.double() @ B.double() + C.double()
    lane = torch.arange(32)
    gi, ti = lane >> 2, lane & 3
    expect = torch.stack([ref[gi, 2 * ti], ref[gi, 2 * ti + 1], ref[gi + 8, 2 * ti], ref[gi + 8, 2 * ti + 1]], 1)
    # fp32 accumulation of exact products: K + 1 roundings of partial sums at most |A||B| + |C|
    bound = (A.double().abs() @ B.double().abs() + C.double().abs()).max() * (K + 1) * 2.0 ** -24
    assert (d.double() - expect).abs().max() <= bound


@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("kind", ["bf16", "tf32"])
def test_mma_fragments_multiply_matrices(kind, b_transposed):
    """A [32, 48] B [48, 24] + C tile by tile through load_a/load_b/load_c, the emulated mma and store_d (B read
    row-major, or from its transpose as a weight matrix W[n][k] is read): equal to torch's matmul of the same
    rounded operands within fp32 accumulation, and visibly different from the unrounded product."""
    M, K, N = 32, 48, 24
    g = torch.Generator().manual_seed(3)
    A, B, C = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g), torch.randn(M, N, generator=g)
    d = torch.ops.hebm._simt_mma(kind, A, B, C, b_transposed)
    ref = _rounded(kind, A).double() @ _rounded(kind, B).double() + C.double()
    bound = (A.double().abs() @ B.double().abs() + C.double().abs()).max() * (K + 1) * 2.0 ** -24
    assert (d.double() - ref).abs().max() <= bound
    exact = A.double() @ B.double() + C.double()
    assert (d.double() - exact).abs().max() > 10 * bound   # the operands were rounded


def test_mma_divergence_is_reported():
    with pytest.raises(RuntimeError, match="warp divergence"):
        _C.simt_selftest("mma_diverge")


def test_mma_sync_in_the_ptx(tmp_path):
    """The DeviceCtx members compile to the two mma.sync forms (and the cvt roundings) for sm_80 and sm_90."""
    import os
    import shutil
    import subprocess
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = tmp_path / "mma.cu"
    src.write_text("""#include "core/simt.h"
using namespace hebm::core;
__global__ void k(const float* x, float* y) {
  __shared__ float s[512];
  DeviceCtx ctx;
  for (int i = threadIdx.x; i < 512; i += 32) s[i] = x[i];
  __syncwarp();
  uint32_t a[4], b[2];
  float c[4];
  load_c_f32(ctx, c, s + 384, 8, 1);
  load_a_bf16(ctx, a, s, 16, 1);
  load_b_bf16(ctx, b, s + 256, 1, 16);
  ctx.mma_bf16_16816(c, a, b, c);
  load_a_tf32(ctx, a, s, 8, 1);
  load_b_tf32(ctx, b, s + 256, 8, 1);
  ctx.mma_tf32_1688(c, a, b, c);
  store_d_f32(ctx, c, s + 384, 8, 1);
  __syncwarp();
  for (int i = threadIdx.x; i < 128; i += 32) y[i] = s[384 + i];
}
""")
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    for arch in ("sm_80", "sm_90"):
        ptx = tmp_path / f"{arch}.ptx"
        subprocess.run([nvcc, "-std=c++17", "-O3", "--use_fast_math", f"-arch={arch}", "--ptx", f"-I{root}",
                        str(src), "-o", str(ptx)], check=True, capture_output=True)
        text = ptx.read_text()
        assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in text, arch
        assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in text, arch
        assert "cvt.rn.bf16x2.f32" in text and "cvt.rna.tf32.f32" in text, arch
# ------------------------------------------------------------------------------ the streamed v2 variant
def test_streamed_chunks_are_bit_for_bit_and_match_the_resident_path():
    """The streamed engine runs the forward core of WarpEngine on chunks and its own column-owner backward
    (backward_column: lanes own input columns, 4-row vector groups, the sums carried over the chunks in order):
    chunks of any multiple of 4 rows (the planner takes multiples of 8) give the same float32 result and trace bit
    for bit (five heads with every activation over three layers); chunks of 1 or 3 rows change only the grouping of
    the 4-row vector sums (rounding). The resident path's row-owner backward adds the same terms in another order
    (each warp its rows, then the warps' slots in warp order): equal within float32 rounding, not bit for bit."""
    prior = multi_head_prior(torch.float32)
    sch = H.LangevinSchedule.lebm(steps=3, step_size=0.3)
    y0 = torch.randn(5, 48)
    noise = torch.randn(3, 5, 48)
    for tile in (1, 3):
        res, rtr, _ = emulate(prior, y0, sch, "resident", noise=noise, tile=tile, trace=True)
        base, btr, _ = emulate(prior, y0, sch, "streamed", noise=noise, tile=tile, trace=True, stage_rows=4)
        torch.testing.assert_close(base, res, rtol=0, atol=1e-5)
        torch.testing.assert_close(btr, rtr, rtol=1e-5, atol=1e-5)
        for rows in (1, 3, 8, 64):
            out, tr, st = emulate(prior, y0, sch, "streamed", noise=noise, tile=tile, trace=True, stage_rows=rows)
            assert (st["path"], st["tile"], st["cluster"]) == (3, tile, 1)
            if rows % 4 == 0:
                assert torch.equal(out, base) and torch.equal(tr, btr), (tile, rows)
            else:
                torch.testing.assert_close(out, base, rtol=0, atol=1e-5)
                torch.testing.assert_close(tr, btr, rtol=1e-5, atol=1e-5)


def test_streamed_plan_and_auto_dispatch():
    """A program too large for a 2-block cluster takes the streamed path on an H200 (and on an A100, which has no
    clusters); v1 stays, with its reason, where the streamed variant cannot go (no cp.async before compute
    capability 8.0; one chain's state and two rows of the widest layer over the budget, where v1's launcher then
    reports that not even one chain fits). With a small shared-memory budget the
    planner itself picks streamed, with a stage shrunk to the budget, and the emulation runs what it picked."""
    big = lebm_prior("lrelu", torch.float32, in_dim=100, hidden=400, depth=2)  # 200k weights: 800 KB
    params, program = P.build_program(big, torch.float32, "cpu")
    for B, tile in ((100, 3), (500, 4)):  # about 44 blocks saturate the L2: 3 chains per block for B = 100
        (path, t, cluster, threads, smem, tiles), why = _C.latent_plan(program, params.numel(), B, 4, [])
        assert (path, t, cluster, threads, tiles) == (3, tile, 1, 256, (B + tile - 1) // tile) and why == ""
        assert 2 * 32768 < smem <= 232448
    (path, *_), why = _C.latent_plan(program, params.numel(), 100, 4, [108, 166912, 8])
    assert path == 3 and why == ""
    (path, *_), why = _C.latent_plan(program, params.numel(), 100, 4, [80, 98304, 7])  # a V100
    assert path == 0 and "cp.async" in why and "compute capability 7" in why
    wide = lebm_prior("lrelu", torch.float32, in_dim=40000, hidden=4, depth=1)  # one row: 156 KB
    params_w, program_w = P.build_program(wide, torch.float32, "cpu")
    (path, *_), why = _C.latent_plan(program_w, params_w.numel(), 1, 4, [])
    assert path == 0 and "the streamed v2 variant needs" in why and "40000 inputs" in why, why

    prior = lebm_prior("gelu", torch.float32, in_dim=40, hidden=160, depth=2)  # 32k weights: 128 KB
    small_gpu = [132, 40 * 1024, 9]  # neither resident (128 KB) nor a cluster fits (2 blocks: 64 KB of weights per
    # block; 4 blocks: 32 KB plus the chain's state and the backward's slots, ~46 KB)
    params, program = P.build_program(prior, torch.float32, "cpu")
    (path, tile, cluster, _, smem, _), why = _C.latent_plan(program, params.numel(), 3, 4, small_gpu)
    assert (path, tile, cluster) == (3, 1, 1) and smem <= 40 * 1024 and why == ""
    sch = H.LangevinSchedule.lebm(steps=2)
    y0 = torch.randn(3, 40)
    noise = torch.randn(2, 3, 40)
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference")
    out, _, st = emulate(prior, y0, sch, "auto", noise=noise, device=small_gpu)
    assert (st["path"], st["smem_bytes"]) == (3, smem)
    assert (out - ref).abs().max() < 1e-4


def test_streamed_barriers_and_banks():
    """One barrier per chunk of each layer call on top of the walk's (LEBM's shape 40-72-72-1 with 16 rows a chunk:
    forwards 5 + 5 chunks, backwards 5 + 5: 20 per step more than the walk's 5; the resident path 4, its last hidden
    layer's forward and backward in one pass, WarpEngine::forward_backward); no bank conflict in the steps."""
    prior = lebm_prior("lrelu", torch.float32, in_dim=40, hidden=72, depth=2)
    y0 = torch.randn(2, 40)
    noise = torch.randn(3, 2, 40)

    def per_step(path, **kw):
        runs = [emulate(prior, y0, H.LangevinSchedule.lebm(steps=k), path, noise=noise[3 - k:], tile=2, threads=256,
                        **kw)[2] for k in (3, 2)]
        return runs, runs[0]["block_barriers"] - runs[1]["block_barriers"]

    runs, streamed = per_step("streamed", banks=True, stage_rows=16)
    _, resident = per_step("resident")
    assert (streamed, resident) == (5 + 20, 4), (streamed, resident)
    assert runs[0]["smem_instructions"] - runs[1]["smem_instructions"] > 500
    assert runs[0]["conflicted"] == runs[1]["conflicted"], runs


def test_cp_async_semantics():
    """The emulation's cp.async: the data is in shared memory from the issuing thread's wait, visible to the others
    after the next barrier; the classic pipeline bugs are errors that name them."""
    out = _C.simt_selftest("cp_async")[0, 128:384].reshape(4, 64)
    g = torch.arange(1, 257, dtype=torch.float32).reshape(4, 64)
    src = torch.clamp(torch.arange(64) - 1, min=0)
    torch.testing.assert_close(out, 2 * g[:, src])
    with pytest.raises(RuntimeError, match="in flight .*wait too late"):
        _C.simt_selftest("cp_async_early")
    with pytest.raises(RuntimeError, match="no barrier since"):
        _C.simt_selftest("cp_async_nobarrier")
    with pytest.raises(RuntimeError, match="write-after-read"):
        _C.simt_selftest("cp_async_war")
    with pytest.raises(RuntimeError, match="misaligned cp.async of 16 bytes"):
        _C.simt_selftest("cp_async_misaligned")
