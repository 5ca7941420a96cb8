"""Reads `nvcc -Xptxas -v` output on stdin; prints registers / stack / spills / shared memory per kernel and arch;
exits 1 when a sampler kernel spills to local memory: the v2 paths, the update op, and the v1 staged fallback (it
spilled 212 bytes on sm_90 while it had one instantiation of its forward per activation kind; one instantiation
with the kind dispatched per element in its epilogue removed the spill: docs/CUDA_KERNELS.md), or has a stack frame
over MAX_STACK bytes (local memory that ptxas does not call a spill: e.g. the kernel's parameter block copied to the
stack when its address is taken, 9,360 bytes once in the staged kernel).
With `--ptx DIR` (the PTX nvcc kept, `--keep --keep-dir DIR`, of the same compile: no second compile), it also
checks the throughput path's tensor cores: in every PTX file (one per compute_XX) the functions of the tf32
instantiation (`latent_throughput_kernel<1>`, `TileEngine<float, DeviceCtx, 1>`) contain
`mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32`, those of bf16 (`<2>`) the m16n8k16 bf16 form, neither
contains the other's, and the fp32 ones (`<0>`) none: exit 1 otherwise. (PTX, not SASS: the toolkit here has no
cuobjdump; the mma is inline asm volatile, which ptxas cannot drop.)"""
import glob
import os
import re
import subprocess
import sys

MMA = {1: "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", 2: "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"}


def ptx_functions(text):
    """{mangled name: body} of every .entry / .func of a PTX file."""
    heads = list(re.finditer(r"^\s*(?:\.visible\s+|\.weak\s+)?\.(?:entry|func)\s+(?:\([^)]*\)\s*)?(\w+)", text,
                             re.M))
    return {m.group(1): text[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))]
            for i, m in enumerate(heads)}


def mma_check(ptx_dir):
    """Messages for what is wrong with the mma.sync of the throughput kernels' PTX (empty: all good)."""
    files = sorted(glob.glob(os.path.join(ptx_dir, "*latent_throughput*.ptx")))  # csrc/cuda/latent_throughput.cu's
    if not files:
        return [f"no latent_throughput PTX in {ptx_dir} (nvcc on latent_throughput.cu with --keep --keep-dir?)"]
    bad = []
    for f in files:
        funcs = ptx_functions(open(f).read())
        for prec, name in ((0, "fp32"), (1, "tf32"), (2, "bf16")):
            # TileEngine<float, DeviceCtx, PREC>: its third argument right after the context (a later "Li0E" is
            # another template's, e.g. forward_k<0>)
            mine = [b for n, b in funcs.items()
                    if re.search(rf"latent_throughput_kernelILi{prec}E|TileEngineIf(?:NS0_9DeviceCtxE|S[0-9A-Z]*_)Li{prec}E", n)]
            if not mine:
                bad.append(f"{os.path.basename(f)}: no function of the {name} throughput kernel")
                continue
            for p, form in MMA.items():
                has = any(form in b for b in mine)
                if p == prec and not has:
                    bad.append(f"{os.path.basename(f)}: the {name} throughput kernel has no {form}")
                if p != prec and has:
                    bad.append(f"{os.path.basename(f)}: the {name} throughput kernel contains {form}")
        print(f"{os.path.basename(f)}: throughput kernels tf32 -> {MMA[1].split('.')[3]} tf32, "
              f"bf16 -> {MMA[2].split('.')[3]} bf16, fp32 -> no mma.sync: "
              f"{'ok' if not bad else 'FAILED'}")
    return bad


ptx_dir = sys.argv[sys.argv.index("--ptx") + 1] if "--ptx" in sys.argv else None

HOT = ("latent_resident_kernel", "latent_cluster_kernel", "latent_streamed_kernel", "latent_throughput_kernel",
       "latent_staged_kernel", "update_kernel")
MAX_STACK = 1024  # bytes; today's largest, 288 (latent_cluster_kernel<2, 4>, sm_90), is the out-of-line calls' frames
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
    # ptxas prints "Function properties for F" and then F's figures, for the entry and then for each function
    # it kept out of line (a callee: block_step, block_head, ...): the kernel's stack is the largest of them (a
    # callee's frame is local memory of this kernel too), its spills their sum. Taking the last line as the
    # kernel's, as this script once did, hid a 9.5 KB frame of the kernel behind its callees' 0 bytes.
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        stack, st, ld = map(int, m.groups())
        cur["stack"] = max(cur["stack"], stack)
        cur["spill_st"] += st
        cur["spill_ld"] += ld
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
if ptx_dir is not None:
    mbad = mma_check(ptx_dir)
    if mbad:
        sys.exit("the throughput path's tensor-core PTX:\n  " + "\n  ".join(mbad))
print(f"{len(rows)} kernel builds, no spills and no stack frame over {MAX_STACK} bytes in the sampler kernels")
