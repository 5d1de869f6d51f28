"""DeepSpeed ZeRO 1/2/3 (+ offload) with two CPU ranks (gloo), started by `rwkv-tune train --no-tui`.

Every run is checked against one single-process reference run (module-scoped, shared by the
parametrised cases): same step losses, and under ZeRO-3 an adapter file of complete tensors equal
to the reference's, while eval, sampling and the end-of-run merge all complete.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rwkv_tune.data import write_binidx
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.testing import make_model
from rwkv_tune.train import run

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 300  # a hang (e.g. a forward that only rank 0 runs under ZeRO-3) fails instead of blocking
STEPS = 6


def base_preset(root: Path, method: str = "lora", lr: float = 1e-3) -> dict:
    """A 6-step LoRA run on a tiny RWKV-7 with eval and sampling every 2 steps and a checkpoint every 2."""
    model = root / "base.pth"
    if not model.exists():
        make_model(model, version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=200)
        write_binidx(root / "corpus", [[(start + i) % 190 + 5 for i in range(24 + start % 30)] + [0]
                                       for start in range(1, 190, 3)])  # counting documents: learnable
    data = str(root / "corpus")
    return {
        "model": {"path": str(model)},
        "method": {"name": method, "r": 8, "alpha": 16},
        "data": {"path": data, "ctx_len": 32, "dataload": "pad", "eval_path": data, "eval_every": 2, "eval_batches": 1},
        "train": {"micro_bsz": 4, "epoch_steps": STEPS, "epoch_count": 1, "lr_init": lr, "lr_final": lr,
                  "lr_schedule": "constant", "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1,
                  "save_every_steps": 2, "sample_every": 2, "sample_prompts": ["\x05\x06\x07"], "sample_tokens": 4,
                  "zero3_persistence": 0},  # ZeRO-3 partitions even these tiny tensors
        "output": {"dir": str(root / "single")},
    }


def on_ranks(raw: dict, root: Path, name: str, strategy: str, devices: int = 2, **output) -> dict:
    """The same run on `devices` ranks: the same global batch (micro_bsz × devices) and samples per step."""
    train = {**raw["train"], "micro_bsz": 4 // devices, "devices": devices, "strategy": strategy}
    return {**raw, "train": train, "output": {**raw["output"], "dir": str(root / name), **output}}


def train_cli(raw: dict, root: Path, name: str, *args: str, wait: bool = True):
    """`rwkv-tune train PRESET --no-tui` in a subprocess (its own process group, so a test can kill it)."""
    preset = root / f"{name}.yaml"
    preset.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune", "train", str(preset), "--no-tui", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RWKV_TUNE_NO_TUI": "1"})
    if not wait:
        return proc
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{name}: no end within {RUN_TIMEOUT_S}s (a hang?)\n" + out.decode(errors="replace")[-3000:])
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def events(run_dir: Path, kind: str, *, session: int | None = None) -> list[dict]:
    """Events of one kind; `session=-1`: only those after the last run_start (the resumed session)."""
    all_events = list(read_events(Path(run_dir) / "metrics.jsonl"))
    if session is not None:
        starts = [i for i, e in enumerate(all_events) if e["event"] == "run_start"]
        all_events = all_events[starts[session]:]
    return [e for e in all_events if e["event"] == kind]


def losses(run_dir: Path, **kw) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir, "step", **kw)}


def assert_close_losses(got: dict[int, float], want: dict[int, float], rel: float) -> None:
    assert got and set(got) <= set(want), (got, want)
    for step, loss in got.items():
        assert abs(loss - want[step]) <= rel * abs(want[step]), (step, got, want)


def assert_same_adapter(got: Path, want: Path, tol: float) -> None:
    a, b = load_file(got), load_file(want)
    assert a.keys() == b.keys()
    for key in b:
        assert a[key].shape == b[key].shape, key  # complete tensors, not ZeRO-3 shards
        assert torch.allclose(a[key], b[key], atol=tol, rtol=0), (key, (a[key] - b[key]).abs().max())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ds")


@pytest.fixture(scope="module")
def single(root) -> Path:
    """The single-process reference run (LoRA)."""
    raw = base_preset(root)
    result = run(from_dict(raw))
    assert result.reason == "finished"
    return root / "single"


@pytest.fixture(scope="module")
def base_curve(root) -> dict[int, float]:
    """The base model's loss on each step's batch (lr 0): what a resume that lost the weights would show."""
    raw = base_preset(root, lr=0.0)
    raw["train"].update(save_every_steps=0, sample_every=0)
    raw["data"].update(eval_every=0)
    return dict(enumerate(run(from_dict({**raw, "output": {"dir": str(root / "base-curve")}})).losses, 1))


@pytest.fixture(scope="module")
def zero2(root) -> Path:
    """The uninterrupted ZeRO-2 run, shared by the loss check and the resume checks."""
    raw = on_ranks(base_preset(root), root, "zero2", "deepspeed_stage_2")
    train_cli(raw, root, "zero2")
    return root / "zero2"


@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                                      "deepspeed_stage_3", "deepspeed_stage_3_offload"])
def test_two_cpu_ranks_match_one_process(root, single, zero2, strategy):
    if strategy == "deepspeed_stage_2":
        run_dir = zero2
    else:
        name = strategy.removeprefix("deepspeed_")
        train_cli(on_ranks(base_preset(root), root, name, strategy, merge=True), root, name)
        run_dir = root / name
    # same samples per step (rank r reads every world-th sample), same global mean: equal up to fp reordering
    assert len(losses(run_dir)) == STEPS
    assert_close_losses(losses(run_dir), losses(single), 1e-4)
    if strategy.startswith("deepspeed_stage_3"):
        assert_same_adapter(run_dir / "adapter.safetensors", single / "adapter.safetensors", 1e-5)
        # eval and sampling ran on both ranks (collective forwards) and rank 0 reported them; the merge ran
        assert [e["step"] for e in events(run_dir, "eval")] == [2, 4, 6]
        assert [e["step"] for e in events(run_dir, "sample")] == [2, 4, 6]
        assert (run_dir / "merged.pth").exists()


def test_full_fine_tuning_under_zero3_matches_one_process(root):
    raw = base_preset(root, method="full")
    raw = {**raw, "train": {**raw["train"], "epoch_steps": 3, "save_every_steps": 0, "sample_every": 0},
           "output": {"dir": str(root / "full-single")}}
    single = run(from_dict(raw))
    train_cli(on_ranks(raw, root, "full-z3", "deepspeed_stage_3"), root, "full-z3")
    assert_close_losses(losses(root / "full-z3"), dict(enumerate(single.losses, 1)), 1e-4)
    assert len(losses(root / "full-z3")) == 3


def test_infctx_chunks_under_zero2_match_one_process(root):
    """infctx: two backward calls per step (chunk_ctx 16 of ctx_len 32); DeepSpeed reduces on the last one."""
    raw = base_preset(root)
    raw["train"].update(train_type="infctx", chunk_ctx=16, epoch_steps=3, save_every_steps=0, sample_every=0)
    raw["data"].update(eval_every=0)
    single = run(from_dict({**raw, "output": {"dir": str(root / "infctx-single")}}))
    train_cli(on_ranks(raw, root, "infctx-z2", "deepspeed_stage_2"), root, "infctx-z2")
    assert len(losses(root / "infctx-z2")) == 3
    assert_close_losses(losses(root / "infctx-z2"), dict(enumerate(single.losses, 1)), 1e-4)


def test_nan_losses_under_zero3_are_skipped_on_every_rank_like_one_process(root):
    """An absurd learning rate: step 1 trains, step 2's loss is NaN. Both ranks skip it (DeepSpeed updates
    nothing), see NaN again, and stop 'diverged' together (exit 1, no hang), as the single process does."""
    raw = base_preset(root, lr=1e5)
    raw["train"].update(save_every_steps=0, sample_every=0, max_bad_steps=2, grad_clip=0.0)
    raw["data"].update(eval_every=0)
    single = run(from_dict({**raw, "output": {"dir": str(root / "nan-single")}}))
    assert single.reason == "diverged" and single.step == 1
    preset = root / "nan-z3.yaml"
    preset.write_text(yaml.safe_dump(on_ranks(raw, root, "nan-z3", "deepspeed_stage_3")))
    done = subprocess.run([sys.executable, "-m", "rwkv_tune", "train", str(preset), "--no-tui"], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert_close_losses(losses(root / "nan-z3"), dict(enumerate(single.losses, 1)), 1e-4)
    skipped = [e["message"] for e in events(root / "nan-z3", "warning") if "step skipped" in e["message"]]
    assert skipped == ["step 2: loss is nan; step skipped (1 in a row, limit 2)",
                       "step 2: loss is nan; step skipped (2 in a row, limit 2)"]
    assert [e["kind"] for e in events(root / "nan-z3", "error")] == ["diverged"]


def test_sigkill_mid_run_then_resume_auto_matches_the_uninterrupted_run(root, zero2):
    from rwkv_tune.tui.app import write_control

    raw = on_ranks(base_preset(root), root, "killed", "deepspeed_stage_2")
    proc = train_cli(raw, root, "killed", wait=False)
    run_dir = root / "killed"
    deadline = time.time() + RUN_TIMEOUT_S
    while not ((run_dir / "metrics.jsonl").exists() and events(run_dir, "checkpoint")):
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    write_control(run_dir, "pause")  # hold it mid-run (it may be saving the next checkpoint: that is fine too)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(run_dir))
    assert killed_at < STEPS
    train_cli(raw, root, "killed", "--resume", "auto")
    resumed = losses(run_dir, session=-1)
    assert min(resumed) <= killed_at + 1 and max(resumed) == STEPS
    assert_close_losses(resumed, losses(zero2), 1e-6)
    assert_same_adapter(run_dir / "adapter.safetensors", zero2 / "adapter.safetensors", 1e-6)


def test_ctrl_c_stops_and_saves_every_rank_at_the_same_step(root):
    """SIGINT to the launcher's process group (Ctrl-C in a terminal): both ranks stop at one step and save."""
    raw = on_ranks(base_preset(root), root, "ctrl-c", "deepspeed_stage_2")
    raw["train"].update(epoch_steps=500, save_every_steps=0, sample_every=0)
    raw["data"].update(eval_every=0)
    proc = train_cli(raw, root, "ctrl-c", wait=False)
    run_dir = root / "ctrl-c"
    deadline = time.time() + RUN_TIMEOUT_S
    while not ((run_dir / "metrics.jsonl").exists() and len(events(run_dir, "step")) >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode(errors="replace")[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the ranks did not stop after SIGINT")
    done = events(run_dir, "done")
    assert len(done) == 1 and done[0]["reason"] == "interrupted" and done[0]["step"] < 500, done
    checkpoint = run_dir / "checkpoints" / f"step-{done[0]['step']:08d}"
    assert (checkpoint / "complete").exists()
    assert len(list((checkpoint / "deepspeed" / "state").glob("*optim_states.pt"))) == 2


def _copy_until(src: Path, dst: Path, step: int) -> Path:
    """A copy of a run directory as it was right after its checkpoint of `step`."""
    shutil.copytree(src, dst)
    for folder in (dst / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    return dst / "checkpoints" / f"step-{step:08d}"


@pytest.mark.parametrize("direction", ["2to1", "1to2"])
def test_elastic_resume_on_another_rank_count_continues_the_curve(root, single, zero2, base_curve, direction):
    """Weights, step, schedule, data position and AdamW's moments: 2 → 1 through DeepSpeed's universal
    checkpoint, 1 → 2 (ZeRO-2) by slicing the one-process moments into the ranks' partitions."""
    source, devices = (zero2, 1) if direction == "2to1" else (single, 2)
    name = f"elastic-{direction}"
    checkpoint = _copy_until(source, root / name, 2)
    raw = base_preset(root)
    raw = {**raw, "output": {"dir": str(root / name)}} if devices == 1 else on_ranks(raw, root, name,
                                                                                     "deepspeed_stage_2")
    if devices == 1:
        run(from_dict(raw), resume=str(checkpoint))
    else:
        train_cli(raw, root, name, "--resume", str(checkpoint))
    resumed = losses(root / name, session=-1)
    assert min(resumed) == 3 and max(resumed) == STEPS  # continues from the saved step
    reference = losses(single)
    # the weights after step 2 are restored exactly: step 3's loss is the uninterrupted curve's, not the base's
    assert abs(resumed[3] - reference[3]) <= 1e-4 * reference[3], (resumed, reference)
    assert abs(base_curve[3] - reference[3]) > 10 * 1e-4 * reference[3], (base_curve, reference)
    assert_close_losses(resumed, reference, 1e-4)  # AdamW's moments came along too: every later step matches
    warnings = [e["message"] for e in events(root / name, "warning", session=-1)]
    assert not any("moments restart" in w for w in warnings), warnings


def test_elastic_resume_into_zero3_restarts_the_moments_with_a_warning(root, single, base_curve):
    """Where the moments cannot follow (one process → ZeRO-3), they restart and the dashboard says so;
    the weights, step and data position still continue the curve."""
    checkpoint = _copy_until(single, root / "elastic-z3", 2)
    raw = on_ranks(base_preset(root), root, "elastic-z3", "deepspeed_stage_3")
    train_cli(raw, root, "elastic-z3", "--resume", str(checkpoint))
    resumed, reference = losses(root / "elastic-z3", session=-1), losses(single)
    assert min(resumed) == 3 and max(resumed) == STEPS
    assert abs(resumed[3] - reference[3]) <= 1e-4 * reference[3], (resumed, reference)
    for step in resumed:  # a little off the curve (fresh moments), far from the base model's losses
        assert abs(resumed[step] - reference[step]) < abs(base_curve[step] - reference[step]) / 2, (
            step, resumed, reference, base_curve)
    warnings = [e["message"] for e in events(root / "elastic-z3", "warning", session=-1)]
    assert any("moments restart" in w for w in warnings), warnings


def test_two_nodes_started_by_torchrun_match_two_local_ranks(root, zero2):
    """Two torchrun "nodes" on one machine, one process each, each running `rwkv-tune train` as its rank."""
    raw = on_ranks(base_preset(root), root, "two-nodes", "deepspeed_stage_2")
    raw["train"].update(devices=1, nodes=2, micro_bsz=2)
    preset = root / "two-nodes.yaml"
    preset.write_text(yaml.safe_dump(raw))
    port = str(29400 + os.getpid() % 500)
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(n),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
                               "-m", "rwkv_tune", "train", str(preset), "--no-tui"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
             for n in (0, 1)]
    try:
        outputs = [p.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace") for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert_close_losses(losses(root / "two-nodes"), losses(zero2), 1e-6)
    assert len(losses(root / "two-nodes")) == STEPS
