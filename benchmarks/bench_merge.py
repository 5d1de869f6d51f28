"""`rwkv_tune.merge.merge` on a generated ~1 GB official-format model: MB/s and peak RSS against the bound.

    python benchmarks/bench_merge.py [--n-layer 24] [--n-embd 1024] [--vocab 65536] [--dtype bf16]
                                     [--method lora] [--r 64] [--quant none] [--dir DIR] [--keep]

Defaults are the shape of a released RWKV-7 0.4B (L24 C1024, vocab 65536) in bf16: a ~0.9 GB file.
A first child process writes the base model and a trained-looking adapter (every default target,
plus the default time+ln parts, all perturbed); then each merge runs in its own fresh child, which
reports its peak resident memory (VmHWM from /proc/self/status: the high-water mark of the merge
process's own memory; getrusage's ru_maxrss would also count the pre-exec copy of its parent).
Prints the base size, seconds, MB/s (base bytes / merge wall time, imports excluded) and peak RSS
next to the issue's bound, 1.3 × base file size + 300 MB, with and without verification.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 1e6

GENERATE = r"""
import json, sys, time
import torch
from rwkv_tune import load_model, peft
from rwkv_tune.checkpoint import save_state_dict
from rwkv_tune.testing import make_state_dict

a = json.loads(sys.argv[1])
folder = a["dir"]
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a["dtype"]]
sd = make_state_dict(7, a["n_layer"], a["n_embd"], a["vocab"], 64, dtype=dtype)
save_state_dict(sd, f"{folder}/base.pth")
model = load_model({k: v.clone() for k, v in sd.items()})
params = peft.apply(model, {"name": a["method"], "r": a["r"], "quant": a["quant"]})
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in params:
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.01)
peft.save_adapter(model, f"{folder}/adapter.safetensors")
"""

MERGE = r"""
import json, sys, time
t0 = time.perf_counter()
from rwkv_tune.merge import merge

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

base, adapter, out, verify = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
idle = hwm()
t1 = time.perf_counter()
report = merge(base, adapter, out, verify=verify)
t2 = time.perf_counter()
print(json.dumps({"merge_s": t2 - t1, "import_s": t1 - t0, "idle_bytes": idle, "peak_bytes": hwm(),
                  "verification": report.verification, "merged_into": report.merged_into}))
"""


def child(code: str, *argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"child failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--n-embd", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--method", default="lora")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--quant", default="none", choices=("none", "int8", "nf4", "fp4"))
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()

    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="bench-merge-")
    folder = args.dir or Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    child(GENERATE, json.dumps({**vars(args), "dir": str(folder)}))
    base, adapter = folder / "base.pth", folder / "adapter.safetensors"
    size = base.stat().st_size / MB
    bound = 1.3 * size + 300
    print(f"base   RWKV-7 L{args.n_layer} C{args.n_embd} V{args.vocab} {args.dtype}: {size:,.1f} MB; "
          f"adapter {args.method} r={args.r} quant={args.quant} (+ time, ln parts): "
          f"{adapter.stat().st_size / MB:,.1f} MB")
    print(f"bound  peak RSS ≤ 1.3 × {size:,.1f} + 300 = {bound:,.1f} MB")
    print(f"{'run':<13}{'merge s':>9}{'MB/s':>8}{'peak RSS MB':>13}{'× base':>8}  {'in bound':<10}check")
    for verify in (False, True):
        out = folder / f"merged-{'v' if verify else 'nv'}.pth"
        info = json.loads(child(MERGE, str(base), str(adapter), str(out), "1" if verify else "0").splitlines()[-1])
        peak = info["peak_bytes"] / MB
        v = info["verification"]
        check = (f"max |Δlogit| {v['max_abs_diff']:.3g} ≤ {v['tolerance']:.3g} (dtype rounding "
                 f"{v['dtype_rounding']:.3g}, fp32 merge {v['fp32_merge_diff']:.2g})" if v.get("checked")
                 else "not verified")
        label = "verify" if verify else "--no-verify"
        print(f"{label:<13}{info['merge_s']:>9.2f}{size / info['merge_s']:>8.1f}{peak:>13,.1f}{peak / size:>8.2f}  "
              f"{'yes' if peak <= bound else 'NO':<10}{check}")
        if not args.keep:
            out.unlink()
    print(f"(a merge child's RSS after importing torch + rwkv_tune: {info['idle_bytes'] / MB:,.0f} MB; "
          f"merged into {info['merged_into']})")
    if tmp is not None and not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()
