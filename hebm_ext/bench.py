"""Benchmarks shipped with the package (`hebm bench`; the scripts in benchmarks/ use the same code): timing
helpers (warm-up first, medians over repeats, device synchronisation) and the fused-vs-eager latent sampler table.

Models of run_latent_bench:
  lebm       LEBM prior 100 -> 200 -> 200 -> 1 (ALGORITHMS.md 1.1), K = 60, s = 0.4, B in {16, 100, 1024, 8192};
             baselines: the eager reference sampler (sample_prior backend "reference") and LEBM's own bare loop on
             the same MLP (reference.lebm_prior_loop).
  joint      the joint latent EBM prior of section 3.1 (z2 = 100 top, z1 = 128; ladder MLP 4 x 200; heads
             128-200-200-200-1 and 100-100-100-1), z-space, K = 60, s = 0.4, B in {100, 1024}.
  diffusion  the hierarchical EBM diffusion sampler: 3-layer u-space hierarchy [100, 128, 128] (ladder 2 x 200),
             time-conditioned heads per layer, T = 3 recovery likelihood, K = 50, B = 100 (section 6.7).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import time

import torch

import hebm_ext as H_

from .sampling.reference import PRECISIONS, lebm_prior_loop


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed_rounds(fns, device, warmup, repeats, min_repeats, budget_s):
    """Wall times (seconds) of each of fns over rounds of one call each, after `warmup` rounds; CUDA work is
    synchronised around each call. With budget_s, rounds stop early (not before min_repeats) once it is spent."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times = [[] for _ in fns]
    start = time.perf_counter()
    for i in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t0)
        if budget_s is not None and i + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return times


def median_time(fn, device="cpu", warmup=1, repeats=5, min_repeats=3, budget_s=None):
    """Median wall time (seconds) of fn() after `warmup` calls, and the times; CUDA work is synchronised around
    each call. With budget_s, repeats stop early (but not before min_repeats) once the budget is spent."""
    times = _timed_rounds([fn], device, warmup, repeats, min_repeats, budget_s)[0]
    return statistics.median(times), times


def alternating_medians(fns, device="cpu", warmup=1, repeats=5, min_repeats=3, budget_s=None):
    """Median wall time (seconds) of each of fns, timed alternately (one call of each per round, so that a change of
    a shared machine's load hits all of them); as median_time otherwise."""
    return [statistics.median(ts) for ts in _timed_rounds(fns, device, warmup, repeats, min_repeats, budget_s)]


def environment() -> dict:
    """The machine, the versions and the commit (HEBM_COMMIT where set: a copy of the tree without .git, as a
    GPU machine gets, cannot ask git)."""
    commit = os.environ.get("HEBM_COMMIT", "")
    try:
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                          cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = ""
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "commit": commit,
           "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    from . import ops
    env["cpu_capability"] = ops.cpu_capability()
    return env


def write_json(path: str, payload: dict):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def markdown_table(rows, columns) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"
    return head + "".join("| " + " | ".join(fmt(r) for _, fmt in columns) + " |\n" for r in rows)


def plot_ratios(path, rows, title):
    """Optional PNG (matplotlib is an extra): speed-up of each row's fused backend over its baseline."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for dev in sorted({r["device"] for r in rows}):
        rs = [r for r in rows if r["device"] == dev]
        ax.plot([r["B"] for r in rs], [r["speedup"] for r in rs], marker="o", label=dev)
    ax.set_xscale("log")
    ax.set_xlabel("chains B")
    ax.set_ylabel("speed-up over eager")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


DEFAULT_BATCHES = {"lebm": [16, 100, 1024, 8192], "joint": [100, 1024], "diffusion": [100]}


def mlp_flops(m) -> int:
    return sum(lin.in_features * lin.out_features for lin in m.linears)


def build(model, activation, steps):
    """(prior, schedule, latent dim, forward multiply-adds per chain and step)"""
    torch.manual_seed(0)
    if model == "lebm":
        head = H_.EnergyMLP(100, 200, 2, activation=activation)
        return H_.LatentEBMPrior([100], [(head, 0)]), H_.LangevinSchedule.lebm(steps or 60, 0.4), 100, mlp_flops(head)
    if model == "joint":
        ladder = H_.GaussianLadder([100, 128], 200, 4, activation, sigma_min=0.01, sigma_top=1.01)
        heads = [(H_.EnergyMLP(100, 100, 2, activation), 0), (H_.EnergyMLP(128, 200, 3, activation), 1)]
        prior = H_.LatentEBMPrior([100, 128], heads, base=ladder, param="z")
        macs = sum(mlp_flops(m) for m in ladder.nets) + sum(mlp_flops(m) for m, _ in heads)
        return prior, H_.LangevinSchedule.lebm(steps or 60, 0.4), 228, macs
    dims = [100, 128, 128]
    ladder = H_.GaussianLadder(dims, 200, 2, activation, soft_clamp=True)
    heads = [(H_.EnergyMLP(d, 200, 2, activation, time_steps=3), l) for l, d in enumerate(dims)]
    prior = H_.LatentEBMPrior(dims, heads, base=ladder, param="u")
    macs = sum(mlp_flops(m) for m in ladder.nets) + sum(mlp_flops(m) for m, _ in heads)
    return prior, H_.LangevinSchedule.recovery_likelihood(3, steps or 50, 3e-5), sum(dims), macs


def check_precision(precision, device):
    """The bench's precision argument (one of reference.PRECISIONS; tf32 / bf16 on a visible CUDA GPU only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and (torch.device(device).type != "cuda" or not torch.cuda.is_available()):
        raise ValueError(f"precision={precision!r}: reduced precision runs on a CUDA GPU only (the fused CPU kernel "
                         f"is fp32), asked for on {device}" + ("" if torch.cuda.is_available() else
                                                              " and no CUDA GPU is visible"))


@contextlib.contextmanager
def eager_precision(precision):
    """Eager PyTorch at a matmul precision (checked by check_precision), as a researcher runs it: fp32 as is, tf32
    with torch.backends.cuda.matmul.allow_tf32, bf16 under torch.autocast on CUDA."""
    if precision == "fp32":
        yield
    elif precision == "tf32":
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    else:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield


def bench(model, device, batches, activation, steps, repeats, bar=None, precision="fp32"):
    check_precision(precision, device)
    prior, sch, D, macs = build(model, activation, steps)
    prior = prior.to(device)
    rows = []
    for B in batches:
        if bar is not None:
            bar.set_description(f"hebm bench {model} {device} B={B} {precision}")
        y0 = torch.randn(B, D, device=device)

        def eager():
            with eager_precision(precision):
                return H_.sample_prior(prior, y0, sch, backend="reference")

        t_ref, _ = median_time(eager, device, repeats=repeats, budget_s=20)
        t_fused, _ = median_time(lambda: H_.sample_prior(prior, y0, sch, backend="fused", precision=precision),
                                 device, repeats=repeats)
        flops = 4.0 * B * sch.total_steps * macs  # forward + backward to the input, 2 flops per multiply-add
        row = {"model": model, "device": device, "B": B, "steps": sch.total_steps, "activation": activation,
               "precision": precision, "eager_ms": t_ref * 1e3, "fused_ms": t_fused * 1e3,
               "speedup": t_ref / t_fused, "fused_gflops": flops / t_fused / 1e9}
        msg = (f"  {model} {device} B={B} {precision}: eager reference {t_ref*1e3:.2f} ms, fused "
               f"{t_fused*1e3:.2f} ms, x{t_ref/t_fused:.1f}")
        if torch.device(device).type == "cuda" and precision == "fp32":  # the loop captured in a CUDA graph
            t_graph, _ = median_time(lambda: H_.langevin(prior.log_prob, y0, sch, backend="graph", check_finite=False),
                                     device, warmup=2, repeats=repeats, budget_s=20)
            row.update(graph_ms=t_graph * 1e3, speedup_vs_graph=t_graph / t_fused)
            msg += f" (graph-captured loop {t_graph*1e3:.2f} ms, x{t_graph/t_fused:.1f})"
        if model == "lebm" and precision == "fp32":
            head = prior.heads[0]
            t_loop, _ = median_time(lambda: lebm_prior_loop(head, y0, sch.K[0], 0.4), device, repeats=repeats,
                                    budget_s=20)
            row.update(papers_loop_ms=t_loop * 1e3, speedup_vs_papers_loop=t_loop / t_fused)
            msg += f" (LEBM loop {t_loop*1e3:.2f} ms, x{t_loop/t_fused:.1f})"
        rows.append(row)
        if bar is not None:
            bar.write(msg)
            bar.update(1)
        else:
            print(msg, flush=True)
    return rows




def run_latent_bench(model="lebm", batches=None, activation="lrelu", steps=None, repeats=5, devices=None,
                     out=os.path.join("benchmarks", "out"), progress=False, precision="fp32"):
    """Run the table for one model, print it, write JSON (and a PNG with matplotlib); returns the rows.
    progress: a bar over the (device, batch) rows (hebm bench). precision: the fused sampler's matmuls
    ("fp32", or "tf32" / "bf16" on CUDA: devices then default to the GPU alone), the eager baseline at the same
    precision (eager_precision)."""
    if devices is None:  # reduced precision: the GPU only
        devices = (["cpu"] if precision == "fp32" else []) + (
            ["cuda"] if precision != "fp32" or (torch.cuda.is_available() and H_.ops.available()["cuda"]) else [])
    for dev in devices:  # before any timing
        check_precision(precision, dev)
    batches = batches or DEFAULT_BATCHES[model]
    env = environment()
    print(f"# latent Langevin, model {model} ({activation}, {precision}); {env}", flush=True)
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(devices) * len(batches), unit="row", dynamic_ncols=True, leave=False)
    try:
        for dev in devices:
            rows += bench(model, dev, batches, activation, steps, repeats, bar, precision)
    finally:
        if bar is not None:
            bar.close()
    cols = [("model", lambda r: r["model"]), ("device", lambda r: r["device"]), ("B", lambda r: str(r["B"])),
            ("precision", lambda r: r["precision"]),
            ("steps", lambda r: str(r["steps"])), ("eager reference ms", lambda r: f"{r['eager_ms']:.2f}")]
    if model == "lebm":
        cols.append(("LEBM loop ms", lambda r: f"{r['papers_loop_ms']:.2f}" if "papers_loop_ms" in r else "-"))
    cols += [("graph ms", lambda r: f"{r['graph_ms']:.2f}" if "graph_ms" in r else "-"),
             ("fused ms", lambda r: f"{r['fused_ms']:.2f}"), ("vs reference", lambda r: f"{r['speedup']:.1f}x"),
             ("vs graph", lambda r: f"{r['speedup_vs_graph']:.1f}x" if "speedup_vs_graph" in r else "-")]
    if model == "lebm":
        cols.append(("vs LEBM loop", lambda r: f"{r['speedup_vs_papers_loop']:.1f}x"
                     if "speedup_vs_papers_loop" in r else "-"))
    cols.append(("fused GFLOP/s", lambda r: f"{r['fused_gflops']:.1f}"))
    table = markdown_table(rows, cols)
    stem = f"latent_langevin_{model}_{activation}" + ("" if precision == "fp32" else f"_{precision}")
    path = os.path.join(out, stem + ".json")
    write_json(path, {"env": env, "rows": rows})
    png = plot_ratios(os.path.join(out, stem + ".png"), rows, f"fused vs eager reference, {model}")
    print(f"\nJSON: {path}" + (f"\nPNG: {png}" if png else ""))
    print(table)
    return rows
