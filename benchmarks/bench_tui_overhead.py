"""Training speed with and without the dashboard: the same tiny CPU run, `--no-tui` vs the TUI in a pty.

    python benchmarks/bench_tui_overhead.py [--steps 60] [--repeats 3] [--n-embd 128] [--ctx-len 128]

Each repeat trains once with plain output (stdout a pipe) and once with the dashboard in a pseudo-terminal
(pexpect, 100×30), in alternating order so that machine noise hits both. Tokens/s are the trainer's own
`tokens_per_s` from metrics.jsonl, averaged over the steps after the first WARMUP; the median and the best
repeat of each mode are printed (the best is the steadier number on a shared machine), and the dashboard
process's own CPU use while training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

WARMUP = 5  # first steps left out: allocator and thread-pool warm-up


def make_inputs(root: Path, *, n_embd: int, ctx_len: int, steps: int) -> Path:
    """A tiny RWKV-7, a counting corpus and the preset both modes train; returns the preset path."""
    from rwkv_tune.data import write_binidx
    from rwkv_tune.testing import make_model

    model = make_model(root / "base.pth", version=7, n_layer=2, n_embd=n_embd, head_size=64, vocab_size=1000)
    docs = [[(start + i) % 990 + 5 for i in range(ctx_len * 2)] + [0] for start in range(0, 990, 7)]
    write_binidx(root / "corpus", docs)
    preset = {
        "model": {"path": str(model)},
        "method": {"name": "lora", "r": 16, "alpha": 32},
        "data": {"path": str(root / "corpus"), "ctx_len": ctx_len, "dataload": "pad"},
        "train": {"micro_bsz": 4, "epoch_steps": steps, "epoch_count": 1, "lr_init": 1e-3, "lr_final": 1e-4,
                  "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 0},
        "output": {"dir": str(root / "run")},
    }
    path = root / "preset.yaml"
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


def command() -> list[str]:
    script = Path(sys.executable).with_name("rwkv-tune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rwkv_tune"]


def env() -> dict[str, str]:
    out = {**os.environ, "TERM": "xterm-256color"}
    out.pop("RWKV_TUNE_NO_TUI", None)
    return out


def train_plain(preset: Path, run_dir: Path) -> None:
    subprocess.run([*command(), "train", str(preset), "--no-tui", "--set", f"output.dir={run_dir}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())


def train_tui(preset: Path, run_dir: Path) -> float | None:
    """Train behind the dashboard in a pty; returns the dashboard process's CPU share while training (psutil)."""
    import pexpect

    cmd = command()
    child = pexpect.spawn(cmd[0], [*cmd[1:], "train", str(preset), "--set", f"output.dir={run_dir}"], env=env(),
                          dimensions=(30, 100), timeout=600)
    cpu = ui_cpu_while_training(child, run_dir)
    child.expect(pexpect.EOF)  # reading the screen as a terminal would; the dashboard exits after the run
    child.close()
    if child.exitstatus != 0:
        raise SystemExit(f"the dashboard run failed (exit {child.exitstatus}); see {run_dir / 'train.log'}")
    return cpu


def ui_cpu_while_training(child, run_dir: Path) -> float | None:
    """CPU seconds per second of the dashboard process between the first step event and the done event."""
    try:
        import psutil
    except ImportError:
        return None
    import pexpect

    ui = psutil.Process(child.pid)
    metrics = run_dir / "metrics.jsonl"
    start = None
    checked = 0.0
    while True:
        try:
            child.read_nonblocking(65536, timeout=0.2)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return None
        if time.perf_counter() - checked < 0.2:  # the harness itself should stay out of the way
            continue
        checked = time.perf_counter()
        text = metrics.read_text(encoding="utf-8") if metrics.exists() else ""
        if start is None and '"event": "step"' in text:
            start = (time.perf_counter(), sum(ui.cpu_times()[:2]))
        if start is not None and '"event": "done"' in text:
            return (sum(ui.cpu_times()[:2]) - start[1]) / (time.perf_counter() - start[0])


def tokens_per_s(run_dir: Path) -> float:
    """Mean of the trainer's tokens_per_s over the steps after WARMUP."""
    rates = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") == "step" and event["step"] > WARMUP:
            rates.append(float(event["tokens_per_s"]))
    if not rates:
        raise SystemExit(f"no step events after step {WARMUP} in {run_dir}; raise --steps")
    return statistics.fmean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--ctx-len", type=int, default=128)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        root = Path(tmp)
        preset = make_inputs(root, n_embd=args.n_embd, ctx_len=args.ctx_len, steps=args.steps)
        print(f"tiny run: RWKV-7 L2 D{args.n_embd}, ctx {args.ctx_len}, micro_bsz 4, {args.steps} steps, LoRA r16, "
              f"cpu ({os.cpu_count()} cores); tokens/s = mean over steps > {WARMUP}")
        plain: list[float] = []
        tui: list[float] = []
        cpu: list[float] = []
        for i in range(args.repeats):
            order = ("plain", "tui") if i % 2 == 0 else ("tui", "plain")
            for mode in order:
                run_dir = root / f"{mode}-{i}"
                if mode == "plain":
                    train_plain(preset, run_dir)
                    plain.append(tokens_per_s(run_dir))
                else:
                    share = train_tui(preset, run_dir)
                    if share is not None:
                        cpu.append(share)
                    tui.append(tokens_per_s(run_dir))
            ui = f" · dashboard process {100 * cpu[-1]:.1f}% of a core" if len(cpu) == i + 1 else ""
            print(f"repeat {i + 1}: --no-tui {plain[-1]:8.1f} tok/s · dashboard {tui[-1]:8.1f} tok/s{ui}", flush=True)
        for name, pick in (("median", statistics.median), ("best", max)):
            p, t = pick(plain), pick(tui)
            print(f"{name}: --no-tui {p:.1f} tok/s · with the dashboard {t:.1f} tok/s · ratio {t / p:.3f}")
        if cpu:
            print(f"dashboard process while training: {100 * statistics.median(cpu):.1f}% of one core (median)")


if __name__ == "__main__":
    main()
