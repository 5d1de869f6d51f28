"""Measure training FLOPs per second on this CPU (run by `cpu_speed` in a subprocess; imports torch).

    python -m rwkv_tune.estimate.cpu_probe '<ModelSpec as JSON>'  →  {"flops_per_s": ..., "measured": ...}

It times a few forward+backward steps of the model's own shape (random weights, every weight trained) when
the model is small, else of a 2-layer RWKV-7 of its width (up to 512), and divides the FLOPs of those steps
by their time; bigger models are extrapolated by their FLOPs per token.
"""

from __future__ import annotations

import json
import sys
import time

CTX = 64
STEPS = 2


def stand_in(spec):
    """A small RWKV-7 of the model's width (at most 512) to time in place of a big model."""
    from rwkv_tune.spec import ModelSpec
    from rwkv_tune.testing import default_dim_ffn, default_lora_dims

    width = min(spec.n_embd, 512)
    return ModelSpec(version=7, n_layer=2, n_embd=width, n_head=width // 64, head_size=64, vocab_size=4096,
                     dim_ffn=default_dim_ffn(7, width), lora_dims=default_lora_dims(7, width))


def main(spec_json: str) -> dict[str, object]:
    import torch

    from rwkv_tune.bench import _init_weights
    from rwkv_tune.estimate.config import Config
    from rwkv_tune.estimate.cpu_speed import MAX_MEASURED_PARAMS
    from rwkv_tune.estimate.timing import flops_per_token
    from rwkv_tune.estimate.vram import count_params
    from rwkv_tune.model import build_model
    from rwkv_tune.model.loss import chunked_cross_entropy
    from rwkv_tune.spec import ModelSpec

    spec = ModelSpec(**json.loads(spec_json))
    if spec.params > MAX_MEASURED_PARAMS:
        spec = stand_in(spec)
    with torch.device("meta"):
        model = build_model(spec, op="torch")
    model = model.to_empty(device="cpu").float()
    _init_weights(model, torch.device("cpu"), 0)
    model.train()
    idx = torch.randint(0, spec.vocab_size, (1, CTX + 1))

    def step() -> None:
        hidden, _ = model.hidden(idx[:, :-1])
        chunked_cross_entropy(hidden, model.head.weight, idx[:, 1:]).backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    seconds = (time.perf_counter() - start) / STEPS
    cfg = Config(method="full", grad_cp=False, ctx_len=CTX, precision="fp32")
    flops = flops_per_token(spec, cfg, count_params(spec, cfg)) * CTX
    return {"flops_per_s": flops / seconds, "measured": f"a {spec.n_layer}-layer × {spec.n_embd} step of {CTX} tokens"}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
