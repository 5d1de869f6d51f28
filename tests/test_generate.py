"""`rwkv-tune generate`: greedy decoding through the recurrent state equals re-reading the whole sequence,
a run directory's adapter is applied on the fly, and a run without an adapter is one line, exit 2."""

from __future__ import annotations

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rwkv_tune import load_model, peft
from rwkv_tune.cli import app
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.generate import Sampling, generate_tokens, sample_token

PROMPT = "The lighthouse keeper"
TOKENS = 12


@pytest.fixture
def world_model(tiny_model):
    """A tiny RWKV-7 with the World vocabulary, so any prompt tokenizes into it."""
    return tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=65536)


def greedy_by_rereading(model, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy decoding the slow way: a full forward over the whole sequence for every new token."""
    seq = list(prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
            if token == 0:
                break
            out.append(token)
            seq.append(token)
    return out


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def test_recurrent_greedy_decoding_equals_rereading_the_sequence(world_model):
    model = load_model(world_model).eval()
    prompt = get_tokenizer().encode(PROMPT)
    fast = list(generate_tokens(model, prompt, Sampling(max_tokens=TOKENS, temperature=0.0, stop_at_eod=False)))
    assert fast == greedy_by_rereading(model, prompt, TOKENS) and len(fast) == TOKENS

    seq = prompt + fast  # the step path's logits at every position, against one full forward
    with torch.no_grad():
        full = model(torch.tensor([seq]))[0]
        _, state = model(torch.tensor([seq[:1]]), return_state=True)
        stepped = []
        for token in seq[1:]:
            logits, state = model.step(torch.tensor([token]), state)
            stepped.append(logits[0])
    assert (torch.stack(stepped) - full[1:]).abs().max().item() <= 1e-4


def test_generate_command_is_deterministic_and_prints_the_greedy_text(world_model):
    args = ["generate", str(world_model), "--prompt", PROMPT, "--temperature", "0", "--max-tokens", str(TOKENS)]
    first, second = cli(*args), cli(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    expected = greedy_by_rereading(load_model(world_model).eval(), get_tokenizer().encode(PROMPT), TOKENS)
    assert first.stdout == PROMPT + get_tokenizer().decode(expected) + "\n"
    assert f"{len(expected)} tokens in" in first.stderr and "tokens/s" in first.stderr


def test_sampling_is_repeatable_with_a_seed_and_leaves_the_global_rng_alone(world_model):
    model = load_model(world_model).eval()
    prompt = get_tokenizer().encode(PROMPT)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = list(generate_tokens(model, prompt, Sampling(max_tokens=8, temperature=1.0, top_p=0.9, seed=7)))
    list(generate_tokens(model, prompt, Sampling(max_tokens=8, temperature=1.0, top_p=0.9, seed=None)))
    assert torch.rand(1) == before
    assert a == list(generate_tokens(model, prompt, Sampling(max_tokens=8, temperature=1.0, top_p=0.9, seed=7)))


def test_top_p_zero_keeps_the_most_likely_token():
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    picks = {sample_token(logits, 1.0, 0.0, torch.Generator().manual_seed(s)) for s in range(20)}
    assert picks == {1}


def make_run(tmp_path, base):
    """A run directory with a LoRA adapter that clearly changes the base's outputs."""
    model = load_model(base)
    peft.apply(model, {"name": "lora", "r": 4, "alpha": 8, "train_parts": []})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    run = tmp_path / "run"
    run.mkdir()
    peft.save_adapter(model, run / "adapter.safetensors")
    preset = {"model": {"path": str(base)}, "method": {"name": "lora", "r": 4, "alpha": 8},
              "data": {"path": str(tmp_path / "corpus")}, "output": {"dir": str(run)}}
    (run / "preset.yaml").write_text(yaml.safe_dump(preset))
    return run


def test_a_run_directory_applies_its_adapter_on_the_fly(tmp_path, world_model):
    from rwkv_tune.generate import load_for_generation
    from rwkv_tune.merge import merge

    run = make_run(tmp_path, world_model)
    merge(world_model, run / "adapter.safetensors", tmp_path / "merged.pth")
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    with torch.no_grad():
        on_the_fly = load_for_generation(run)(ids)
        merged = load_model(tmp_path / "merged.pth").eval()(ids)
        base = load_model(world_model).eval()(ids)
    assert (on_the_fly - merged).abs().max().item() <= 1e-4
    assert (on_the_fly - base).abs().max().item() > 1e-2

    args = ["--prompt", PROMPT, "--temperature", "0", "--max-tokens", str(TOKENS)]
    with_adapter, without = cli("generate", str(run), *args), cli("generate", str(world_model), *args)
    assert with_adapter.exit_code == 0, with_adapter.output
    assert with_adapter.stdout == cli("generate", str(tmp_path / "merged.pth"), *args).stdout
    assert with_adapter.stdout != without.stdout


@pytest.mark.parametrize("what", ["no adapter", "not a run", "no model"])
def test_nothing_to_generate_from_is_one_line_and_exit_2(tmp_path, world_model, what):
    run = make_run(tmp_path, world_model)
    if what == "no adapter":
        (run / "adapter.safetensors").unlink()
        source, message = run, f"error: run {run} has no adapter yet"
    elif what == "not a run":
        (run / "preset.yaml").unlink()
        source, message = run, f"error: {run} is not a run directory"
    else:
        source, message = tmp_path / "missing.pth", "does not exist"
    result = cli("generate", str(source), "--prompt", PROMPT)
    assert result.exit_code == 2
    assert result.stdout == "" and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
