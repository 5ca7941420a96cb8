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
