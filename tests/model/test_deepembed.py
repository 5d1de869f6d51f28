"""RWKV-7a against the official `rwkv` runtime (RWKV_DE_VERSION=1); RWKV-7b against a one-token-at-a-time
reference with the attention cache, written here from reference/rwkv7-deepembed.md; file round trips."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rwkv_tune import load_model
from rwkv_tune.model.common import token_shift

ORACLE = Path(__file__).with_name("rwkv_pip_oracle.py")
VOCAB = 300


def tokens(n: int, seed: int = 1) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("kwargs", [dict(n_layer=2, n_embd=64, head_size=32),
                                    dict(n_layer=3, n_embd=128, head_size=64, layer0_v=False)])
def test_7a_logits_match_official_runtime_prompt_and_carried_state(tiny_model, tmp_path, kwargs):
    pytest.importorskip("rwkv")
    path = tiny_model(7, vocab_size=VOCAB, variant="7a", **kwargs)
    ids, split = tokens(48), 19
    out = tmp_path / "oracle.pt"
    subprocess.run([sys.executable, str(ORACLE), str(path), "7a", json.dumps(ids), str(split), str(out)],
                   check=True, capture_output=True, timeout=300)
    oracle = torch.load(out)

    model = load_model(path).eval()
    assert model.spec.variant == "7a"
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]
        _, state = model(torch.tensor([ids[:split]]), return_state=True)
        rest = model(torch.tensor([ids[split:]]), state)[0]
    assert (ours - oracle["seq"]).abs().max().item() <= 1e-4
    assert (rest[-1] - oracle["split_last"]).abs().max().item() <= 1e-4
    assert (rest - ours[split:]).abs().max().item() <= 1e-4
    # the DeepEmbed gate matters: a plain x070 FFN would give other logits
    assert oracle["seq"].std().item() > 0.1


@pytest.mark.parametrize("variant", ["7a", "7b"])
def test_state_dict_round_trips_the_file(tiny_model, variant):
    path = tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB, variant=variant)
    raw = torch.load(path)
    sd = load_model(path).state_dict()
    assert list(sd) == list(raw)
    for key, value in raw.items():
        assert sd[key].shape == value.shape and sd[key].dtype == value.dtype, key
        assert torch.equal(sd[key], value), key


def dea_reference(sd: dict, model, ids: list[int]) -> torch.Tensor:
    """7b one token at a time, as the reference describes: a k1/v1 cache per layer, k and v of every past token
    rebuilt from it, token shift, LayerNorms, soft-capped softmax over past and present. The x070 time-mix and
    the 7a FFN are the model's own modules (7a matches the official runtime above), stepped one token at a time."""
    L = model.spec.n_layer
    ln = F.layer_norm
    emb = ln(sd["emb.weight"], sd["emb.weight"].shape[1:], sd["blocks.0.ln0.weight"], sd["blocks.0.ln0.bias"])
    k1_cache, v1_cache, q_prev = [[] for _ in range(L)], [[] for _ in range(L)], [None] * L
    att_x, ffn_x, wkv = [None] * L, [None] * L, [None] * L
    logits = []
    for t, tok in enumerate(ids):
        ctx = torch.tensor(ids[: t + 1])
        x = emb[tok].view(1, 1, -1)
        v_first = None
        for i in range(L):
            blk, p = model.blocks[i], f"blocks.{i}.qkv."
            k_emb = sd[p + "k_emb.weight"][ctx] + emb[ctx] @ sd[p + "k_emb_x.weight"].T
            v_emb = sd[p + "v_emb.weight"][ctx] + emb[ctx] @ sd[p + "v_emb_x.weight"].T
            q = x[0, 0] @ sd[p + "qq.weight"].T
            k1_cache[i].append(x[0, 0] @ sd[p + "k1"])
            v1_cache[i].append(x[0, 0] @ sd[p + "v1"])
            k = torch.stack(k1_cache[i]) @ sd[p + "k2"] * k_emb
            v = torch.tanh(torch.stack(v1_cache[i]) @ sd[p + "v2"]) * v_emb
            q_before = torch.zeros_like(q) if q_prev[i] is None else q_prev[i]
            q_prev[i] = q
            q = q + (q_before - q) * sd[p + "x_q"]
            k_before = torch.cat([torch.zeros_like(k[:1]), k[:-1]])
            v_before = torch.cat([torch.zeros_like(v[:1]), v[:-1]])
            k = k + (k_before - k) * sd[p + "x_k"]
            v = v + (v_before - v) * sd[p + "x_v"]
            q = ln(q, q.shape, sd[p + "lnq.weight"], sd[p + "lnq.bias"])
            k = ln(k, k.shape[1:], sd[p + "lnk.weight"], sd[p + "lnk.bias"])
            v = ln(v, v.shape[1:], sd[p + "lnv.weight"], sd[p + "lnv.bias"])
            attn = torch.softmax(64 * torch.tanh((k @ q) / 1024), dim=0) @ v

            xa = blk.ln1(x)
            att, v_first, wkv[i] = blk.att(xa, token_shift(xa, att_x[i]), v_first, wkv[i])
            att_x[i] = xa[:, -1]
            x = x + att + attn
            xf = blk.ln2(x)
            x = x + blk.ffn(xf, token_shift(xf, ffn_x[i]), torch.tensor([[tok]]), emb[tok].view(1, 1, -1))
            ffn_x[i] = xf[:, -1]
        logits.append(model.head(model.ln_out(x))[0, 0])
    return torch.stack(logits)


@pytest.mark.parametrize("kwargs", [dict(n_layer=2, n_embd=64, head_size=32),
                                    dict(n_layer=3, n_embd=96, head_size=32, layer0_v=False)])
def test_7b_parallel_forward_matches_one_token_reference_with_cache(tiny_model, kwargs):
    path = tiny_model(7, vocab_size=VOCAB, variant="7b", seed=3, **kwargs)
    model = load_model(path).eval()
    sd = torch.load(path)
    ids, split = tokens(24, seed=2), 9
    with torch.no_grad():
        reference = dea_reference(sd, model, ids)
        ours = model(torch.tensor([ids]))[0]
        _, state = model(torch.tensor([ids[:split]]), return_state=True)
        rest = model(torch.tensor([ids[split:]]), state)[0]
        stepped = []
        state = None
        for tok in ids:
            last, state = model.step(torch.tensor([tok]), state)
            stepped.append(last[0])
    assert (ours - reference).abs().max().item() <= 1e-5
    assert (rest - reference[split:]).abs().max().item() <= 1e-5  # the carried attention cache
    assert (torch.stack(stepped) - reference).abs().max().item() <= 1e-5
    assert state.k_cache.shape == (model.spec.n_layer, 1, len(ids), 32)
    # the attention changes the logits: the same weights without it (a 7a model) differ
    plain = {k: v for k, v in sd.items() if ".qkv." not in k}
    with torch.no_grad():
        assert (load_model(plain)(torch.tensor([ids]))[0] - ours).abs().max().item() > 1e-2


def test_7b_batched_with_cache_matches_single_rows(tiny_model):
    model = load_model(tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB, variant="7b")).eval()
    batch = torch.tensor([tokens(12, 5), tokens(12, 6)])
    with torch.no_grad():
        _, state = model(batch[:, :5], return_state=True)
        both = model(batch[:, 5:], state)
        for row in range(2):
            alone = model(batch[row:row + 1])[0, 5:]
            assert (both[row] - alone).abs().max().item() <= 1e-5


@pytest.mark.parametrize("variant", ["7a", "7b"])
def test_greedy_generation_with_growing_cache_equals_rereading(tiny_model, variant):
    from rwkv_tune.generate import Sampling, generate_tokens

    model = load_model(tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB, variant=variant)).eval()
    prompt = tokens(7, 9)
    out = list(generate_tokens(model, prompt, Sampling(max_tokens=6, temperature=0, stop_at_eod=False)))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out == ids[len(prompt):]


def test_7b_infctx_chunks_carry_the_attention_cache(tiny_model):
    from rwkv_tune.train.losses import sequence_loss

    model = load_model(tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB, variant="7b"))
    x = torch.tensor([tokens(20, 11), tokens(20, 12)])
    y = torch.roll(x, -1, dims=1)
    whole, n = sequence_loss(model, x, y, scale=1.0, backward=False)
    chunked, _ = sequence_loss(model, x, y, scale=1.0, chunk_ctx=6, backward=False)
    assert abs(whole - chunked) <= 1e-4 * abs(whole)
    # gradients reach the attention from every chunk (k2 and the tables see the whole cached context)
    model.zero_grad()
    sequence_loss(model, x, y, scale=1.0 / n, chunk_ctx=6)
    assert model.blocks[1].qkv.k2.grad.abs().sum() > 0 and model.blocks[0].qkv.qq.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["7a", "7b"])
def test_vectors_stored_with_singleton_dims_load_alike(variant):
    from rwkv_tune.testing import make_state_dict

    squeezed = make_state_dict(7, 2, 64, VOCAB, 32, variant=variant, seed=4)
    stored_3d = make_state_dict(7, 2, 64, VOCAB, 32, variant=variant, seed=4, variant_vec3d=True)
    assert stored_3d["blocks.1.ffn.s0"].shape == (1, 1, 256)
    model = load_model(stored_3d)
    assert model.spec.variant_vec3d and list(model.state_dict()) == list(stored_3d)
    assert model.state_dict()["blocks.1.ffn.s0"].shape == (1, 1, 256)
    ids = torch.tensor([tokens(10, 4)])
    with torch.no_grad():
        assert torch.allclose(model(ids), load_model(squeezed)(ids), atol=1e-6)


@pytest.mark.parametrize("variant", ["7a", "7b"])
def test_gradient_checkpointing_gives_the_same_gradients(variant):
    from rwkv_tune.testing import make_state_dict

    model = load_model(make_state_dict(7, 2, 64, VOCAB, 32, variant=variant)).train()
    x = torch.tensor([tokens(12, 7), tokens(12, 8)])
    grads = []
    for grad_cp in (False, True):
        model.zero_grad()
        model.grad_cp = grad_cp
        model(x).logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "blocks.1.ffn.s_emb_x.weight" in grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name
