"""The preset: the user's single source of truth for a run, its schema and its validation.

Torch-free (the wizard, the estimator and `train --dry-run` use it). Keys keep RWKV-PEFT's names
where they exist. Every mistake raises `ConfigError` with the key, the value and the fix: an
unknown key names the closest valid key; a bad value names the allowed ones.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rwkv_tune.errors import ConfigError

METHODS = ("lora", "pissa", "disha", "bone", "bat", "miss", "state", "full")
CANONICAL_METHOD = {"bone": "miss", "bat": "miss", "disha": "miss"}
QUANTS = ("none", "int8", "nf4", "fp4")
DATA_TYPES = ("auto", "binidx", "jsonl", "sft", "chat", "text", "utf-8", "utf-16le", "numpy", "uint16", "dummy", "hf")
DATALOADS = ("get", "pad", "only")
LOSS_MASKS = ("pad", "qa", "sft", "none")
SCHEDULES = ("cos_decay", "wsd", "constant")
PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
STRATEGIES = ("single", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
              "deepspeed_stage_3", "deepspeed_stage_3_offload")
OPS = ("auto", "torch", "cuda", "fla", "naive")
TRAIN_TYPES = ("normal", "infctx")
TRAIN_PARTS = ("emb", "head", "time", "ln", "deepembed")  # deepembed: RWKV-7a/7b per-token tables
STATE_GRAD_OPS = ("auto", "torch", "naive", "cuda")  # ops whose backward returns the initial-state gradient


def _f(default: Any = None, *, choices: tuple | None = None, lo: float | None = None, hi: float | None = None,
       doc: str = "") -> Any:
    meta = {"choices": choices, "lo": lo, "hi": hi, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    path: str = _f("", doc="the base model .pth (its architecture is detected)")
    spec: dict | None = _f(None, doc="recorded detected spec; checked against the file, never trusted")


@dataclass
class MethodSection:
    name: str = _f("lora", choices=METHODS, doc="lora | pissa | disha/bone/bat/miss | state | full")
    r: int = _f(64, lo=1, hi=4096, doc="adapter rank (MiSS/DiSHA: shard size)")
    alpha: float = _f(32.0, lo=0, doc="LoRA scaling numerator (scale = alpha/r, or alpha/sqrt(r) with rslora)")
    dropout: float = _f(0.0, lo=0.0, hi=0.9, doc="LoRA dropout on the adapter input")
    rslora: bool = _f(False, doc="rank-stabilised LoRA scaling alpha/sqrt(r)")
    mode: str = _f("bone", choices=("bone", "bat", "mini"), doc="DiSHA/MiSS variant")
    mini_r: int | None = _f(None, lo=1, doc="MiSS 'mini' mode inner size")
    svd_niter: int = _f(4, lo=0, hi=64, doc="PiSSA: power iterations of the randomized SVD")
    train_parts: list = _f(["time", "ln"], doc="trained densely on top of an adapter: emb head time ln")
    targets: list | None = _f(None, doc="Linear layers to adapt, e.g. [att.key, att.value, ffn.key]; default: all")
    layers: Any = _f(None, doc="layers to adapt: null (all), '12-23', or a list of indices")


@dataclass
class DataSection:
    path: str = _f("", doc="binidx prefix, .jsonl/.json/.txt file or folder")
    type: str = _f("auto", choices=DATA_TYPES)
    dataload: str = _f("pad", choices=DATALOADS, doc="get: random windows; pad: one document per sample; only")
    loss_mask: str = _f("pad", choices=LOSS_MASKS)
    ctx_len: int = _f(1024, lo=1, hi=1_048_576)
    fields: list | None = _f(None, doc="SFT fields, e.g. [query, response] or [instruction, input, output]")
    split: str | None = _f(None, doc="Hugging Face datasets split, e.g. 'train[:1000]'")
    eval_path: str | None = _f(None, doc="held-out data for eval loss / perplexity")
    eval_every: int = _f(0, lo=0, doc="eval every N optimizer steps (0: never)")
    eval_batches: int = _f(8, lo=1)


@dataclass
class TrainSection:
    micro_bsz: int = _f(1, lo=1, hi=65536)
    accumulate_grad_batches: int = _f(1, lo=1, hi=65536)
    epoch_steps: int = _f(1000, lo=1)
    epoch_count: int = _f(4, lo=1)
    epoch_save: int = _f(1, lo=1)
    save_every_steps: int = _f(0, lo=0, doc="also write a resumable checkpoint every N steps (0: per epoch only)")
    keep_last: int = _f(3, lo=1, doc="checkpoints kept under checkpoints/")
    lr_init: float = _f(2e-5, lo=0.0)
    lr_final: float = _f(2e-5, lo=0.0)
    lr_schedule: str = _f("cos_decay", choices=SCHEDULES)
    warmup_steps: int = _f(0, lo=0)
    beta1: float = _f(0.9, lo=0.0, hi=1.0)
    beta2: float = _f(0.99, lo=0.0, hi=1.0)
    adam_eps: float = _f(1e-8, lo=0.0)
    weight_decay: float = _f(0.0, lo=0.0)
    grad_clip: float = _f(1.0, lo=0.0)
    l2wrap: bool = _f(True, doc="the official trainer's logit regulariser")
    grad_cp: bool = _f(True, doc="gradient checkpointing per block: less memory, ~30% slower")
    precision: str = _f("bf16", choices=PRECISIONS)
    strategy: str = _f("single", choices=STRATEGIES)
    devices: int = _f(1, lo=1, hi=1024)
    nodes: int = _f(1, lo=1, hi=4096)
    hostfile: str | None = _f(None)
    op: str = _f("auto", choices=OPS)
    train_type: str = _f("normal", choices=TRAIN_TYPES)
    chunk_ctx: int = _f(512, lo=16)
    seed: int = _f(42, lo=0)
    max_bad_steps: int = _f(10, lo=1, doc="stop after this many NaN/inf losses in a row")
    sample_every: int = _f(0, lo=0, doc="generate from sample_prompts every N steps (0: never)")
    sample_prompts: list = _f([])
    sample_tokens: int = _f(64, lo=1)
    device: str = _f("auto", doc="auto | cpu | cuda | cuda:N")


@dataclass
class OutputSection:
    dir: str = _f("runs/run", doc="the run directory (metrics.jsonl, checkpoints, adapter, merged model)")
    merge: bool = _f(False, doc="merge the adapter into the base at the end (merged.pth)")
    merge_dtype: str | None = _f(None, choices=(None, "bf16", "fp16", "fp32"))
    export: str | None = _f(None, choices=(None, "rwkv-peft"), doc="also write RWKV-PEFT-style rwkv-N.pth adapters")
    wandb: str = _f("", doc="W&B project name ('' disables)")
    tensorboard: bool = _f(False)


SECTIONS: dict[str, type] = {"model": ModelSection, "method": MethodSection, "data": DataSection,
                             "train": TrainSection, "output": OutputSection}


@dataclass
class Preset:
    model: ModelSection = field(default_factory=ModelSection)
    method: MethodSection = field(default_factory=MethodSection)
    quant: str = "none"
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    source: str | None = None  # where it was read from (not written back)
    provenance: dict | None = None  # tool version and fingerprints, written into a run's resolved preset

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        if d["provenance"] is None:
            d.pop("provenance")
        return d

    @property
    def method_name(self) -> str:
        """The canonical method name (disha/bone/bat → miss)."""
        return CANONICAL_METHOD.get(self.method.name, self.method.name)

    @property
    def real_batch(self) -> int:
        return self.train.micro_bsz * self.train.accumulate_grad_batches * self.train.devices * self.train.nodes

    @property
    def total_steps(self) -> int:
        return self.train.epoch_steps * self.train.epoch_count

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.real_batch * self.data.ctx_len


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"Did you mean '{close[0]}'?" if close else f"Valid keys: {', '.join(valid)}."


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace(" | None", "")


def _coerce(where: str, value: Any, f: Any) -> Any:
    """Check one value against its field's type, choices and range; return it (ints widen to floats)."""
    tp = str(f.type)
    meta = f.metadata
    if value is None:
        if "None" in tp or f.default is None:
            return None
        raise ConfigError(f"{where} is empty", f"Set a value (default: {f.default!r}).")
    if tp.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} is not true/false", "Write true or false.")
    elif tp.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where} = {value!r} is not a whole number", "Write an integer, e.g. 64.")
    elif tp.startswith("float"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} is not a number", "Write a number, e.g. 2e-5.")
        value = float(value)
    elif tp.startswith("str"):
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) and "path" in where else value
            if not isinstance(value, str):
                raise ConfigError(f"{where} = {value!r} is not text", "Quote it as a string.")
    elif tp.startswith("list"):
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r} is not a list", "Write a YAML list, e.g. [time, ln].")
    elif tp.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{where} = {value!r} is not a mapping", "Write a YAML mapping.")
    choices = meta.get("choices")
    if choices and value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices if c is not None], n=1)
        raise ConfigError(f"{where} = {value!r} is not one of {shown}",
                          f"Did you mean '{hint[0]}'?" if hint else f"Use one of: {shown}.")
    lo, hi = meta.get("lo"), meta.get("hi")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{where} = {value!r} is below the minimum {lo}", f"Use a value ≥ {lo}.")
        if hi is not None and value > hi:
            raise ConfigError(f"{where} = {value!r} is above the maximum {hi}", f"Use a value ≤ {hi}.")
    return value


def _section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"preset section '{name}' is a {type(raw).__name__}, not a mapping",
                          f"Write '{name}:' followed by indented 'key: value' lines.")
    valid = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            raise ConfigError(f"unknown key '{name}.{key}'", _suggest(str(key), list(valid)))
        kwargs[key] = _coerce(f"{name}.{key}", value, valid[key])
    return cls(**kwargs)


def from_dict(raw: dict[str, Any], *, source: str | None = None) -> Preset:
    """Build and validate a Preset from a parsed YAML mapping (field checks and cross-field checks)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"preset {source or ''} is not a YAML mapping".replace("  ", " "),
                          "Start from `rwkv-tune presets copy NAME preset.yaml` or `rwkv-tune init`.")
    top = ["model", "method", "quant", "data", "train", "output", "provenance"]
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown preset section '{key}'", _suggest(str(key), top))
    model_raw = raw.get("model")
    if isinstance(model_raw, str):
        model_raw = {"path": model_raw}
    method_raw = raw.get("method")
    if isinstance(method_raw, str):
        method_raw = {"name": method_raw}
    quant = raw.get("quant", "none")
    quant = "none" if quant in (None, False) else quant
    if quant not in QUANTS:
        hint = difflib.get_close_matches(str(quant), QUANTS, n=1)
        raise ConfigError(f"quant = {quant!r} is not one of {', '.join(QUANTS)}",
                          f"Did you mean '{hint[0]}'?" if hint else "Use none, int8 or nf4.")
    preset = Preset(
        model=_section("model", ModelSection, model_raw),
        method=_section("method", MethodSection, method_raw),
        quant=quant,
        data=_section("data", DataSection, raw.get("data")),
        train=_section("train", TrainSection, raw.get("train")),
        output=_section("output", OutputSection, raw.get("output")),
        source=source,
        provenance=raw.get("provenance"),
    )
    check_cross_fields(preset)
    return preset


def check_cross_fields(p: Preset) -> None:
    """Checks that involve more than one key (the model file is checked later by `check_against_spec`)."""
    t = p.train
    if not p.model.path:
        raise ConfigError("model.path is empty", "Set it to your base model .pth (rwkv-tune inspect shows what it is).")
    if not p.data.path and p.data.type != "dummy":
        raise ConfigError("data.path is empty", "Set it to a binidx prefix or a .jsonl/.txt file (see rwkv-tune data).")
    if t.op == "cuda" and t.precision != "bf16":
        raise ConfigError(f"train.op = cuda needs train.precision = bf16, not {t.precision}",
                          "Set train.precision: bf16, or train.op: torch.")
    if p.method_name == "state" and t.op not in STATE_GRAD_OPS:
        raise ConfigError(f"method state needs an op that returns the initial-state gradient; train.op = {t.op} does "
                          "not", f"Use train.op: {' or '.join(STATE_GRAD_OPS[:3])}.")
    if p.quant != "none":
        if p.method_name == "full":
            raise ConfigError(f"quant = {p.quant} freezes the base weights, but method full trains them",
                              "Use quant: none with method full, or an adapter method (lora, pissa, miss).")
    if (t.devices > 1 or t.nodes > 1) and not t.strategy.startswith("deepspeed"):
        raise ConfigError(f"train.devices = {t.devices}, train.nodes = {t.nodes} needs a DeepSpeed strategy, not "
                          f"'{t.strategy}'", "Set train.strategy: deepspeed_stage_1 (or _2, _3).")
    if t.train_type == "infctx":
        if t.chunk_ctx >= p.data.ctx_len:
            raise ConfigError(f"train.chunk_ctx = {t.chunk_ctx} must be smaller than data.ctx_len = {p.data.ctx_len} "
                              "for infctx", f"Set train.chunk_ctx to e.g. {max(16, p.data.ctx_len // 4)}.")
        if p.data.ctx_len % t.chunk_ctx:
            raise ConfigError(f"data.ctx_len = {p.data.ctx_len} is not a multiple of train.chunk_ctx = {t.chunk_ctx}",
                              "Pick a chunk_ctx that divides ctx_len.")
    if p.data.dataload == "only" and t.micro_bsz != 1:
        raise ConfigError(f"data.dataload = only trains one unpadded document per step, so train.micro_bsz must "
                          f"be 1, not {t.micro_bsz}", "Set train.micro_bsz: 1, or data.dataload: pad.")
    if t.warmup_steps >= p.total_steps and t.warmup_steps > 0:
        raise ConfigError(f"train.warmup_steps = {t.warmup_steps} is not below the run's {p.total_steps} steps",
                          "Lower warmup_steps or raise epoch_steps/epoch_count.")
    if t.lr_schedule != "constant" and t.lr_final > t.lr_init:
        raise ConfigError(f"train.lr_final = {t.lr_final} is above train.lr_init = {t.lr_init} for {t.lr_schedule}",
                          "Decaying schedules go from lr_init down to lr_final; swap them or use constant.")
    bad = [part for part in p.method.train_parts if part not in TRAIN_PARTS]
    if bad:
        raise ConfigError(f"method.train_parts has {bad[0]!r}", f"Use any of: {', '.join(TRAIN_PARTS)} (or []).")


def check_machine(p: Preset) -> None:
    """Checks that depend on this machine's packages (run at train time, not when a preset is read)."""
    if p.quant != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quant = {p.quant} needs bitsandbytes, which is not installed",
                          "pip install bitsandbytes, or set quant: none.")
    if p.train.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"train.strategy = {p.train.strategy} needs deepspeed, which is not installed",
                          "pip install deepspeed, or set train.strategy: single.")


def check_against_spec(p: Preset, spec: Any) -> None:
    """Checks that need the model's detected architecture (ModelSpec)."""
    recorded = p.model.spec or {}
    actual = spec.to_dict()
    for key, value in recorded.items():
        if key in actual and actual[key] != value and key not in ("params", "size_name", "dtype"):
            raise ConfigError(f"model.spec.{key} = {value!r} in the preset, but {p.model.path} has {actual[key]!r}",
                              "The preset was made for another model (or the file changed): use a preset for "
                              "this model, or delete model.spec from the preset (it is re-detected).")
    if p.method.name == "bat" or (p.method_name == "miss" and p.method.mode == "bat"):
        for name, dim in (("n_embd", spec.n_embd), ("dim_ffn", spec.dim_ffn)):
            if dim % p.method.r:
                raise ConfigError(f"method.mode = bat needs {name} ({dim}) divisible by method.r = {p.method.r}",
                                  "Pick an r that divides both n_embd and dim_ffn, or use mode: bone.")
    if p.method_name in ("lora", "pissa") and p.method.r > spec.n_embd:
        raise ConfigError(f"method.r = {p.method.r} is larger than n_embd = {spec.n_embd}",
                          f"Use r ≤ {spec.n_embd} (typical: 8…128).")
    if p.train.op == "cuda" and spec.head_size != 64:
        raise ConfigError(f"train.op = cuda needs head_size 64; this model has {spec.head_size}",
                          "Set train.op: torch (or fla).")


def parse_set(assignments: list[str]) -> list[tuple[list[str], Any]]:
    """Parse `--set train.lr_init=1e-4` style overrides (values are YAML: numbers, bools, lists)."""
    out = []
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} has no '='", "Write --set section.key=value, e.g. --set train.lr_init=1e-4.")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out.append((key.strip().split("."), value))
    return out


def apply_overrides(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply --set overrides to a raw preset mapping (validation happens in from_dict)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for path, value in parse_set(assignments):
        if len(path) == 1:
            raw[path[0]] = value
            continue
        if len(path) != 2:
            raise ConfigError(f"--set {'.'.join(path)} is too deep", "Write section.key=value, e.g. train.lr_init=1e-4.")
        section = raw.get(path[0])
        if section is None or isinstance(section, str):
            section = {} if section is None else {"path" if path[0] == "model" else "name": section}
        raw[path[0]] = {**section, path[1]: value}
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> Preset:
    """Read a preset YAML (safe loader), apply --set overrides and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"preset {path} does not exist", "Create one with `rwkv-tune init` or `rwkv-tune presets copy`.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"preset {path} is not valid YAML{where}", "Check indentation and colons there.") from None
    if overrides:
        raw = apply_overrides(raw, overrides)
    return from_dict(raw, source=str(path))


def dump(preset: Preset) -> str:
    """The preset as YAML with every value resolved (what a run directory keeps)."""
    return yaml.safe_dump(preset.to_dict(), sort_keys=False, allow_unicode=True)
