"""Shared by the benchmark scripts. The timing helpers live in the package (hebm_ext.bench, also behind
`hebm bench`); the pieces below serve the method studies on the embedded digits (prior_hole, multistage_mmd,
dual_mcmc_digits): their common flags, the seeded training batches, and the atomic write of their docs/ page."""
from __future__ import annotations

import ast
import os
import sys

import torch

from hebm_ext.bench import environment, markdown_table, median_time, plot_ratios, sync, write_json  # noqa: F401


def study_args(ap, doc: str, threads: int | None = 1):
    """--seed, --threads, --set key=value (config overrides), --out (the markdown page, e.g. ``doc``)."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=threads,
                    help="torch threads (default: torch's own)" if threads is None else
                    "torch threads (1 is fastest on a loaded 2-core machine)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value (python literals)")
    ap.add_argument("--out", default=None, help=f"markdown file for the table (e.g. {doc})")


def study_setup(args) -> dict:
    """Apply --threads and return the --set overrides as a dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}


def digits_batches(m, seed: int):
    """Training batches of the embedded digits, drawn from a generator seeded with ``seed``, without end; after
    each full epoch of train_steps (resumed after the epoch's last batch) it calls m.end_epoch(), the papers'
    per-epoch learning-rate schedules."""
    import hebm_ext as H
    train = H.data.Digits(split="train").images
    g = torch.Generator().manual_seed(seed)
    per_epoch = -(-train.shape[0] // m.config.batch_size)
    step = 0
    while True:
        yield train[torch.randint(0, train.shape[0], (m.config.batch_size,), generator=g)]
        step += 1
        if step % per_epoch == 0:
            m.end_epoch()


def command(script: str, argv) -> str:
    return (f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])).strip()


def write_doc(path: str, text: str):
    """Write the page whole or not at all (a temporary file, then an atomic rename)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
