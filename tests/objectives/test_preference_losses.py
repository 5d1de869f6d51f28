"""DPO and ORPO equal the published formulas computed independently (plain model, no_grad), for LoRA and state tuning."""

import pytest
import torch
import torch.nn.functional as F
from objective_data import marker_pairs

from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.objectives.driver import ObjectiveDriver
from rwkv_tune.objectives.factory import build_objective
from rwkv_tune.objectives.pairs import pair_batch

METHODS = {"lora": {"name": "lora", "r": 4, "alpha": 8}, "state": {"name": "state"}}
BETA = 0.5


def written_out_logprobs(model, tokens, response):
    """Sum and count of response-token log-probs, from the full logits of the plain forward, under no_grad."""
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens).double(), dim=-1)
    sums, counts = [], []
    for b in range(tokens.shape[0]):
        scored = [float(logp[b, t - 1, tokens[b, t]]) for t in range(1, tokens.shape[1]) if response[b, t]]
        sums.append(sum(scored))
        counts.append(len(scored))
    return torch.tensor(sums, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64)


def trained(fresh_model, method, objective_type):
    """A PEFT model trained a few DPO/ORPO steps (so the policy is no longer the reference), and its objective."""
    model = fresh_model(METHODS[method])
    objective = build_objective(ObjectiveConfig.from_dict({"type": objective_type, "beta": BETA}), model,
                                marker_pairs(16, seed=1), batch_size=4, seed=0)
    ObjectiveDriver(model, objective, lr=2e-2).run(4)
    return model, objective


@pytest.mark.parametrize("method", list(METHODS))
def test_dpo_loss_equals_the_published_formula(fresh_model, method):
    model, dpo = trained(fresh_model, method, "dpo")
    batch = pair_batch(marker_pairs(5, seed=9))
    loss, fields = dpo.loss(model, batch)

    n = 5
    policy, _ = written_out_logprobs(model, batch["tokens"], batch["response"])
    reference, _ = written_out_logprobs(fresh_model(), batch["tokens"], batch["response"])  # the plain base model
    logits = BETA * ((policy[:n] - reference[:n]) - (policy[n:] - reference[n:]))
    expected = -F.logsigmoid(logits).mean()
    assert abs(float(loss.detach()) - float(expected)) < 1e-5
    assert abs(float(expected) - float(torch.log(torch.tensor(2.0)))) > 1e-3  # not the untrained value log 2
    assert fields["pref_accuracy"] == pytest.approx(float((logits > 0).double().mean()))
    assert fields["reward_margin"] == pytest.approx(float(logits.mean()), abs=1e-5)


@pytest.mark.parametrize("method", list(METHODS))
def test_orpo_loss_equals_the_published_formula(fresh_model, method):
    model, orpo = trained(fresh_model, method, "orpo")
    batch = pair_batch(marker_pairs(5, seed=9))
    loss, fields = orpo.loss(model, batch)

    n = 5
    sums, counts = written_out_logprobs(model, batch["tokens"], batch["response"])
    mean_logp = sums / counts  # length-normalised log P(y|x)
    odds = torch.exp(mean_logp) / (1 - torch.exp(mean_logp))
    log_odds_ratio = torch.log(odds[:n] / odds[n:])
    expected = -mean_logp[:n].mean() - BETA * F.logsigmoid(log_odds_ratio).mean()
    assert abs(float(loss.detach()) - float(expected)) < 1e-5
    assert fields["log_odds_ratio"] == pytest.approx(float(log_odds_ratio.mean()), abs=1e-5)


def test_dpo_loss_backpropagates_only_into_the_adapter(fresh_model):
    model, dpo = trained(fresh_model, "lora", "dpo")
    loss, _ = dpo.loss(model, pair_batch(marker_pairs(2, seed=3)))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert any(name.endswith("lora_B") for name in grads)
    assert all(p.requires_grad for name, p in model.named_parameters() if name in grads)
