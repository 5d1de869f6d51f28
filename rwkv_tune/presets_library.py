"""The shipped presets (the repository's presets/*.yaml) and the commented YAML every preset file is written as.

`available()` lists them, `find()` names one (with a "did you mean"), `copy()` writes one where the
user wants it (optionally with their model and data paths), and `render()` turns a Preset into
the human-friendly, commented YAML that `rwkv-tune init` writes and `preset.load` reads back.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import Preset, from_dict
from rwkv_tune.resources import presets_dir

SECTION_NOTES = {
    "model": "the base model; its architecture is detected from the file",
    "method": "how to fine-tune it",
    "data": "what to train on",
    "objective": "what training optimises: preferences (dpo, orpo) or rewards (grpo)",
    "train": "the optimisation",
    "output": "where the run goes",
}
ALWAYS = {
    "model": ("path", "spec"),
    "data": ("path", "type", "dataload", "loss_mask", "ctx_len"),
    "train": ("micro_bsz", "accumulate_grad_batches", "epoch_steps", "epoch_count", "epoch_save", "lr_init", "lr_final",
              "lr_schedule", "warmup_steps", "grad_cp", "precision", "strategy", "devices", "op", "train_type", "seed"),
    "output": ("dir", "merge"),
}
METHOD_KEYS = {"lora": ("name", "r", "alpha", "dropout", "train_parts"),
               "pissa": ("name", "r", "alpha", "svd_niter", "train_parts"),
               "miss": ("name", "mode", "r", "train_parts"), "state": ("name",), "full": ("name",)}
OBJECTIVE_KEYS = {"dpo": ("type", "beta"), "orpo": ("type", "beta"),
                  "grpo": ("type", "group_size", "max_new_tokens", "temperature", "top_p", "kl_beta", "clip_eps",
                           "rewards")}
# Comments for keys whose schema field has no doc of its own.
DOCS = {
    "model.spec": "the architecture this preset was made for; checked against the file",
    "quant": "none | int8 | nf4: how the frozen base weights are stored (bitsandbytes)",
    "data.type": "auto detects binidx / jsonl / text (or pairs / prompts) from the path",
    "data.loss_mask": "pad: no loss on padding; qa/sft: loss on the answers only; none",
    "data.ctx_len": "tokens per sample (RWKV-7 kernels pad to a multiple of 16)",
    "train.micro_bsz": "sequences per GPU per step",
    "train.accumulate_grad_batches": "micro-batches summed into one optimizer step",
    "train.epoch_steps": "optimizer steps per epoch",
    "train.epoch_count": "epochs (a checkpoint after each)",
    "train.epoch_save": "save every N epochs",
    "train.lr_init": "learning rate at the start (after warm-up)",
    "train.lr_final": "learning rate at the end",
    "train.lr_schedule": "cos_decay | wsd | constant",
    "train.warmup_steps": "linear warm-up steps",
    "train.precision": "bf16 | fp16 | fp32 | tf32 (the CUDA kernels want bf16)",
    "train.strategy": "single, or DeepSpeed ZeRO: deepspeed_stage_1 | _2 | _3 (+ _offload)",
    "train.devices": "GPUs per node",
    "train.op": "WKV kernel: auto | cuda | fla | torch",
    "train.train_type": "normal | infctx (long ctx_len trained in chunk_ctx pieces)",
    "train.chunk_ctx": "infctx chunk length",
    "train.seed": "random seed (data order, adapter init)",
}
COMMENT_COLUMN = 44


def _scalar(value: Any) -> str:
    """One YAML value on one line: floats always read back as floats (1.0e-4, not 1e-04 which is a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            mantissa, exp = text.split("e")
            text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{int(exp):+d}"
        return text
    dumped = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1 << 20)
    return dumped.strip().removesuffix("...").strip()


def _doc(where: str, f: Any) -> str:
    if where in DOCS:
        return DOCS[where]
    meta = f.metadata if f is not None else {}
    if meta.get("doc"):
        return meta["doc"]
    choices = meta.get("choices")
    return " | ".join(str(c) for c in choices if c is not None) if choices else ""


def render(preset: Preset, header: Sequence[str] = ()) -> str:
    """The preset as commented YAML: the keys that matter for its method plus every non-default one."""
    rows: list[tuple[str, str]] = [("# " + line if line else "#", "") for line in header]
    if header:
        rows.append(("", ""))
    for section in ("model", "method", "quant", "data", "objective", "train", "output"):
        if section == "objective" and preset.objective.type == "sft":
            continue  # next-token training: no objective section
        if section == "quant":
            rows.append((f"quant: {_scalar(preset.quant)}", DOCS["quant"]))
            rows.append(("", ""))
            continue
        obj = getattr(preset, section)
        keep = (METHOD_KEYS.get(preset.method_name, ("name",)) if section == "method"
                else OBJECTIVE_KEYS[preset.objective.type] if section == "objective" else ALWAYS[section])
        if section == "train" and preset.train.train_type == "infctx":
            keep = (*keep, "chunk_ctx")
        rows.append((f"# {SECTION_NOTES[section]}", ""))
        rows.append((f"{section}:", ""))
        for f in fields(obj):
            value = getattr(obj, f.name)
            default = f.default if f.default_factory is MISSING else f.default_factory()
            if (f.name in keep and not (f.name == "spec" and value is None)) or value != default:
                rows.append((f"  {f.name}: {_scalar(value)}", _doc(f"{section}.{f.name}", f)))
        rows.append(("", ""))
    if preset.provenance:
        rows.append((f"provenance: {_scalar(preset.provenance)}", ""))
    width = min(COMMENT_COLUMN, max(len(text) for text, note in rows if note))
    lines = [f"{text.ljust(width)}  # {note}" if note else text for text, note in rows]
    return "\n".join(lines).rstrip() + "\n"


# ---- the shipped library ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PresetInfo:
    """One shipped preset: its name (file stem), first comment line, what it trains and its estimated peak."""

    name: str
    path: Path
    description: str
    model: str
    method: str
    quant: str
    ctx_len: int | None
    gib: float | None = None  # estimated peak VRAM per GPU (None: the model is not a released size)
    fits: str | None = None  # the smallest common card it fits
    order: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "description": self.description, "model": self.model,
                "method": self.method, "quant": self.quant, "ctx_len": self.ctx_len, "vram_gib": self.gib,
                "fits": self.fits}


def _released(spec: dict[str, Any]) -> tuple[str, Any] | None:
    """(size name, ModelSpec) of the released model with this version, n_layer and n_embd."""
    from rwkv_tune.estimate.released import RELEASED, released_spec

    for size, (n_layer, n_embd, *_) in RELEASED.get(spec.get("version"), {}).items():
        if (n_layer, n_embd) == (spec.get("n_layer"), spec.get("n_embd")):
            return size, released_spec(size, spec["version"])
    return None


def _info(path: Path) -> PresetInfo:
    from rwkv_tune.errors import UserError
    from rwkv_tune.preset import DataSection, MethodSection, TrainSection

    text = path.read_text(encoding="utf-8")
    first = next((line for line in text.splitlines() if line.strip()), "")
    description = first.lstrip("#").strip() if first.startswith("#") else ""
    raw = yaml.safe_load(text) or {}
    section = {k: raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("model", "method", "data", "train")}
    if isinstance(raw.get("method"), str):
        section["method"] = {"name": raw["method"]}
    m = {**asdict(MethodSection()), **section["method"]}
    d = {**asdict(DataSection()), **section["data"]}
    t = {**asdict(TrainSection()), **section["train"]}
    quant = str(raw.get("quant") or "none")
    name = {"disha": "miss", "bone": "miss", "bat": "miss"}.get(m["name"], m["name"])
    mode = "bat" if m["name"] == "bat" else m["mode"]
    label = name + (f" {mode}" if name == "miss" else "") + (f" r{m['r']}" if name in ("lora", "pissa", "miss") else "")
    spec = section["model"].get("spec") or {}
    released = _released(spec)
    model, gib, card, order = "-", None, None, (0, 0)
    if released:
        model = f"RWKV-{spec['version']} {released[0]}"
        order = (-spec["version"], released[1].params)
        try:
            from rwkv_tune.estimate import estimate

            e = estimate(released[1], method=name, mode=mode, rank=m["r"], quant=quant, ctx_len=d["ctx_len"],
                         micro_bsz=t["micro_bsz"], grad_cp=t["grad_cp"], precision=t["precision"],
                         strategy=t["strategy"], devices=t["devices"])
            gib, card = e.total_gib, e.gpus_fit[0].name if e.gpus_fit else None
        except UserError:
            pass
    return PresetInfo(path.stem, path, description, model, label, quant, d["ctx_len"], gib, card, (*order, path.stem))


def available(folder: Path | None = None) -> list[PresetInfo]:
    """Every shipped preset: RWKV-7 first, then by model size and name."""
    folder = folder or presets_dir()
    return sorted((_info(p) for p in folder.glob("*.yaml")), key=lambda i: i.order)


def find(name: str, folder: Path | None = None) -> PresetInfo:
    """A shipped preset by name (with or without .yaml); ConfigError with the closest names if unknown."""
    folder = folder or presets_dir()
    stem = Path(name).name.removesuffix(".yaml").removesuffix(".yml")
    path = folder / f"{stem}.yaml"
    if path.is_file():
        return _info(path)
    names = [p.stem for p in sorted(folder.glob("*.yaml"))]
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.4)
    raise ConfigError(f"no shipped preset named {name!r}",
                      f"Did you mean {' or '.join(close)}?" if close else "See `rwkv-tune presets list`.")


def _set_path(text: str, section: str, value: str) -> str:
    """Replace `section.path` in preset text, keeping its comment and every other line."""
    lines = text.splitlines(keepends=True)
    current = None
    for i, line in enumerate(lines):
        top = re.match(r"^(\w+):", line)
        if top:
            current = top.group(1)
            continue
        m = re.match(r"^(\s+path:\s*)(.*?)(\s+#.*)?$", line.rstrip("\n"))
        if current == section and m:
            lines[i] = f"{m.group(1)}{_scalar(value)}{m.group(3) or ''}\n"
            return "".join(lines)
    raise ConfigError(f"the preset has no {section}.path line to replace", f"Edit {section}.path by hand.")


def copy(name: str, dest: str | Path, *, force: bool = False, model: str | None = None, data: str | None = None,
         folder: Path | None = None) -> Path:
    """Copy a shipped preset to `dest` (a file, or a folder to put NAME.yaml in); never overwrites without `force`."""
    from rwkv_tune.checkpoint import atomic_path

    info = find(name, folder)
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / f"{info.name}.yaml"
    if dest.exists() and not force:
        raise ConfigError(f"{dest} already exists", "Pass --force to overwrite it, or choose another file name.")
    text = info.path.read_text(encoding="utf-8")
    if model is not None:
        text = _set_path(text, "model", model)
    if data is not None:
        text = _set_path(text, "data", data)
    raw = yaml.safe_load(text)
    if importlib.util.find_spec("bitsandbytes") is None:  # copying is not training: check the rest on a laptop too
        raw = {**raw, "quant": "none"}
    from_dict(raw, source=str(dest))  # what we write must load
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
