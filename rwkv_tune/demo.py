"""`rwkv-tune demo`: the whole workflow in about a minute on a CPU, offline.

A tiny random RWKV-7 model (World vocabulary) learns a small bundled corpus: prepare the data,
train an adapter, merge, verify, and compare the loss before and after, then generate.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rwkv_tune.errors import UserError

# Our own text, written for the demo: short, repetitive enough that a tiny model can learn it quickly.
CORPUS = [
    "The lighthouse keeper wrote in her log every evening. The sea was calm, the lamp was bright, and the ships "
    "passed safely through the narrow channel.",
    "The lighthouse keeper wrote in her log every morning. The fog was thick, the horn was loud, and the fishing "
    "boats waited in the harbour until noon.",
    "A good recipe for bread needs flour, water, salt and time. Mix the dough, let it rest, fold it twice, and bake "
    "it until the crust sings when you tap it.",
    "A good recipe for soup needs onions, carrots, salt and time. Cut the vegetables, let them soften, add the "
    "water, and cook it until the kitchen smells like home.",
    "User: What does the lighthouse keeper do?\n\nAssistant: She keeps the lamp bright, writes in her log, and "
    "watches the ships pass safely through the channel.",
    "User: How do you bake bread?\n\nAssistant: Mix flour, water and salt, let the dough rest, fold it twice, and "
    "bake it until the crust sings when you tap it.",
    "The small robot counted the stars: one, two, three, four, five, six, seven, eight, nine, ten. Then it began "
    "again, because the sky was large and the night was long.",
    "The small robot counted the waves: one, two, three, four, five, six, seven, eight, nine, ten. Then it rested, "
    "because the tide was turning and the moon was high.",
]

DEMO_PROMPT = "The lighthouse keeper"


@dataclass
class DemoResult:
    """What the demo reports: loss before and after, the merged model and its check, and a sample."""

    out: Path
    loss_before: float
    loss_after: float
    merged: Path
    verified: bool
    sample: str


def write_inputs(out: Path, *, repeats: int = 6) -> tuple[Path, Path]:
    """The tiny base model and the prepared corpus (binidx) under `out`."""
    from rwkv_tune.data.prepare import prepare
    from rwkv_tune.testing import make_model

    out.mkdir(parents=True, exist_ok=True)
    model = make_model(out / "tiny-rwkv7.pth", version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=65536,
                       seed=0)
    corpus = out / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(repeats):
            for text in CORPUS:
                f.write(json.dumps({"text": text}) + "\n")
    prepare([corpus], out / "corpus")
    return model, out / "corpus"


def demo_preset(out: Path, model: Path, data: Path, method: str, *, steps: int) -> dict[str, Any]:
    """The demo's preset: `steps` optimizer steps on CPU (two epochs when it splits evenly)."""
    epochs = 2 if steps % 2 == 0 else 1
    return {
        "model": {"path": str(model)},
        "method": {"name": method, "r": 16, "alpha": 32, "train_parts": ["time", "ln"]},
        "data": {"path": str(data), "ctx_len": 64, "dataload": "pad", "loss_mask": "pad"},
        "train": {"micro_bsz": 4, "epoch_steps": steps // epochs, "epoch_count": epochs, "lr_init": 2e-2,
                  "lr_final": 5e-3, "lr_schedule": "cos_decay", "warmup_steps": min(5, steps // 5),
                  "precision": "fp32", "grad_cp": False, "device": "cpu", "op": "torch", "seed": 0, "l2wrap": False},
        "output": {"dir": str(out / "run"), "merge": True},
    }


def loss_on(model_path: Path, preset: Any) -> float:
    """Mean loss of a model file on the demo corpus (the same batches before and after)."""
    import torch

    from rwkv_tune.model import load_model
    from rwkv_tune.train.evaluation import evaluate

    model = load_model(model_path, dtype=torch.float32)
    return evaluate(model, preset.data.path, preset, torch.device("cpu"), batches=4)


def run_demo(out: Path, *, method: str = "disha", use_tui: bool = False, steps: int = 60,
             console: Any = None) -> DemoResult:
    """Prepare, train, merge, verify, generate; returns the numbers the command prints."""
    import yaml

    from rwkv_tune import preset as preset_mod
    from rwkv_tune.generate import Sampling, generate_text
    from rwkv_tune.model import load_model

    clear_previous_run(out)
    model, data = write_inputs(out)
    preset_path = out / "demo.yaml"
    preset_path.write_text(yaml.safe_dump(demo_preset(out, model, data, method, steps=steps), sort_keys=False))
    p = preset_mod.load(preset_path)
    before = loss_on(model, p)
    if use_tui:
        from rwkv_tune.train.launcher import train_with_dashboard

        code = train_with_dashboard(preset_path, [], None, Path(p.output.dir))
        if code:
            raise UserError(f"the demo's training exited with code {code}", f"See {out / 'run' / 'train.log'}.")
        check_training_ended(Path(p.output.dir))
    else:
        from rwkv_tune.progress import make_printer
        from rwkv_tune.train import run

        result = run(p, echo=make_printer(console) if console is not None else None)
        if result.reason == "diverged":
            raise UserError("the demo's training diverged (NaN losses)", "Try another --method.")
    from rwkv_tune.runs import RunDir
    from rwkv_tune.train.finish import merge_run

    run_dir = RunDir(Path(p.output.dir))
    if not run_dir.merged.exists():
        merge_run(p, console=console)
    report = json.loads(run_dir.merge_report.read_text()) if run_dir.merge_report.exists() else {}
    verified = bool((report.get("verification") or {}).get("checked"))
    after = loss_on(run_dir.merged, p)
    merged_model = load_model(run_dir.merged).eval()
    sample = "".join(generate_text(merged_model, DEMO_PROMPT,
                                   Sampling(max_tokens=24, temperature=0.0, seed=0)))
    return DemoResult(out, before, after, run_dir.merged, verified, sample)


def clear_previous_run(out: Path) -> None:
    """Remove an earlier demo's run under `out` (a stale merged.pth must not stand in for this one)."""
    run = out / "run"
    if not run.exists():
        return
    if not (out / "demo.yaml").exists():
        raise UserError(f"{run} exists and is not from an earlier demo", "Pick another --out folder.")
    from rwkv_tune.train.run_lock import RunLock

    with RunLock(run):  # refused while an earlier demo's trainer still runs there (detached)
        shutil.rmtree(run)


def check_training_ended(run_dir: Path) -> None:
    """After the dashboard: the run must have ended (not detached and still training) before merging."""
    from rwkv_tune.runs import read_events

    last = next((e for e in reversed(read_events(run_dir / "metrics.jsonl"))
                 if e.get("event") in ("run_start", "done")), None)
    if last is None or last.get("event") != "done":
        raise UserError("the demo's training has not ended (it goes on in the background if you detached)",
                        f"Follow it with `rwkv-tune watch {run_dir}`, or run `rwkv-tune demo` again.")
