"""Timing helpers shared by the benchmarks: warm-up first, medians over repeats, device synchronisation."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time

import torch


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device="cpu", warmup=1, repeats=5, min_repeats=3, budget_s=None):
    """Median wall time (seconds) of fn() after `warmup` calls; CUDA work is synchronised around each call.
    With budget_s, repeats stop early (but not before min_repeats) once the budget is spent."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and i + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times), times


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = ""
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "commit": commit,
           "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    from hebm_ext import ops
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
