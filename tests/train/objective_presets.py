"""Tiny v7 models, synthetic pairs/prompts jsonl files and presets for DPO/ORPO/GRPO through the trainer.

The texts are single-letter tokens separated by '|' (World ids below 256), so the tiny vocab of 256 holds them.
Pairs: a prompt of random letters ending in a marker, 'x=' or 'y='; after x the answer '7' is preferred, after y '9'.
"""

import json
import random

from rwkv_tune.testing import make_model

VOCAB = 256
LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
# GRPO's toy reward: 1 when the completion starts with a lowercase ASCII letter (26 of 256 ids: ~10% at first)
TOY_REWARD = '''def starts_lowercase(prompt, completion, record):
    return 1.0 if completion[:1] in "abcdefghijklmnopqrstuvwxyz" and completion[:1] != "" else 0.0


def explodes(prompt, completion, record):
    raise ValueError("no answer here")
'''


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def marker_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        marker = rng.choice("xy")
        prompt = "|".join(rng.choice(LETTERS) for _ in range(6)) + f"|{marker}="
        good, bad = ("7", "9") if marker == "x" else ("9", "7")
        out.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return out


def letter_prompts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": "|".join(rng.choice(LETTERS) for _ in range(5)) + "|", "answer": "a"} for _ in range(n)]


def objective_preset(tmp_path, objective: dict, *, method: str = "lora", steps: int = 20, epochs: int = 1,
                     lr: float = 3e-3, **train) -> dict:
    """A preset dict: the tiny model, pairs (dpo/orpo) or prompts (grpo) data beside a rewards module."""
    model = tmp_path / "tiny-v7.pth"
    if not model.exists():
        make_model(model, version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB)
    if objective["type"] == "grpo":
        data = write_jsonl(tmp_path / "prompts.jsonl", letter_prompts(16, seed=0))
        (tmp_path / "toy_rewards.py").write_text(TOY_REWARD)
        eval_path = None
    else:
        data = write_jsonl(tmp_path / "pairs.jsonl", marker_pairs(256, seed=1))
        eval_path = write_jsonl(tmp_path / "held_out.jsonl", marker_pairs(64, seed=2))
    return {
        "model": {"path": str(model)},
        "method": {"name": method, "r": 8, "alpha": 16},
        "data": {"path": data, "ctx_len": 64, "eval_path": eval_path, "eval_every": steps if eval_path else 0},
        "train": {"micro_bsz": 8, "epoch_steps": steps, "epoch_count": epochs, "lr_init": lr, "lr_final": lr,
                  "lr_schedule": "constant", "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1,
                  **train},
        "objective": objective,
        "output": {"dir": str(tmp_path / "run")},
    }
