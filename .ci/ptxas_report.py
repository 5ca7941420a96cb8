"""Reads `nvcc -Xptxas -v` output on stdin; prints registers / stack / spills / shared memory per kernel and arch;
exits 1 when a sampler kernel spills to local memory: the v2 paths, the update op, and the v1 staged fallback (it
spilled 212 bytes on sm_90 while it had one instantiation of its forward per activation kind; one instantiation
with the kind dispatched per element in its epilogue removed the spill: docs/CUDA_KERNELS.md), or has a stack frame
over MAX_STACK bytes (local memory that ptxas does not call a spill: e.g. the kernel's parameter block copied to the
stack when its address is taken, 9,360 bytes once in the staged kernel)."""
import re
import subprocess
import sys

HOT = ("latent_resident_kernel", "latent_cluster_kernel", "latent_streamed_kernel", "latent_throughput_kernel",
       "latent_staged_kernel", "update_kernel")
MAX_STACK = 1024  # bytes; today's largest is the staged kernel's 144
rows, cur = [], None
for line in sys.stdin:
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
    if m:
        cur = {"mangled": m.group(1), "arch": m.group(2), "regs": "?", "stack": 0, "spill_st": 0, "spill_ld": 0,
               "smem": 0}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["regs"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        cur["smem"] = int(m.group(1)) if m else 0
try:
    names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows), capture_output=True,
                           text=True, check=True).stdout.splitlines()
except (OSError, subprocess.CalledProcessError):
    names = [r["mangled"] for r in rows]
bad = []
print(f"{'kernel':70s} {'arch':6s} {'regs':>5s} {'stack':>6s} {'spill st':>9s} {'spill ld':>9s} {'static smem':>11s}")
for r, n in zip(rows, names):
    n = re.sub(r"^void |hebm::cuda::|\(anonymous namespace\)::|hebm::core::", "", n)
    n = n.split("(")[0]
    print(f"{n[:70]:70s} {r['arch']:6s} {r['regs']:>5} {r['stack']:>6} {r['spill_st']:>9} {r['spill_ld']:>9} {r['smem']:>11}")
    if any(h in r["mangled"] for h in HOT) and (r["spill_st"] or r["spill_ld"]):
        bad.append(f"{n} ({r['arch']}): {r['spill_st']} bytes spill stores, {r['spill_ld']} bytes spill loads")
    if any(h in r["mangled"] for h in HOT) and r["stack"] > MAX_STACK:
        bad.append(f"{n} ({r['arch']}): a {r['stack']}-byte stack frame (over {MAX_STACK})")
if not rows:
    sys.exit("ptxas printed no kernel: was -Xptxas -v passed?")
if bad:
    sys.exit("sampler kernels use local memory:\n  " + "\n  ".join(bad))
print(f"{len(rows)} kernel builds, no spills and no stack frame over {MAX_STACK} bytes in the sampler kernels")
