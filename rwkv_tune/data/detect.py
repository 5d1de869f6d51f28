"""Which kind of data a path holds: the `data.type` to use, and whether Hugging Face `datasets` reads it.

Torch-free and cheap (it peeks at a few bytes, the first record or a dataset's saved schema), so the
wizard's data step can call `detect_data_type(path)` while the user types, and the loader uses the
same rules to route a source to its reader.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rwkv_tune.data.binidx import is_binidx as _is_binidx
from rwkv_tune.data.readers import JSON_SUFFIXES, TEXT_SUFFIXES
from rwkv_tune.data.records import CHAT_FIELDS, SFT_FIELDS
from rwkv_tune.preset import schema

# The preset's data types that are read as documents (pairs/prompts are read by rwkv_tune.objectives).
DATA_TYPES = tuple(t for t in schema.DATA_TYPES if t not in ("pairs", "prompts"))
TOKEN_TYPES = ("binidx", "numpy", "uint16", "dummy")  # token ids given: no tokenizer involved
HF_TYPES = ("auto", "jsonl", "sft", "chat", "hf")  # types whose records a Hugging Face dataset can supply
HF_FILE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json",
                    ".ndjson": "json"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | JSON_SUFFIXES | set(HF_FILE_SUFFIXES) | {".npy", ".npz", ".bin", ".idx", ".pth"}
HUB_PREFIXES = ("hf://datasets/", "hf:")
# The loss mask each record type suggests: chat → assistant turns, sft → the response, anything else → every token.
SUGGESTED_MASK = {"sft": "sft", "chat": "qa", "jsonl": "pad", "text": "pad", "utf-16le": "pad"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_binidx(path: str | Path) -> bool:
    """Whether `path` names an existing .bin/.idx pair (False for an empty path)."""
    return bool(Path(path).name) and _is_binidx(path)


def is_dummy(path: str | Path) -> bool:
    """The synthetic source named as a path: 'dummy' or 'dummy:SIZE' (data.type dummy takes any path)."""
    s = str(path).strip()
    return s == "dummy" or s.startswith("dummy:")


def hub_name(path: str | Path) -> str:
    """The dataset id without an `hf:` / `hf://datasets/` prefix."""
    s = str(path).strip()
    for prefix in HUB_PREFIXES:
        if s.startswith(prefix):
            return s[len(prefix):]
    return s


def is_hub_id(path: str | Path) -> bool:
    """`hf:NAME`, or `owner/name` that is not a local path (no such file, no folder `owner`, no data suffix)."""
    s = str(path).strip()
    if s.startswith(HUB_PREFIXES):
        return bool(hub_name(s))
    if not _HUB_ID.match(s) or Path(s).exists() or is_binidx(s):
        return False
    owner, name = s.split("/")
    return not Path(owner).exists() and Path(name).suffix.lower() not in KNOWN_SUFFIXES


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file()
                           or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file()))


def hf_source_kind(path: str | Path) -> str | None:
    """'hub' (a dataset id), 'disk' (a save_to_disk folder), 'files' (.parquet/.arrow/.csv) or None."""
    if is_saved_dataset(path):
        return "disk"
    if is_hub_id(path):
        return "hub"
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".parquet", ".arrow", ".csv"):
        return "files"
    return None


def record_type(keys: Any) -> str:
    """jsonl / chat / sft from a record's keys, as the readers detect it; 'auto' when it cannot tell."""
    keys = set(keys)
    if "text" in keys:
        return "jsonl"
    if keys & set(CHAT_FIELDS):
        return "chat"
    if any(f[0] in keys and f[-1] in keys for f in SFT_FIELDS):
        return "sft"
    return "auto"


def _saved_columns(folder: Path) -> list[str]:
    """Column names of a save_to_disk folder, from its dataset_info.json (no `datasets` needed)."""
    info = folder / "dataset_info.json"
    if not info.is_file() and (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
        split = "train" if "train" in splits else (splits[0] if splits else "")
        info = folder / split / "dataset_info.json"
    features = json.loads(info.read_text(encoding="utf-8")).get("features") or {}
    return list(features)


def _json_keys(path: Path) -> list[str]:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", errors="ignore").lstrip()
    if text.startswith("["):
        decoder = json.JSONDecoder()
        rec, _ = decoder.raw_decode(text[1:].lstrip())
    else:
        rec = json.loads(text.splitlines()[0])
    return list(rec) if isinstance(rec, dict) else []


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def text_encoding(path: str | Path) -> str:
    """'utf-16le' for a file with a UTF-16LE byte-order mark or NULs in its odd bytes, else 'utf-8'."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\xff\xfe"):
        return "utf-16le"
    if len(head) >= 4 and head[1::2].count(0) > len(head) // 4 and head[0::2].count(0) < len(head) // 16:
        return "utf-16le"
    return "utf-8"


def detect_data_type(path: str | Path) -> str:
    """The `data.type` for a path: binidx, numpy, uint16, dummy, jsonl, sft, chat, text, utf-16le or auto.

    Hugging Face datasets: a hub id gives 'auto' (the records decide when loaded); a save_to_disk folder
    or a .parquet file gives the record type of its columns. Never raises for unreadable input: 'auto'.
    """
    if is_dummy(path):
        return "dummy"
    s = str(path).strip()
    try:
        if is_binidx(s):
            return "binidx"
        kind = hf_source_kind(s)
        if kind == "hub":
            return "auto"
        p = Path(s)
        if kind == "disk":
            return record_type(_saved_columns(p))
        if p.is_dir():
            first = next((f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in TEXT_SUFFIXES | JSON_SUFFIXES),
                         None)
            return detect_data_type(first) if first is not None else "auto"
        if not p.is_file():
            return "auto"
        suffix = p.suffix.lower()
        if suffix == ".npy":
            return "numpy"
        if suffix == ".bin":
            return "uint16"
        if suffix == ".parquet":
            return record_type(_parquet_columns(p))
        if suffix in JSON_SUFFIXES:
            return record_type(_json_keys(p))
        if suffix in TEXT_SUFFIXES:
            return "utf-16le" if text_encoding(p) == "utf-16le" else "text"
    except (OSError, ValueError, ImportError, IndexError):
        return "auto"
    return "auto"


def suggested_loss_mask(path: str | Path) -> str:
    """The loss mask the data suggests (as `data prepare` does): a prepared binidx's recorded suggestion,
    raw records by their type (chat → qa, sft → sft); pad for anything else or unreadable."""
    from rwkv_tune.data.binidx import read_meta
    from rwkv_tune.errors import UserError

    kind = detect_data_type(path)
    if kind == "binidx":
        try:
            return str((read_meta(str(path).strip()) or {}).get("suggested_loss_mask", "pad"))
        except UserError:
            return "pad"
    return SUGGESTED_MASK.get(kind, "pad")
