"""The GPU's measured ceilings (METHOD.md of the device notes): a large device-to-device copy (bytes read + written)
and large fp32 / tf32 / bf16 matrix products, timed with CUDA events after a warm-up, medians over repeats.
Prints a table and writes JSON.

    python benchmarks/gpu_ceilings.py [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch

from hebm_ext.bench import environment, markdown_table, write_json


def timed(fn, repeats=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("benchmarks", "out", "gpu"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_ceilings.py needs a CUDA GPU")
    rows = []
    n = 1 << 30  # 1 GiB of float32
    src = torch.randn(n // 4, device="cuda")
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src))
    rows.append({"what": "device copy 1 GiB", "value": 2 * n / t / 1e9, "unit": "GB/s (read + write)"})
    src = dst = None  # free the 2 GiB before the GEMMs
    m = 8192
    for name, dtype, tf32 in (("fp32 GEMM 8192^3", torch.float32, False), ("tf32 GEMM 8192^3", torch.float32, True),
                              ("bf16 GEMM 8192^3", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(m, m, device="cuda", dtype=dtype)  # never zeros: they can run faster than real data
        b = torch.randn(m, m, device="cuda", dtype=dtype)
        t = timed(lambda: a @ b, repeats=10)
        rows.append({"what": name, "value": 2 * m ** 3 / t / 1e12, "unit": "TFLOP/s"})
    torch.backends.cuda.matmul.allow_tf32 = False
    table = markdown_table(rows, [("ceiling", lambda r: r["what"]), ("measured", lambda r: f"{r['value']:.1f}"),
                                  ("unit", lambda r: r["unit"])])
    write_json(os.path.join(args.out, "ceilings.json"), {"env": environment(), "rows": rows})
    print(table)
    return rows


if __name__ == "__main__":
    main()
