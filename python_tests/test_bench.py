"""The shipped benchmark table (hebm_ext.bench, `hebm bench`, benchmarks/bench_latent_langevin.py): one tiny run
on the CPU, and the precision argument's errors (tf32 / bf16 are CUDA-only: the fused CPU kernel is fp32)."""
import json

import pytest
import torch

from hebm_ext import bench


def test_lebm_table_on_the_cpu(tmp_path):
    rows = bench.run_latent_bench("lebm", batches=[4], steps=2, repeats=1, devices=["cpu"], out=str(tmp_path))
    assert len(rows) == 1
    r = rows[0]
    assert r["precision"] == "fp32" and r["B"] == 4 and r["steps"] == 2
    assert r["eager_ms"] > 0 and r["fused_ms"] > 0 and "papers_loop_ms" in r
    saved = json.load(open(tmp_path / "latent_langevin_lebm_lrelu.json"))
    assert saved["rows"][0]["B"] == 4


@pytest.mark.parametrize("precision, match", [("bf16", "CUDA GPU only"), ("tf32", "CUDA GPU only"),
                                              ("fp16", "expected one of fp32, tf32, bf16")])
def test_precision_errors_before_any_timing(tmp_path, precision, match):
    with pytest.raises(ValueError, match=match) as e:
        bench.run_latent_bench("lebm", batches=[4], steps=2, repeats=1, devices=["cpu"], out=str(tmp_path),
                               precision=precision)
    assert "precision" in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing was run or written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for a machine without a GPU")
def test_reduced_precision_defaults_to_the_gpu(tmp_path):
    with pytest.raises(ValueError, match="asked for on cuda and no CUDA GPU is visible"):
        bench.run_latent_bench("lebm", batches=[4], steps=2, repeats=1, out=str(tmp_path), precision="bf16")


def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: every Python part of the GPU machine's one prepared run, on the CPU at toy
    sizes, so that a broken benchmark or summary is found here and not in the lent machine's few minutes. The run's
    files stay within what the device tool returns (8 at most): the summary, the log and one archive."""
    import os
    import subprocess
    import sys
    import tarfile

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    script = os.path.join(root, "benchmarks", "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    out = tmp_path / "gpu"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    r = subprocess.run(["bash", script, "--dry-run"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["gpu_check.tar.gz", "log.txt", "summary.md"]
    summary = (out / "summary.md").read_text()
    for phase in ("LEBM fp32", "joint", "diffusion", "generic engine", "training iteration", "profile (dry"):
        assert f"- {phase}: " in summary and f"- {phase}: SKIPPED" not in summary, summary
    assert ", rc 0" in summary and ", rc 1" not in summary
    for title in ("LEBM 100-200-200-1", "diffusion sampler", "generic engine", "LEBM training iteration"):
        assert f"### {title}" in summary
    assert summary.count("|---") >= 5  # every table came with its header
    with tarfile.open(out / "gpu_check.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("train_step.json") for n in names) and any(n.endswith("lebm_fp32.md") for n in names)
