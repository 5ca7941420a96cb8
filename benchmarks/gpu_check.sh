#!/usr/bin/env bash
# One command to check a GPU install of hebm_ext: build the extension with CUDA for the local GPU, run every CUDA
# test, measure the GPU's ceilings, run the benchmarks (fused vs eager vs graph-captured loop, the generic engine),
# and print a short table last. Details go to $OUT (default benchmarks/out/gpu).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; assert torch.version.cuda, 'torch has no CUDA'" \
  || { echo "gpu_check.sh: needs a CUDA build of torch and a visible GPU" >&2; exit 2; }
arch=$(python -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}.{p.minor}')")
echo "== build (FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch)"
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" python -m pip install -q --no-build-isolation -e . 2>&1 | tee "$OUT/build.txt" | tail -3
python -c "import hebm_ext as H; a = H.ops.available(); print(a); assert a['cuda'], 'the CUDA kernels were not built'"
echo "== CUDA tests"
set +e
python -m pytest python_tests/test_cuda.py python_tests/test_generic_cuda.py python_tests/test_cuda_emulation.py -q -rs 2>&1 | tee "$OUT/cuda_tests.txt" | tail -5
tests_rc=${PIPESTATUS[0]}
set -e
echo "== ceilings"
python benchmarks/gpu_ceilings.py --out "$OUT" | tee "$OUT/ceilings.md"
echo "== benchmarks"
python benchmarks/bench_latent_langevin.py --model lebm --batches 100 65536 --devices cuda --out "$OUT" | tee "$OUT/lebm.md"
for prec in tf32 bf16; do  # the tensor-core throughput path against eager at the same precision (allow_tf32 / autocast)
  python benchmarks/bench_latent_langevin.py --model lebm --batches 65536 --precision "$prec" --devices cuda \
    --out "$OUT" | tee "$OUT/lebm_$prec.md"
done
python benchmarks/bench_latent_langevin.py --model joint --batches 100 1024 --devices cuda --out "$OUT" | tee "$OUT/joint.md"
python benchmarks/bench_latent_langevin.py --model diffusion --batches 100 --devices cuda --out "$OUT" | tee "$OUT/diffusion.md"
python benchmarks/bench_generic_langevin.py --devices cuda --out "$OUT" | tee "$OUT/generic.md"
echo
echo "== summary (details in $OUT)"
grep -h "passed\|failed" "$OUT/cuda_tests.txt" | tail -1
for f in ceilings lebm lebm_tf32 lebm_bf16 joint diffusion generic; do sed -n '/^| /p' "$OUT/$f.md"; echo; done
exit "$tests_rc"
