"""GRPO: advantages, the clipped loss with the k3 KL, batched rollouts from one prefill, exact resume, rollouts.jsonl."""

import json
import sys
import types

import pytest
import torch
from objective_data import random_prompts

from rwkv_tune.errors import UserError
from rwkv_tune.generate import Sampling, generate_tokens
from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.objectives.driver import ObjectiveDriver
from rwkv_tune.objectives.factory import build_objective
from rwkv_tune.objectives.grpo import group_advantages, grpo_loss
from rwkv_tune.objectives.rollout import sample_group

LORA = {"name": "lora", "r": 8, "alpha": 16}


@pytest.fixture
def toy_rewards(monkeypatch):
    module = types.ModuleType("toy_rewards")
    module.first_is_c = lambda prompt, completion, record: 1.0 if completion.startswith("c") else 0.0
    module.first_char = lambda prompt, completion, record: ord(completion[:1] or "\0") % 256 / 255

    def fails_on_third(prompt, completion, record):
        if record["id"] == 2:
            raise KeyError("score")
        return 0.0

    module.fails_on_third = fails_on_third
    monkeypatch.setitem(sys.modules, "toy_rewards", module)
    return module


def grpo_config(**overrides):
    return ObjectiveConfig.from_dict({"type": "grpo", "group_size": 4, "max_new_tokens": 3, "temperature": 1.0,
                                      "top_p": 0.9, "rewards": [{"fn": "toy_rewards:first_is_c"}], **overrides})


def test_group_advantages_are_normalised_within_the_group():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    sample_std = (4 * 0.25 / 3) ** 0.5  # mean 0.5, deviations ±0.5, n − 1 = 3
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5]) / (sample_std + 1e-4), atol=1e-6)
    assert torch.equal(group_advantages(torch.ones(4)), torch.zeros(4))


def test_grpo_loss_equals_the_clipped_objective_with_the_k3_kl():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g) * 3
    old = logp + (torch.rand(3, 5, generator=g) - 0.5)  # ratios well outside 1 ± 0.2
    ref = logp + (torch.rand(3, 5, generator=g) - 0.5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 0.25])
    loss, fields = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_beta=0.04)
    expected, clipped, kls = 0.0, 0, []
    for i in range(3):
        terms, kl_row = [], []
        for t in range(5):
            if not mask[i, t]:
                continue
            ratio = float(torch.exp(logp[i, t] - old[i, t]))
            a = float(adv[i])
            surrogate = min(ratio * a, min(max(ratio, 0.8), 1.2) * a)
            kl = float(torch.exp(ref[i, t] - logp[i, t]) - (ref[i, t] - logp[i, t]) - 1)
            terms.append(-surrogate + 0.04 * kl)
            kl_row.append(kl)
            clipped += (ratio > 1.2 and a > 0) or (ratio < 0.8 and a < 0)
        expected += sum(terms) / len(terms) / 3
        kls.append(sum(kl_row) / len(kl_row))
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert fields["kl"] == pytest.approx(sum(kls) / 3, abs=1e-6)
    assert fields["clip_fraction"] == pytest.approx(clipped / int(mask.sum()))
    assert 0 < fields["clip_fraction"] < 1


def test_rollouts_read_the_prompt_once_and_continue_from_copies_of_its_state(fresh_model):
    model = fresh_model(LORA)
    prompt = random_prompts(1, seed=3, length=6)[0].ids
    lengths = []
    original = model.hidden

    def counting_hidden(idx, state=None):
        lengths.append(idx.shape)
        return original(idx, state)

    model.hidden = counting_hidden
    group = sample_group(model, prompt, 3, max_new_tokens=5, temperature=1.0, top_p=1e-9,
                         generator=torch.Generator().manual_seed(0))
    del model.hidden
    assert lengths[0] == (1, 6) and all(shape == (3, 1) for shape in lengths[1:])  # one prefill, then G rows a step
    # top_p → 0 keeps only the most likely token: every row must be the greedy continuation
    greedy = list(generate_tokens(model, list(prompt), Sampling(max_tokens=5, temperature=0, stop_at_eod=False)))
    assert group.completions == [greedy[:len(c)] for c in group.completions] and len(group.completions[0]) >= 1


def test_rollouts_stop_at_the_end_token_and_follow_the_seed(fresh_model):
    model = fresh_model(LORA)
    prompt = random_prompts(1, seed=4)[0].ids

    def sample(seed):
        return sample_group(model, prompt, 6, max_new_tokens=8, temperature=3.0, top_p=1.0,
                            generator=torch.Generator().manual_seed(seed)).completions

    first = sample(1)
    assert first == sample(1) and first != sample(2)
    for row in first:
        assert 0 not in row[:-1] and (len(row) == 8 or row[-1] == 0)


def run_grpo(fresh_model, run_dir, steps, *, resume_from=None, save_to=None):
    model = fresh_model(LORA)
    grpo = build_objective(grpo_config(rewards=["toy_rewards:first_char"]), model, random_prompts(5, seed=0), seed=3,
                           run_dir=run_dir)
    driver = ObjectiveDriver(model, grpo, lr=1e-2)
    if resume_from is not None:
        driver.resume(resume_from)
    driver.run(steps)
    if save_to is not None:
        driver.save(save_to)
    return model


def test_resuming_gives_the_same_adapter_as_an_uninterrupted_run(fresh_model, tmp_path, toy_rewards):
    from rwkv_tune.peft import adapter_state_dict

    straight = run_grpo(fresh_model, tmp_path / "straight", 6)
    run_grpo(fresh_model, tmp_path / "split", 3, save_to=tmp_path / "ckpt")
    resumed = run_grpo(fresh_model, tmp_path / "split", 3, resume_from=tmp_path / "ckpt")
    a, b = adapter_state_dict(straight).tensors, adapter_state_dict(resumed).tensors
    assert set(a) == set(b)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if k.endswith("lora_B"))  # it did train
    lines = [json.loads(line) for line in (tmp_path / "split" / "rollouts.jsonl").read_text().splitlines()]
    straight_lines = [json.loads(line) for line in (tmp_path / "straight" / "rollouts.jsonl").read_text().splitlines()]
    assert lines == straight_lines and [line["group"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_each_group_writes_one_rollouts_line(fresh_model, tmp_path, toy_rewards):
    model = fresh_model(LORA)
    grpo = build_objective(grpo_config(rewards=["toy_rewards:first_is_c", {"name": "length", "target": 3}]), model,
                           random_prompts(3, seed=0), seed=0, run_dir=tmp_path)
    fields = ObjectiveDriver(model, grpo, lr=1e-3).run(2)
    lines = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert set(lines[0]) == {"group", "index", "prompt", "completions", "rewards", "terms", "advantages"}
    assert len(lines[0]["completions"]) == 4 and set(lines[0]["terms"]) == {"toy_rewards:first_is_c", "length"}
    assert lines[0]["rewards"] == [a + b for a, b in zip(*lines[0]["terms"].values(), strict=True)]
    for key in ("loss", "reward_mean", "reward_std", "kl", "clip_fraction", "completion_length",
                "reward/length/mean", "reward/toy_rewards:first_is_c/std"):
        assert key in fields[0], key


def test_a_reward_function_that_raises_names_itself_and_the_record(fresh_model, tmp_path, toy_rewards):
    model = fresh_model(LORA)
    grpo = build_objective(grpo_config(rewards=["toy_rewards:fails_on_third"]), model, random_prompts(5, seed=0),
                           seed=0, run_dir=tmp_path)
    grpo.cursor.shuffle = False
    grpo.cursor.load_state_dict({"epoch": 0, "position": 2})
    with pytest.raises(UserError) as err:
        ObjectiveDriver(model, grpo).run(1)
    text = str(err.value)
    assert "'toy_rewards:fails_on_third' raised KeyError" in text
    assert "prompt record 2" in text and "'id': 2" in text


@pytest.mark.parametrize("version", [5, 6])
def test_rollouts_and_the_reference_work_for_v5_and_v6(version):
    from rwkv_tune import peft
    from rwkv_tune.model import load_model
    from rwkv_tune.objectives.pairs import pad_rows
    from rwkv_tune.objectives.reference import ReferencePolicy, reference_logprobs
    from rwkv_tune.testing import make_state_dict

    sd = make_state_dict(version, 1, 64, 200, 32, seed=2)
    base = load_model({k: v.clone() for k, v in sd.items()})
    model = load_model({k: v.clone() for k, v in sd.items()})
    peft.apply(model, {"name": "state"})
    reference = ReferencePolicy(model)
    with torch.no_grad():
        for block in model.blocks:
            block.att.time_state.normal_(0, 0.5)
    prompt = (30, 31, 32)
    group = sample_group(model, prompt, 2, max_new_tokens=4, temperature=1.0, top_p=1e-9,
                         generator=torch.Generator().manual_seed(0))
    greedy = list(generate_tokens(model, list(prompt), Sampling(max_tokens=4, temperature=0, stop_at_eod=False)))
    assert group.completions[0] == group.completions[1] == greedy[:len(group.completions[0])]
    tokens, response = pad_rows([(prompt, tuple(greedy))])
    from rwkv_tune.objectives.logprobs import sequence_logprobs

    with torch.no_grad():
        want = sequence_logprobs(base, tokens, response)[0]
        assert (sequence_logprobs(model, tokens, response)[0] - want).abs().max() > 1e-3
    assert torch.allclose(reference_logprobs(reference, tokens, response), want, atol=1e-5)
