#!/usr/bin/env bash
# One command to check a GPU install of hebm_ext: build the extension with CUDA for the local GPU on every core,
# run every CUDA test (the kernels against the eager reference, the CPU kernels and their own CPU emulation), measure
# the GPU's ceilings, run the benchmarks (LEBM B = 100 and 65536 at every precision: eager, the eager loop captured
# in a CUDA graph, fused; the joint prior; the diffusion sampler; the generic engine; one LEBM training iteration,
# the papers' loop against hebm_ext; last, where ncu reads the counters, Nsight Compute on the modelled kernels),
# and print the time of each phase and a short table last.
#   bash benchmarks/gpu_check.sh            (about 6-7 minutes on an H200 with 16 cores, most of it the build)
#   bash benchmarks/gpu_check.sh --dry-run  (here, without a GPU: every Python part on the CPU at toy sizes)
# Output, 3 files in $OUT (default benchmarks/out/gpu; a device tool returns at most 8): summary.md (the phases'
# times and every table, written as each phase ends), log.txt (everything printed) and gpu_check.tar.gz (every
# detail: JSON, PNG, the build log, pytest's report), packed when the script exits, also on a failure or a timeout
# (SIGTERM), not on SIGKILL. Each phase has its own time limit (a hung phase cannot eat the others' time).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
OUT="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d)
summary="$OUT/summary.md"
: >"$summary"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # the GPU image's torch is under python3
pack() { tar -czf "$OUT/gpu_check.tar.gz" -C "$work" . 2>/dev/null; }
trap pack EXIT
trap 'echo "gpu_check.sh: stopped (SIGTERM)"; exit 143' TERM

commit="${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"  # a device machine gets no .git: pass it
export HEBM_COMMIT="$commit"  # the benchmarks' JSON (hebm_ext.bench.environment)
t_all=$(date +%s)
deadline=$((t_all + ${GPU_CHECK_BUDGET_S:-420}))  # the whole run, inside a device call's 600 s
failed=()
last_rc=0
# phase NAME LIMIT_S OUTFILE CMD...: CMD under the smaller of its limit and the time left (skipped when under 15 s
# are left), its output also into OUTFILE ("-": none; "@FILE": into FILE only); prints and records its time, status
phase() {
  local name=$1 limit=$2 out=$3
  shift 3
  local t left rc dt
  t=$(date +%s)
  left=$((deadline - t))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped, ${left} s left"
    echo "- $name: SKIPPED (${left} s of the run's budget left)" >>"$summary"
    failed+=("$name (skipped)")
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit} s)"
  if [ "$out" = - ]; then
    timeout --signal=TERM --kill-after=10 "$limit" "$@"
    rc=$?
  elif [ "${out:0:1}" = @ ]; then
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"${out:1}" 2>&1
    rc=$?
    tail -3 "${out:1}"
  else
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
  fi
  dt=$(($(date +%s) - t))
  last_rc=$rc
  [ "$rc" -ne 0 ] && failed+=("$name (rc $rc)")
  echo "== $name: ${dt} s, rc $rc"
  echo "- $name: ${dt} s, rc $rc$([ "$rc" = 124 ] && echo ", stopped at its ${limit} s limit")" >>"$summary"
  return 0
}
table() {  # table FILE TITLE: the markdown tables of FILE into the summary
  { echo; echo "### $2"; echo; sed -n '/^|/p' "$1"; } >>"$summary" 2>/dev/null
}

if [ "$dry" = 1 ]; then
  devs=(--devices cpu)
  lebm_batches=(--batches 16 32 --steps 4)
  echo "# gpu_check.sh --dry-run ($(date -u +%Y-%m-%dT%H:%MZ), commit ${commit:-unknown})" >>"$summary"
else
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; assert torch.version.cuda, 'torch has no CUDA'" \
    || { echo "gpu_check.sh: needs a CUDA build of torch and a visible GPU" >&2; exit 2; }
  devs=(--devices cuda)
  lebm_batches=(--batches 100 65536)
  arch=$("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}.{p.minor}')")
  {
    echo "# gpu_check.sh ($(date -u +%Y-%m-%dT%H:%MZ), commit ${commit:-unknown})"
    echo
    "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}')"
    nvidia-smi --query-gpu=driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/driver, max SM clock: /'
    echo
  } >>"$summary"
  # every core: the kernels are one file per family (csrc/cuda/latent_kernels.cuh), compiled in parallel
  phase build 330 "@$work/build.txt" env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install -v --no-build-isolation --no-deps --no-index -e .
  find build -name .ninja_log -exec cp {} "$work/ninja_log.txt" \; 2>/dev/null  # each file's compile start / end (ms)
  "$PY" -c "import hebm_ext as H; a = H.ops.available(); print(a); assert a['cuda'], 'the CUDA kernels were not built'" \
    || { echo "gpu_check.sh: the build has no CUDA kernels (build.txt in gpu_check.tar.gz)" >&2; exit 3; }
  # a hung kernel (a wrong mbarrier phase spins for ever) must not eat the run: pytest-timeout, where the image has
  # it, stops the tests 60 s into a test that hangs, and then the benchmarks are not started (they would hang too)
  to=()
  "$PY" -c "import pytest_timeout" 2>/dev/null && to=(--timeout 60 --timeout-method thread)
  phase "CUDA tests" 200 "$work/cuda_tests.txt" "$PY" -m pytest python_tests/test_cuda.py \
    python_tests/test_generic_cuda.py python_tests/test_nonfinite.py::test_cuda_capture_reads_no_host_value -q -rs \
    -p no:cacheprovider --junitxml="$work/cuda_tests.xml" "${to[@]}"
  "$PY" - "$work/cuda_tests.xml" >>"$summary" <<'EOF_PY'
import sys, xml.etree.ElementTree as ET
try:
    s = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    sys.exit(print("- CUDA tests: no report (pytest was stopped: cuda_tests.txt in the archive)"))
s = s if s.tag == "testsuite" else s[0]
print(f"- CUDA tests: {s.get('tests')} run, {s.get('failures')} failed, {s.get('errors')} errors, {s.get('skipped')} skipped")
for c in s.iter("testcase"):
    for bad in list(c.findall("failure")) + list(c.findall("error")):
        print(f"  - FAILED {c.get('name')}: {(bad.get('message') or '')[:300]}")
EOF_PY
  if [ "$last_rc" = 124 ] || grep -q "+ Timeout +" "$work/cuda_tests.txt" 2>/dev/null; then
    echo "- a CUDA test hung: the benchmarks would hang too, not started" | tee -a "$summary"
    exit 1
  fi
  phase ceilings 60 - "$PY" benchmarks/gpu_ceilings.py --out "$work"
  "$PY" - "$work/ceilings.json" >>"$summary" <<'EOF_PY'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["rows"]
except (OSError, ValueError, KeyError):
    sys.exit(print("- ceilings: no result"))
print("\n### ceilings\n")
for r in rows:
    print(f"| {r['what']} | {r['value']:.1f} {r['unit']} |")
EOF_PY
fi

for prec in fp32 bf16 tf32; do  # tf32 / bf16: eager at the same precision (allow_tf32 / autocast bf16)
  [ "$dry" = 1 ] && [ "$prec" != fp32 ] && continue  # reduced precision is CUDA only
  phase "LEBM $prec" 90 "$work/lebm_$prec.md" "$PY" benchmarks/bench_latent_langevin.py --model lebm \
    "${lebm_batches[@]}" --precision "$prec" "${devs[@]}" --repeats 3 --out "$work/lebm_$prec"
  table "$work/lebm_$prec.md" "LEBM 100-200-200-1, K = 60, $prec"
done
if [ "$dry" = 1 ]; then small=(--steps 4); else small=(); fi
phase diffusion 60 "$work/diffusion.md" "$PY" benchmarks/bench_latent_langevin.py --model diffusion --batches 100 \
  "${small[@]}" "${devs[@]}" --repeats 3 --out "$work/diffusion"
table "$work/diffusion.md" "diffusion sampler (u-space [100, 128, 128], T = 3, K = 50)"
if [ "$dry" = 1 ]; then ts=(--batch 4 --repeats 1); else ts=(--batch 100 --repeats 5); fi
phase "training iteration" 90 "$work/train.md" "$PY" benchmarks/bench_train_step.py "${ts[@]}" "${devs[@]}" \
  --out "$work/train"
table "$work/train.md" "LEBM training iteration (SVHN shapes, B = 100)"

if [ "$dry" = 1 ]; then gen=(--batch 4 --ngf 8 --ndf 16); else gen=(); fi
phase "generic engine" 90 "$work/generic.md" "$PY" benchmarks/bench_generic_langevin.py "${gen[@]}" "${devs[@]}" \
  --repeats 3 --budget 5 --out "$work/generic"
table "$work/generic.md" "generic engine"
phase joint 60 "$work/joint.md" "$PY" benchmarks/bench_latent_langevin.py --model joint --batches 100 \
  $([ "$dry" = 1 ] || echo 1024) "${small[@]}" "${devs[@]}" --repeats 3 --out "$work/joint"
table "$work/joint.md" "joint prior"
# last and optional: Nsight Compute's view of the modelled kernels (shared-memory wavefronts, instructions, stall
# reasons against docs/CUDA_KERNELS.md's counts), where the machine lets ncu read the counters (Firecracker; gVisor
# refuses it) and time is left; its failure is reported, not counted as the run's
if [ "$dry" = 1 ]; then
  phase "profile (dry: the launches only)" 60 - "$PY" benchmarks/profile_kernels.py --device cpu --steps 2 \
    --batches 100
elif command -v ncu >/dev/null 2>&1 && [ $((deadline - $(date +%s))) -ge 60 ]; then
  n_failed=${#failed[@]}
  phase profile 120 "@$work/ncu.csv" ncu --clock-control none -k "regex:latent_(resident|cluster|throughput)" \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --section MemoryWorkloadAnalysis_Tables --csv --page details "$PY" benchmarks/profile_kernels.py
  failed=("${failed[@]:0:$n_failed}")
  grep -c '"latent_' "$work/ncu.csv" 2>/dev/null | sed 's/^/- profile: rows of kernel metrics in ncu.csv: /' >>"$summary"
else
  echo "- profile: not run (no ncu, or under 60 s left)" >>"$summary"
fi

echo "- total: $(($(date +%s) - t_all)) s" >>"$summary"
echo
echo "== summary ($summary; every detail in $OUT/gpu_check.tar.gz)"
cat "$summary"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check.sh: failed: ${failed[*]}" >&2
  exit 1
fi
