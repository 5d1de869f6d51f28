"""Our no-grad forward against the official `rwkv` pip runtime on the same tiny v7 model (CPU).

    python benchmarks/bench_forward.py [--n-layer 4] [--n-embd 256] [--T 512] [--repeats 5]

Prints tokens/s of each and the ratio, measured in one run (the pip runtime in a subprocess,
because it must be imported with RWKV_V7_ON=1 and changes global torch flags).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rwkv_tune import load_model
from rwkv_tune.testing import make_model

PIP_TIMER = r"""
import json, os, statistics, sys, time
os.environ["RWKV_V7_ON"] = "1"; os.environ["RWKV_CUDA_ON"] = "0"
import torch
torch.set_num_threads(int(sys.argv[4]))
from rwkv.model import RWKV
m = RWKV(model=sys.argv[1], strategy="cpu fp32")
tokens = json.loads(sys.argv[2]); times = []
m.forward(tokens, None, full_output=True)
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); m.forward(tokens, None, full_output=True); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--T", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for both runtimes (use 1 on a busy machine: oversubscription skews timings)")
    args = parser.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_model(Path(tmp) / "bench.pth", version=7, n_layer=args.n_layer, n_embd=args.n_embd,
                          vocab_size=args.vocab_size)
        tokens = torch.randint(0, args.vocab_size, (args.T,), generator=torch.Generator().manual_seed(0)).tolist()
        model = load_model(path).eval()
        idx = torch.tensor([tokens])
        ours = []
        with torch.no_grad():
            model(idx)
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(idx)
                ours.append(time.perf_counter() - t0)
        out = subprocess.run([sys.executable, "-c", PIP_TIMER, str(path.with_suffix("")), json.dumps(tokens),
                              str(args.repeats), str(threads)], capture_output=True, text=True, check=True)
        pip_times = json.loads(out.stdout.strip().splitlines()[-1])
    ours_s, pip_s = statistics.median(ours), statistics.median(pip_times)
    print(f"v7 L={args.n_layer} C={args.n_embd} T={args.T}, CPU threads={threads}, no-grad forward, median of {args.repeats}")
    print(f"{'runtime':<24}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'rwkv-tune (torch op)':<24}{ours_s:>10.4f}{args.T / ours_s:>12.0f}")
    print(f"{'rwkv pip 0.8.32':<24}{pip_s:>10.4f}{args.T / pip_s:>12.0f}")
    print(f"speedup: {pip_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
