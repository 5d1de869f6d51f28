"""Preference pairs and prompts: reading jsonl records, detecting their kind, tokenising, batching.

    pairs:   {"prompt": str, "chosen": str, "rejected": str}
             or chat form: "chosen"/"rejected" as message lists [{"role", "content"}, …] whose last
             message is the assistant's reply (the earlier ones, or "prompt", are the prompt)
    prompts: {"prompt": str, "answer"?: str, …} (every field is passed to reward functions)
Chat messages render as RWKV's "User: …\\n\\nAssistant: …\\n\\n" text; a plain prompt is used as written.
Each response ends with the end-of-document token so that the model learns where to stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.data.tokenizer import EOD, get_tokenizer
from rwkv_tune.errors import DataError

ROLES = {"user": "User", "assistant": "Assistant", "system": "System"}


@dataclass(frozen=True)
class Pair:
    """One tokenised preference: a prompt and two responses (end token included)."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]


@dataclass(frozen=True)
class Prompt:
    """One tokenised GRPO prompt with its whole record (for the reward functions)."""

    text: str
    ids: tuple[int, ...]
    record: dict[str, Any]
    index: int


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a jsonl file; a line that is not a JSON object raises a DataError naming it."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number} is not valid JSON ({exc.msg})", "Fix or remove that line.") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number} is not a JSON object", "Write one {...} object per line.")
            records.append(record)
    if not records:
        raise DataError(f"{path} has no records", "Write one JSON object per line.")
    return records


def detect_kind(record: dict[str, Any]) -> str | None:
    """'pairs' for prompt/chosen/rejected records, 'prompts' for prompt(/answer) records, else None."""
    if "chosen" in record and "rejected" in record:
        return "pairs"
    if "prompt" in record:
        return "prompts"
    return None


def render_messages(messages: list[dict[str, Any]]) -> str:
    """Chat messages as RWKV text: 'User: …\\n\\nAssistant: …\\n\\n'."""
    parts = []
    for m in messages:
        role = ROLES.get(str(m.get("role", "")).lower())
        if role is None:
            raise DataError(f"message role {m.get('role')!r} is not user, assistant or system",
                            "Use role: user | assistant | system.")
        parts.append(f"{role}: {str(m.get('content', '')).strip()}\n\n")
    return "".join(parts)


def pair_texts(record: dict[str, Any], where: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) texts of a plain or chat-form pair record."""
    chosen, rejected = record.get("chosen"), record.get("rejected")
    prompt = record.get("prompt", "")
    if isinstance(chosen, list) and isinstance(rejected, list):
        if not chosen or not rejected:
            raise DataError(f"{where}: chosen/rejected message lists are empty", "Give each a final assistant message.")
        history = render_messages(prompt) if isinstance(prompt, list) else str(prompt)
        history += render_messages(chosen[:-1])
        if render_messages(rejected[:-1]) != render_messages(chosen[:-1]):
            raise DataError(f"{where}: chosen and rejected differ before their last message",
                            "Put the shared conversation in 'prompt' and only the two replies in chosen/rejected.")
        return (history + "Assistant:", " " + str(chosen[-1].get("content", "")).strip() + "\n\n",
                " " + str(rejected[-1].get("content", "")).strip() + "\n\n")
    if not all(isinstance(v, str) for v in (prompt, chosen, rejected)):
        raise DataError(f"{where}: prompt, chosen and rejected must be strings (or chosen/rejected message lists)",
                        'Write e.g. {"prompt": "Q", "chosen": "good", "rejected": "bad"}.')
    return prompt, chosen, rejected


def _check_ids(ids: Iterable[int], vocab_size: int | None, where: str) -> tuple[int, ...]:
    ids = tuple(int(i) for i in ids)
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise DataError(f"{where} has token id {max(ids)}, beyond the model's vocab ({vocab_size})",
                        "Use a model with the World vocab (65536) for this data.")
    return ids


def tokenize_pairs(records: list[dict[str, Any]], *, vocab_size: int | None = None,
                   source: str = "pairs") -> list[Pair]:
    """Tokenise pair records with the World tokenizer; each response gets the end token."""
    tok = get_tokenizer()
    out = []
    for i, record in enumerate(records):
        where = f"{source} record {i}"
        if detect_kind(record) != "pairs":
            raise DataError(f"{where} has no chosen/rejected fields (keys: {', '.join(record) or 'none'})",
                            'Write {"prompt", "chosen", "rejected"} records.')
        prompt, chosen, rejected = pair_texts(record, where)
        out.append(Pair(_check_ids(tok.encode(prompt) or [EOD], vocab_size, where),
                        _check_ids(tok.encode(chosen) + [EOD], vocab_size, where),
                        _check_ids(tok.encode(rejected) + [EOD], vocab_size, where)))
    return out


def tokenize_prompts(records: list[dict[str, Any]], *, vocab_size: int | None = None,
                     source: str = "prompts") -> list[Prompt]:
    """Tokenise prompt records (an empty prompt starts from the end-of-document token, as generation does)."""
    tok = get_tokenizer()
    out = []
    for i, record in enumerate(records):
        where = f"{source} record {i}"
        prompt = record.get("prompt")
        if isinstance(prompt, list):
            prompt = render_messages(prompt) + "Assistant:"
        if not isinstance(prompt, str):
            raise DataError(f"{where} has no text 'prompt' field", 'Write {"prompt": "...", "answer": "..."} records.')
        out.append(Prompt(prompt, _check_ids(tok.encode(prompt) or [EOD], vocab_size, where), record, i))
    return out


def read_objective_data(path: str | Path, data_type: str = "auto", *,
                        vocab_size: int | None = None) -> tuple[str, list[Pair] | list[Prompt]]:
    """(kind, items) of a pairs/prompts jsonl file; `data_type` auto detects the kind from the first record."""
    records = read_jsonl(path)
    kind = detect_kind(records[0]) if data_type == "auto" else data_type
    if kind == "pairs":
        return kind, tokenize_pairs(records, vocab_size=vocab_size, source=str(path))
    if kind == "prompts":
        return kind, tokenize_prompts(records, vocab_size=vocab_size, source=str(path))
    raise DataError(f"{path}: cannot tell pairs from prompts (first record keys: {', '.join(records[0])})",
                    'Write {"prompt", "chosen", "rejected"} (pairs) or {"prompt", "answer"} (prompts) records.')


def pad_rows(rows: list[tuple[tuple[int, ...], tuple[int, ...]]],
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B, T], response [B, T]) from (prompt, response) id rows, right-padded with the end token."""
    width = max(len(p) + len(r) for p, r in rows)
    tokens = torch.full((len(rows), width), EOD, dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (p, r) in enumerate(rows):
        tokens[b, :len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        response[b, len(p):len(p) + len(r)] = True
    return tokens.to(device), response.to(device)


def pair_batch(pairs: list[Pair], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One forward's worth: chosen rows first, then rejected rows ({'tokens', 'response'}, [2B, T])."""
    tokens, response = pad_rows([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs],
                                device)
    return {"tokens": tokens, "response": response}
