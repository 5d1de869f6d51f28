"""Sequence log-probs score only response tokens; the reference policy is the base model (adapter off)."""

import pytest
import torch
from objective_data import marker_pairs

from rwkv_tune.objectives.driver import ObjectiveDriver
from rwkv_tune.objectives.logprobs import sequence_logprobs
from rwkv_tune.objectives.orpo import ORPO
from rwkv_tune.objectives.pairs import pair_batch
from rwkv_tune.objectives.reference import ReferencePolicy, reference_logprobs


def plain_sequence_logprobs(model, tokens, response):
    """Written out: the log-softmax of the full logits, token by token."""
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens).float(), dim=-1)
    out = []
    for b in range(tokens.shape[0]):
        out.append(sum(float(logp[b, t - 1, tokens[b, t]]) for t in range(1, tokens.shape[1]) if response[b, t]))
    return torch.tensor(out)


def test_sequence_logprobs_sum_the_response_tokens_only(fresh_model):
    model = fresh_model()
    batch = pair_batch(marker_pairs(3, seed=5))
    with torch.no_grad():
        logp, count = sequence_logprobs(model, batch["tokens"], batch["response"])
    assert torch.allclose(logp, plain_sequence_logprobs(model, batch["tokens"], batch["response"]), atol=1e-5)
    assert count.tolist() == [3.0] * 6
    changed = batch["tokens"].clone()
    changed[:, 0] = 3  # a prompt token changes the scores but is never scored itself
    with torch.no_grad():
        assert sequence_logprobs(model, changed, batch["response"])[1].tolist() == count.tolist()


METHODS = {
    "lora": {"name": "lora", "r": 4, "alpha": 8},  # with the default train_parts (time, ln) trained too
    "pissa": {"name": "pissa", "r": 4},
    "miss": {"name": "miss", "r": 4},
    "bat": {"name": "bat", "r": 16},
    "state": {"name": "state"},
    "full": {"name": "full"},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_the_reference_is_the_base_model_after_training(fresh_model, method):
    base = fresh_model()
    model = fresh_model(METHODS[method])
    reference = ReferencePolicy(model)
    ObjectiveDriver(model, ORPO(marker_pairs(8, seed=1), batch_size=4), lr=2e-2).run(3)
    batch = pair_batch(marker_pairs(3, seed=7))
    tokens, response = batch["tokens"], batch["response"]
    with torch.no_grad():
        policy = sequence_logprobs(model, tokens, response)[0]
        want = sequence_logprobs(base, tokens, response)[0]
    assert (policy - want).abs().max() > 1e-3  # training moved the policy away from the base
    assert torch.allclose(reference_logprobs(reference, tokens, response), want, atol=1e-5)
    with torch.no_grad():  # and the policy is back after the block
        assert torch.equal(sequence_logprobs(model, tokens, response)[0], policy)
    total = sum(p.numel() for p in base.parameters())
    if method == "full":  # the one case that keeps a frozen copy
        assert reference.copies_numel == total
    else:  # adapters keep no copy of the base; only small dense parts (ln, time, the state) are saved
        assert reference.copies_numel < 0.05 * total


def test_chunked_scoring_gives_the_same_values_and_gradients(fresh_model):
    from rwkv_tune.objectives.logprobs import token_logprobs

    model = fresh_model({"name": "lora", "r": 4, "alpha": 8})
    batch = pair_batch(marker_pairs(3, seed=5))
    results = []
    for chunk in (1024, 2):
        model.zero_grad()
        logp = token_logprobs(model, batch["tokens"], batch["response"], chunk=chunk)
        (logp.sum() * 0.5).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((logp.detach(), grads))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][1], results[1][1], strict=True))
    assert float(results[0][1][-1].abs().sum()) > 0
