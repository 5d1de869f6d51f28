"""What this machine and folder have, without torch: NVIDIA GPUs, model files, and the kind of the training data."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate.gpus import GPU, find_gpu


@dataclass(frozen=True)
class DataInfo:
    """What the data path holds: `kind` is binidx | jsonl | json | text | folder | missing."""

    path: str
    kind: str
    documents: int | None = None
    loss_mask: str = "pad"  # what the data suggests (chat records: qa, prompt/response: sft)

    @property
    def raw(self) -> bool:
        """Text or JSON the trainer would tokenize on every run (a candidate for `data prepare`)."""
        return self.kind in ("jsonl", "json", "text", "folder")

    def describe(self) -> str:
        count = f", {self.documents:,} documents" if self.documents is not None else ""
        return {"binidx": f"binidx (tokenized){count}", "jsonl": f"JSON lines{count}", "json": "a JSON file",
                "text": "plain text", "folder": f"a folder of data files{count.replace('documents', 'files')}",
                "missing": "not found"}[self.kind] + (f"; loss_mask {self.loss_mask} (what this data suggests)"
                                                      if self.loss_mask != "pad" else "")


def parse_nvidia_smi(text: str) -> tuple[GPU, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` output."""
    gpus = []
    for line in text.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gib = float(mib) / 1024
        except ValueError:
            continue
        name = name.strip()
        try:
            known = find_gpu(name)
            gpus.append(replace(known, name=name, memory_gib=gib) if abs(known.memory_gib - gib) < 2 else GPU(name, gib))
        except ConfigError:
            gpus.append(GPU(name, gib))
    return tuple(gpus)


def detect_gpus() -> tuple[GPU, ...]:
    """The NVIDIA GPUs this machine sees, without torch (empty when there is no nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else ()


def find_models(root: str | Path = ".", limit: int = 20, depth: int = 3, max_dirs: int = 2000) -> tuple[str, ...]:
    """Model files (.pth, .safetensors) under `root`, a few folders deep, skipping hidden folders and runs/."""
    root = Path(root)
    found: list[str] = []
    for seen, (folder, dirs, files) in enumerate(os.walk(root)):
        if seen >= max_dirs:
            break
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and d not in ("runs", "node_modules", "venv")
                         and len(rel.parts) < depth)
        found += sorted(str(rel / f) for f in files if f.endswith((".pth", ".safetensors")))
        if len(found) >= limit:
            break
    return tuple(found[:limit])


def inspect_data(path: str) -> DataInfo:
    """The kind of data at `path`, its document count if cheap, and the loss mask it suggests."""
    from rwkv_tune.data.detect import suggested_loss_mask

    info = _inspect_data(path)
    return replace(info, loss_mask=suggested_loss_mask(info.path)) if info.kind != "missing" else info


def _inspect_data(path: str) -> DataInfo:
    """The kind of data at `path` (binidx prefix, .jsonl, .json, text or folder) and its document count if cheap.

    The binidx pair and the data-file suffixes follow `rwkv_tune.data` (what the trainer and `data prepare` read).
    """
    from rwkv_tune.data.detect import is_binidx
    from rwkv_tune.data.readers import JSON_SUFFIXES, TEXT_SUFFIXES

    p = Path(path).expanduser()
    if is_binidx(p):
        named = p.suffix in (".bin", ".idx")  # one file of the pair: the preset names the prefix
        prefix = p.with_suffix("") if named else p
        return DataInfo(str(prefix) if named else path, "binidx", _binidx_documents(prefix))
    if p.is_dir():
        n = sum(1 for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES | JSON_SUFFIXES)
        return DataInfo(path, "folder", n)
    if p.is_file():
        if p.suffix in JSON_SUFFIXES - {".json"}:
            docs = None
            if p.stat().st_size <= 64 << 20:
                with open(p, "rb") as f:
                    docs = sum(1 for line in f if line.strip())
            return DataInfo(path, "jsonl", docs)
        return DataInfo(path, "json" if p.suffix == ".json" else "text")
    return DataInfo(path, "missing")


def jsonl_kind(path: str) -> str | None:
    """'pairs' ({prompt, chosen, rejected}) or 'prompts' ({prompt, …}) from a .jsonl file's first record; None else.

    The same rule as `rwkv_tune.objectives.pairs.detect_kind`, without importing torch.
    """
    import json

    try:
        with open(Path(path).expanduser(), encoding="utf-8") as f:
            line = next((line for line in f if line.strip()), "")
        record = json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if "chosen" in record and "rejected" in record:
        return "pairs"
    return "prompts" if "prompt" in record else None


def _binidx_documents(prefix: Path) -> int | None:
    """Item count from the .idx header (None when it is not a binidx v1 header)."""
    from rwkv_tune.data.binidx import HEADER, MAGIC, binidx_paths

    with open(binidx_paths(prefix)[1], "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size or not head.startswith(MAGIC):
        return None
    return HEADER.unpack(head)[3]


def prepare_command(info: DataInfo) -> tuple[str, str]:
    """(the `rwkv-tune data prepare` command for raw data, the binidx prefix it writes)."""
    p = Path(info.path)
    prefix = str(p.with_name(p.name + "_tokenized") if info.kind == "folder" else p.with_suffix(""))
    return f"rwkv-tune data prepare {info.path} --out {prefix}", prefix
