"""Synthetic preference pairs and prompts for the objectives tests (ids below the tiny vocab of 200)."""

import torch

from rwkv_tune.objectives.pairs import Pair, Prompt

VOCAB = 200


def marker_pairs(n: int, seed: int) -> list[Pair]:
    """Prompts of random tokens ending in a marker (11 or 12); after 11 the answer 9 is preferred, after 12 the 7."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        marker = int(torch.randint(0, 2, (1,), generator=g))
        prompt = tuple(torch.randint(20, VOCAB, (6,), generator=g).tolist()) + (11 + marker,)
        lead = tuple(torch.randint(20, VOCAB, (1,), generator=g).tolist())
        good, bad = (7, 9) if marker else (9, 7)
        pairs.append(Pair(prompt, lead + (good, 0), lead + (bad, 0)))
    return pairs


def random_prompts(n: int, seed: int, length: int = 5) -> list[Prompt]:
    g = torch.Generator().manual_seed(seed)
    return [Prompt(f"prompt {i}", tuple(torch.randint(20, VOCAB, (length,), generator=g).tolist()),
                   {"id": i, "answer": "c"}, i) for i in range(n)]
