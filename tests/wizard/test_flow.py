"""The wizard's pure flow: which question comes next, recommended values, answers, the estimate lines, the preset."""

from __future__ import annotations

import io
import struct
from dataclasses import replace

import pytest

from rwkv_tune import wizard
from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.estimate import find_gpu, released_spec
from rwkv_tune.estimate.gpus import GPU
from rwkv_tune.preset import from_dict, load
from rwkv_tune.presets_library import render


def state_for(size: str = "1.5B", version: int = 7, **answers) -> wizard.State:
    """A state whose model is a released size (no file needed) and whose data path is set."""
    return wizard.State(spec=released_spec(size, version), answers={"model": "m.pth", "data": "data/train", **answers})


def keys_asked(state: wizard.State, replies: dict | None = None) -> list[str]:
    """Walk the flow answering every question with its default (or `replies`), returning the keys in order."""
    asked = []
    while (q := wizard.next_question(state)) is not None:
        asked.append(q.key)
        state = wizard.answer(state, q.key, (replies or {}).get(q.key, q.default), must_exist=False)
    return asked


def test_flow_order_and_what_is_skipped():
    start = wizard.State()
    assert wizard.next_question(start).key == "model"
    short = ["objective", "gpu", "method", "rank", "quant", "ctx_len", "micro_bsz", "grad_cp", "more", "out"]
    assert keys_asked(state_for()) == short
    assert keys_asked(state_for(), {"more": True}) == short[:-1] + [
        "precision", "strategy", "lr_init", "lr_final", "epoch_steps", "epoch_count", "out"]
    assert "rank" not in keys_asked(state_for(), {"method": "state"})
    full = keys_asked(state_for(), {"method": "full"})
    assert "rank" not in full and "quant" not in full
    two = wizard.State(spec=released_spec("0.1B"), answers={"model": "m", "data": "d", "more": True},
                       gpus=(GPU("A", 24.0), GPU("B", 24.0)))
    assert "devices" in keys_asked(two)  # only asked when the machine has several GPUs


def test_model_question_offers_found_files_and_the_select_questions_have_choices():
    q = wizard.question("model", wizard.State(found_models=("a.pth", "b/c.safetensors")))
    assert q.default == "a.pth" and [c.value for c in q.choices] == ["a.pth", "b/c.safetensors"]
    method = wizard.question("method", state_for())
    assert [c.value for c in method.choices] == ["lora", "pissa", "miss", "bat", "state", "full"]
    assert all(c.description for c in method.choices)  # one-line explanation each
    detected = GPU("NVIDIA GeForce RTX 4090", 23.99)
    gpu = wizard.question("gpu", wizard.State(spec=released_spec("0.1B"), gpus=(detected,)))
    assert gpu.default == detected and gpu.choices[0].value == detected and gpu.choices[-1].value == wizard.NO_GPU


def test_recommended_rank_and_learning_rates_by_size_and_method():
    assert wizard.default("rank", state_for("0.1B", method="lora")) == 32
    assert wizard.default("rank", state_for("1.5B", method="lora")) == 64
    assert wizard.default("rank", state_for("0.1B", method="miss")) == 64
    odd = replace(released_spec("0.1B"), n_embd=160, dim_ffn=640)
    assert wizard.recommended_rank(odd, "bat") == 32  # bat: the largest r dividing both widths
    assert wizard.recommended_lr(released_spec("1.5B"), "state") == (1.0, 0.01)
    assert wizard.recommended_lr(released_spec("1.5B"), "lora") == (1e-4, 2e-5)
    assert wizard.recommended_lr(released_spec("7B", 6), "lora") == (5e-5, 1e-5)
    assert wizard.resolved(state_for(method="state"))["lr_init"] == 1.0
    # lr_final follows a chosen lr_init, so the default never contradicts it (decay goes down)
    assert wizard.resolved(state_for(method="lora", lr_init=1e-5))["lr_final"] == pytest.approx(2e-6)
    assert wizard.resolved(state_for(method="state", lr_init=0.5))["lr_final"] == pytest.approx(0.005)


def test_recommended_quant_is_the_lightest_that_fits_the_target():
    assert wizard.default("quant", state_for("7B", 6, gpu=find_gpu("4090"))) == "none"
    assert wizard.default("quant", state_for("7B", 6, gpu=find_gpu("3060"))) == "nf4"
    assert wizard.default("quant", state_for("7B", 6, gpu=find_gpu("16GB"))) == "int8"
    assert wizard.default("quant", state_for("7B", 6)) == "none"  # no target: no reason to quantise
    assert wizard.default("quant", state_for("7B", 6, gpu=find_gpu("3060"), method="full")) == "none"


def test_devices_and_strategy_follow_the_gpus_it_sees():
    gpus = (GPU("A", 80.0), GPU("B", 80.0))
    s = wizard.State(spec=released_spec("1.5B"), answers={"model": "m", "data": "d"}, gpus=gpus)
    v = wizard.resolved(s)
    assert v["devices"] == 2 and v["strategy"] == "deepspeed_stage_1" and v["gpu"] == gpus[0]
    assert wizard.resolved(state_for())["strategy"] == "single"
    with pytest.raises(ConfigError, match="DeepSpeed"):
        wizard.answer_many(state_for(), {"devices": 2, "strategy": "single"})


@pytest.mark.parametrize(("key", "raw", "match"), [
    ("rank", "abc", "not a whole number"), ("rank", 0, "below 1"), ("method", "lorra", "not one of"),
    ("quant", "nf5", "not one of"), ("lr_init", "fast", "not a number"), ("grad_cp", "maybe", "yes/no"),
    ("gpu", "RTX 9999", "unknown --gpu"), ("ctx_len", "-5", "below 1"),
])
def test_bad_answers_are_refused_with_the_reason(key, raw, match):
    s = state_for()
    with pytest.raises(ConfigError, match=match):
        wizard.answer(s, key, raw)
    assert key not in s.answers


def test_answers_the_preset_rejects_are_refused():
    s = state_for("0.1B", method="bat")
    with pytest.raises(ConfigError, match="divisible"):
        wizard.answer(s, "rank", 100)  # bat: r must divide n_embd 768 and dim_ffn 3072
    wizard.answer(s, "rank", 64)
    with pytest.raises(ConfigError, match="larger than n_embd"):
        wizard.answer(state_for("0.1B", method="lora"), "rank", 1024)


def test_model_answer_detects_the_spec_and_a_bad_file_is_refused(tiny_model, tmp_path):
    path = tiny_model(6, n_layer=2, n_embd=64, head_size=32)
    s = wizard.answer(wizard.State(), "model", f"  '{path}' ")
    assert s.spec.version == 6 and s.spec.n_embd == 64 and s.answers["model"] == str(path)
    assert "RWKV-6" in wizard.describe_spec(s.spec)
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    with pytest.raises(UserError, match="bad.pth"):
        wizard.answer(wizard.State(), "model", str(bad))


def test_data_kinds_and_documents(tmp_path):
    prefix = tmp_path / "tok"
    (tmp_path / "tok.bin").write_bytes(b"\0" * 8)
    (tmp_path / "tok.idx").write_bytes(struct.pack("<9sQBQQ", b"MMIDIDX\x00\x00", 1, 8, 123, 124) + b"\0" * 16)
    info = wizard.inspect_data(str(prefix))
    assert (info.kind, info.documents, info.raw) == ("binidx", 123, False)
    assert wizard.inspect_data(str(tmp_path / "tok.bin")).path == str(prefix)
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n\n{"text": "y"}\n')
    info = wizard.inspect_data(str(tmp_path / "a.jsonl"))
    assert (info.kind, info.documents, info.raw) == ("jsonl", 2, True)
    assert wizard.prepare_command(info) == (f"rwkv-tune data prepare {tmp_path / 'a.jsonl'} --out {tmp_path / 'a'}",
                                            str(tmp_path / "a"))
    (tmp_path / "t.txt").write_text("hello")
    assert wizard.inspect_data(str(tmp_path / "t.txt")).kind == "text"
    assert wizard.inspect_data(str(tmp_path)).kind == "folder"
    assert wizard.inspect_data(str(tmp_path / "nope")).kind == "missing"
    with pytest.raises(ConfigError, match="does not exist"):
        wizard.answer(wizard.State(), "data", str(tmp_path / "nope"))
    lenient = wizard.answer(wizard.State(), "data", str(tmp_path / "nope"), must_exist=False)
    assert lenient.warnings and "does not exist" in lenient.warnings[0]
    # one pass over the documents is the recommended epoch length
    s = wizard.answer(state_for(), "data", str(prefix))
    assert wizard.resolved(s)["epoch_steps"] == 123
    assert wizard.resolved(wizard.answer(s, "micro_bsz", 4))["epoch_steps"] == 30


def test_summary_shows_breakdown_fit_per_gpu_and_the_fix():
    here = GPU("NVIDIA GeForce RTX 3060", 12.0)
    s = wizard.State(spec=released_spec("7B", 6), answers={"model": "m", "data": "d", "quant": "none"}, gpus=(here,))
    e = wizard.current_estimate(s)
    lines = wizard.summary(e, s.gpus)
    assert lines[0].startswith(f"VRAM ≈ {e.total_gib:.2f} GiB") and "base" in lines[0] and "AdamW" in lines[0]
    assert any(line.startswith("✗ does not fit NVIDIA GeForce RTX 3060 (this machine)") for line in lines)
    fix = next(line for line in lines if line.startswith("fix for"))
    assert "--quant nf4" in fix and "saves" in fix
    fixed = wizard.apply_fix(s, e.fix.flags)
    assert wizard.current_estimate(fixed).fits_target
    ok = wizard.summary(wizard.current_estimate(state_for("0.1B", gpu=find_gpu("4090"))))
    assert any(line.startswith("✓ fits RTX 4090 24GB") for line in ok)
    assert any("micro_bsz up to" in line for line in ok)


def test_apply_fix_halving_micro_bsz_keeps_the_batch():
    s = state_for("1.5B", micro_bsz=8)
    fixed = wizard.apply_fix(s, "--micro-bsz 2 --grad-cp")
    v = wizard.resolved(fixed)
    assert (v["micro_bsz"], v["accumulate_grad_batches"], v["grad_cp"]) == (2, 4, True)


@pytest.mark.parametrize("method", ["lora", "pissa", "miss", "bat", "state", "full", "disha"])
def test_answers_make_a_preset_that_renders_and_loads_back(method, tmp_path):
    s = state_for("0.4B", method=method, ctx_len=2048, micro_bsz=2, gpu=find_gpu("4090"))
    preset = wizard.build_preset(s)
    name, mode = wizard.method_parts(wizard.ALIASES.get(method, method))
    assert preset.method.name == name and (name != "miss" or preset.method.mode == mode)
    text = render(preset, ["a header", "", "second line"])
    assert text.startswith("# a header\n#\n# second line\n")
    assert "# adapter rank" in text or name in ("state", "full")
    out = tmp_path / "p.yaml"
    out.write_text(text)
    again = load(out)
    assert again.to_dict() == preset.to_dict()
    assert from_dict(preset.to_dict()).to_dict() == preset.to_dict()


def test_float_values_read_back_as_floats():
    s = state_for("0.1B", lr_init=2e-5, lr_final=1e-6)
    text = render(wizard.build_preset(s))
    assert "lr_init: 2.0e-5" in text and "lr_final: 1.0e-6" in text
    assert load_text(text).train.lr_final == 1e-6


def load_text(text: str):
    import yaml

    return from_dict(yaml.safe_load(text))


def test_parse_nvidia_smi():
    gpus = wizard.parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564\nNVIDIA H100 80GB HBM3, 81559\nbroken line\n")
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]
    assert gpus[0].memory_gib == pytest.approx(23.99, abs=0.01) and gpus[0].bf16_tflops  # matched to the table
    assert gpus[1].memory_gib == pytest.approx(79.65, abs=0.01)


def test_find_models_skips_hidden_and_run_folders(tmp_path):
    for rel in ("a.pth", "models/b.safetensors", ".cache/c.pth", "runs/x/d.pth", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert wizard.find_models(tmp_path) == ("a.pth", "models/b.safetensors")


def test_offer_prepare_tokenizes_raw_data_and_points_the_preset_at_it(tmp_path, monkeypatch):
    from rich.console import Console

    from rwkv_tune.wizard import prompts as wizard_prompts

    raw = tmp_path / "chat.jsonl"
    raw.write_text('{"text": "hello world"}\n' * 5)
    s = wizard.answer(state_for("0.1B"), "data", str(raw))
    monkeypatch.setattr(wizard_prompts, "confirm", lambda message, default=False: True)
    after = wizard_prompts._offer_prepare(s, Console(file=io.StringIO()))
    assert after.data.kind == "binidx" and after.data.documents == 5
    assert after.answers["data"] == str(tmp_path / "chat") and (tmp_path / "chat.bin").is_file()
    assert wizard.resolved(after)["epoch_steps"] == 5
