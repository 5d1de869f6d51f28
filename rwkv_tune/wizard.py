"""The `rwkv-tune init` wizard as pure functions: state → next question, answer → new state, state → preset.

Nothing here reads the terminal (that is `wizard_prompts.py`), so the whole flow is unit-tested.
Every question has a recommended default that follows the detected model and the answers so far
(rank by size, learning rates by method, the lightest quantisation that fits the target GPU), and
`summary()` turns the live estimate into the lines shown after each answer.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate.fit import fits, usable_gib
from rwkv_tune.estimate.gpus import GPU, GPUS, find_gpu
from rwkv_tune.preset import PRECISIONS, STRATEGIES, TRAIN_TYPES, Preset, check_against_spec, from_dict
from rwkv_tune.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.estimate import Estimate

METHOD_HELP = {
    "lora": "LoRA: a low-rank update B·A on every Linear; the well-trodden default",
    "pissa": "PiSSA: LoRA started from the weights' top singular vectors; converges faster",
    "miss": "MiSS / DiSHA-Bone: one shared shard update per Linear; fewer parameters than LoRA",
    "bat": "MiSS / DiSHA-Bat: block-wise update from the weights; r must divide the layer widths",
    "state": "state tuning: trains only the initial WKV state; tiny files, learns style and format, not facts",
    "full": "full fine-tuning: every weight; the most memory, no quantisation",
}
METHODS = tuple(METHOD_HELP)
ALIASES = {"disha": "miss", "bone": "miss"}
ADAPTERS = ("lora", "pissa", "miss", "bat")
QUANT_HELP = {
    "none": "base weights stay bf16",
    "int8": "frozen Linear weights in 8 bits (bitsandbytes)",
    "nf4": "frozen Linear weights in 4-bit NormalFloat (QLoRA-style): least memory",
}
ADVANCED = ("precision", "devices", "strategy", "lr_init", "lr_final", "epoch_steps", "epoch_count")
FLOW = ("model", "data", "gpu", "method", "rank", "quant", "ctx_len", "micro_bsz", "grad_cp", "more", *ADVANCED, "out")
# Keys that only flags set (no question): they keep these values unless given.
FLAG_ONLY = {"accumulate_grad_batches": 1, "train_type": "normal", "chunk_ctx": 512}
NO_GPU = "none"
_SHORT = {"base_weights": "base", "embedding_head": "emb+head", "trainable_weights": "trained", "gradients": "grads",
          "optimizer": "AdamW", "activations": "activations", "logits_loss": "logits", "workspace": "workspace",
          "cuda_context": "CUDA", "allocator_overhead": "allocator"}


@dataclass(frozen=True)
class Choice:
    """One option of a select question."""

    value: Any
    title: str
    description: str = ""


@dataclass(frozen=True)
class Question:
    """What to ask next: `kind` is model | path | select | confirm | int | float."""

    key: str
    kind: str
    message: str
    default: Any
    choices: tuple[Choice, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class DataInfo:
    """What the data path holds: `kind` is binidx | jsonl | json | text | folder | missing."""

    path: str
    kind: str
    documents: int | None = None

    @property
    def raw(self) -> bool:
        """Text or JSON the trainer would tokenize on every run (a candidate for `data prepare`)."""
        return self.kind in ("jsonl", "json", "text", "folder")

    def describe(self) -> str:
        count = f", {self.documents:,} documents" if self.documents is not None else ""
        return {"binidx": f"binidx (tokenized){count}", "jsonl": f"JSON lines{count}", "json": "a JSON file",
                "text": "plain text", "folder": f"a folder of data files{count.replace('documents', 'files')}",
                "missing": "not found"}[self.kind]


@dataclass(frozen=True)
class State:
    """The wizard's answers so far plus what it found out (model spec, data kind, GPUs it sees)."""

    answers: Mapping[str, Any] = field(default_factory=dict)
    spec: ModelSpec | None = None
    data: DataInfo | None = None
    gpus: tuple[GPU, ...] = ()
    found_models: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# ---- what the machine has -------------------------------------------------------------------------


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
    """The kind of data at `path` (binidx prefix, .jsonl, .json, text or folder) and its document count if cheap."""
    p = Path(path).expanduser()
    prefix = p.with_suffix("") if p.suffix in (".bin", ".idx") else p
    idx = prefix.with_name(prefix.name + ".idx")
    if idx.is_file() and prefix.with_name(prefix.name + ".bin").is_file():
        return DataInfo(str(prefix) if p.suffix in (".bin", ".idx") else path, "binidx", _binidx_documents(idx))
    if p.is_dir():
        n = sum(1 for f in p.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json", ".txt", ".md"))
        return DataInfo(path, "folder", n)
    if p.is_file():
        if p.suffix in (".jsonl", ".ndjson"):
            docs = None
            if p.stat().st_size <= 64 << 20:
                with open(p, "rb") as f:
                    docs = sum(1 for line in f if line.strip())
            return DataInfo(path, "jsonl", docs)
        return DataInfo(path, "json" if p.suffix == ".json" else "text")
    return DataInfo(path, "missing")


def _binidx_documents(idx: Path) -> int | None:
    """Item count from a Megatron .idx header (magic, u64 version, u8 dtype, u64 items, u64 doc_count)."""
    with open(idx, "rb") as f:
        head = f.read(34)
    if len(head) < 34 or not head.startswith(b"MMIDIDX"):
        return None
    return struct.unpack_from("<Q", head, 18)[0]


def prepare_command(info: DataInfo) -> tuple[str, str]:
    """(the `rwkv-tune data prepare` command for raw data, the binidx prefix it writes)."""
    p = Path(info.path)
    prefix = str(p.with_name(p.name + "_tokenized") if info.kind == "folder" else p.with_suffix(""))
    return f"rwkv-tune data prepare {info.path} --out {prefix}", prefix


# ---- recommended values ---------------------------------------------------------------------------


def method_parts(method: str) -> tuple[str, str]:
    """(preset method name, MiSS mode) for a wizard method: bat → (miss, bat); disha/bone → (miss, bone)."""
    m = ALIASES.get(method, method)
    return ("miss", "bat") if m == "bat" else (m, "bone")


def recommended_rank(spec: ModelSpec | None, method: str) -> int:
    """LoRA/PiSSA: 32 below 1B parameters, else 64; MiSS: 64 (bat: the largest of 64, 32, … dividing the widths)."""
    if method in ("miss", "bat"):
        if method == "bat" and spec is not None:
            return next(r for r in (64, 32, 16, 8, 4, 2, 1) if spec.n_embd % r == 0 and spec.dim_ffn % r == 0)
        return 64
    return 32 if spec is not None and spec.params < 1e9 else 64


def recommended_lr(spec: ModelSpec | None, method: str) -> tuple[float, float]:
    """(lr_init, lr_final): state tuning ~1.0 → 0.01, adapters 1e-4 → 2e-5 (half that from 7B), full 1e-5 → 1e-6."""
    if method == "state":
        return 1.0, 0.01
    if method == "full":
        return 1e-5, 1e-6
    big = spec is not None and spec.params >= 6e9
    return (5e-5, 1e-5) if big else (1e-4, 2e-5)


def _peek(key: str, state: State, values: Mapping[str, Any]) -> Any:
    if key in values:
        return values[key]
    if key in state.answers:
        return state.answers[key]
    return {"method": "lora", "rank": 64, "quant": "none", "ctx_len": 1024, "micro_bsz": 1, "grad_cp": True,
            "precision": "bf16", "devices": 1, "strategy": "single", "gpu": None, **FLAG_ONLY}.get(key)


def default(key: str, state: State, values: Mapping[str, Any] | None = None) -> Any:
    """The recommended answer to `key`, given the answers so far (`values`: resolved earlier keys)."""
    values = values or {}
    spec, method = state.spec, _peek("method", state, values)
    if key == "model":
        return state.found_models[0] if state.found_models else ""
    if key == "data":
        return ""
    if key == "gpu":
        return state.gpus[0] if state.gpus else None
    if key == "method":
        return "lora"
    if key == "rank":
        return recommended_rank(spec, method)
    if key == "quant":
        return _recommended_quant(state, values)
    if key in ("ctx_len", "micro_bsz", "grad_cp", "precision", *FLAG_ONLY):
        return _peek(key, State(), {})
    if key == "more":
        return False
    if key == "devices":
        return max(1, len(state.gpus))
    if key == "strategy":
        return "single" if _peek("devices", state, values) == 1 else "deepspeed_stage_1"
    if key == "lr_init":
        return recommended_lr(spec, method)[0]
    if key == "lr_final":
        lr0, lr1 = recommended_lr(spec, method)
        return _peek("lr_init", state, values) * lr1 / lr0
    if key == "epoch_steps":
        docs = state.data.documents if state.data else None
        batch = _peek("micro_bsz", state, values) * _peek("devices", state, values) * _peek(
            "accumulate_grad_batches", state, values)
        return max(1, docs // batch) if docs else 1000
    if key == "epoch_count":
        return 4
    if key == "out":
        return "preset.yaml"
    raise KeyError(key)


def _recommended_quant(state: State, values: Mapping[str, Any]) -> str:
    """The lightest quantisation (none, int8, nf4) whose estimate fits the target GPU; none without a target."""
    if state.spec is None or _peek("method", state, values) == "full" or _peek("gpu", state, values) is None:
        return "none"
    for quant in ("none", "int8", "nf4"):
        e = _estimate(state, {**values, "quant": quant})
        if e is not None and e.fits_target:
            return quant
    return "none"


def resolved(state: State) -> dict[str, Any]:
    """Every answer, with the recommended value where none was given."""
    values: dict[str, Any] = {}
    for key in (*FLOW, *FLAG_ONLY):
        values[key] = state.answers[key] if key in state.answers else default(key, state, values)
    return values


# ---- the flow -----------------------------------------------------------------------------------------


def applies(key: str, state: State) -> bool:
    """Whether `key` is a question for this state (rank only for adapters, devices only with 2+ GPUs, …)."""
    method = state.answers.get("method", "lora")
    if key == "rank":
        return method in ADAPTERS
    if key == "quant":
        return method != "full"
    if key == "devices" and len(state.gpus) < 2:
        return False
    if key in ADVANCED:
        return bool(state.answers.get("more"))
    return True


def next_question(state: State) -> Question | None:
    """The next unanswered question, or None when the preset can be written."""
    for key in FLOW:
        if key not in state.answers and applies(key, state):
            return question(key, state)
    return None


def question(key: str, state: State) -> Question:
    """The question for `key`, with its recommended default and, for selects, the choices."""
    d = default(key, state, resolved(state))
    if key == "model":
        return Question(key, "model", "Base model file (.pth or .safetensors)", d,
                        tuple(Choice(f, f) for f in state.found_models), "its architecture is detected from the file")
    if key == "data":
        return Question(key, "path", "Training data", d, (),
                        "a binidx prefix (data/train for data/train.bin + .idx), a .jsonl/.txt file or a folder")
    if key == "gpu":
        choices = [Choice(g, f"{g.name} · {g.memory_gib:.0f} GiB (this machine)") for g in state.gpus]
        choices += [Choice(g, g.name) for g in GPUS if g not in state.gpus]
        choices.append(Choice(NO_GPU, "none: just show which cards it fits"))
        return Question(key, "select", "Which GPU will train it?", d if d is not None else NO_GPU, tuple(choices),
                        "the estimate says whether the run fits it and what to change if not")
    if key == "method":
        titles = {"miss": "miss (DiSHA / Bone)", "bat": "bat (DiSHA / Bat)"}
        choices = tuple(Choice(m, titles.get(m, m), METHOD_HELP[m]) for m in METHODS)
        return Question(key, "select", "Fine-tuning method", d, choices)
    if key == "rank":
        method = state.answers.get("method", "lora")
        what = "MiSS shard size r" if method in ("miss", "bat") else f"{method} rank r"
        return Question(key, "int", what, d, (), "typical 8…128: higher learns more and costs more memory")
    if key == "quant":
        return Question(key, "select", "Quantise the frozen base weights?", d,
                        tuple(Choice(q, q, h) for q, h in QUANT_HELP.items()))
    if key == "ctx_len":
        return Question(key, "int", "Context length in tokens (ctx_len)", d, (),
                        "longer documents are cut; RWKV-7 kernels want a multiple of 16")
    if key == "micro_bsz":
        e = current_estimate(state)
        hint = f"up to {e.max_micro_bsz} fit on {e.target.name}" if e and e.target and e.max_micro_bsz else ""
        return Question(key, "int", "Sequences per GPU per step (micro_bsz)", d, (), hint)
    if key == "grad_cp":
        return Question(key, "confirm", "Gradient checkpointing?", d, (), "much less memory, ~30% slower")
    if key == "more":
        return Question(key, "confirm", "Adjust precision, strategy, learning rates and epochs?", d, (),
                        "no: keep the recommended values")
    if key == "precision":
        return Question(key, "select", "Precision", d, tuple(Choice(p, p) for p in PRECISIONS),
                        "bf16 is what the CUDA kernels want")
    if key == "devices":
        return Question(key, "int", f"GPUs to train on (this machine has {len(state.gpus)})", d)
    if key == "strategy":
        return Question(key, "select", "Strategy", d, tuple(Choice(s, s) for s in STRATEGIES),
                        "DeepSpeed ZeRO shards optimizer state over GPUs; _offload moves it to CPU RAM")
    if key in ("lr_init", "lr_final"):
        method = state.answers.get("method", "lora")
        hint = "state tuning wants ~1.0 → 0.01" if method == "state" else "adapters: ~1e-4 → 2e-5"
        return Question(key, "float", "Learning rate at the start" if key == "lr_init" else "Learning rate at the end",
                        d, (), hint)
    if key == "epoch_steps":
        docs = state.data.documents if state.data else None
        return Question(key, "int", "Optimizer steps per epoch", d, (),
                        f"{docs:,} documents / batch = one pass" if docs else "one pass over the data is documents / batch")
    if key == "epoch_count":
        return Question(key, "int", "Epochs", d, (), "a checkpoint is saved after each")
    if key == "out":
        return Question(key, "path", "Write the preset to", d)
    raise KeyError(key)


# ---- answers ---------------------------------------------------------------------------------------


def _int(key: str, raw: Any, lo: int = 1) -> int:
    try:
        value = int(str(raw).strip().replace("_", "")) if not isinstance(raw, int) or isinstance(raw, bool) else raw
    except ValueError:
        raise ConfigError(f"{key} = {raw!r} is not a whole number", "Type a number, e.g. 64.") from None
    if value < lo:
        raise ConfigError(f"{key} = {value} is below {lo}", f"Use {lo} or more.")
    return value


def _float(key: str, raw: Any) -> float:
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) or isinstance(raw, bool) else float(raw)
    except ValueError:
        raise ConfigError(f"{key} = {raw!r} is not a number", "Type a number, e.g. 1e-4.") from None
    if value < 0:
        raise ConfigError(f"{key} = {value} is negative", "Use 0 or more.")
    return value


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("y", "yes", "true", "1", "on"):
        return True
    if text in ("n", "no", "false", "0", "off"):
        return False
    raise ConfigError(f"{key} = {raw!r} is not yes/no", "Answer yes or no.")


def _choice(key: str, raw: Any, choices: Sequence[str]) -> str:
    value = str(raw).strip().lower()
    if value not in choices:
        raise ConfigError(f"{key} = {raw!r} is not one of {', '.join(choices)}", f"Use one of: {', '.join(choices)}.")
    return value


def _gpu(raw: Any, state: State) -> GPU | None:
    if raw is None or isinstance(raw, GPU):
        return raw
    text = str(raw).strip()
    if text.lower() in ("", NO_GPU, "any"):
        return None
    for g in state.gpus:
        if g.name.lower() == text.lower():
            return g
    return find_gpu(text)


def _parse(state: State, key: str, raw: Any, must_exist: bool) -> State:
    """Turn one raw answer into its value (and for model/data, what the file is); raise ConfigError if bad."""
    answers = dict(state.answers)
    if key == "model":
        from rwkv_tune.spec import detect

        path = str(raw).strip().strip("'\"")
        if not path:
            raise ConfigError("no model file given", "Type the path of the base model .pth.")
        spec = detect(Path(path).expanduser())
        return replace(state, answers={**answers, key: path}, spec=spec)
    if key == "data":
        path = str(raw).strip().strip("'\"")
        if not path:
            raise ConfigError("no training data given", "Type a binidx prefix or a .jsonl/.txt file or folder.")
        info = inspect_data(path)
        warnings = state.warnings
        if info.kind == "missing":
            if must_exist:
                raise ConfigError(f"data {path} does not exist", "Give a binidx prefix (data/train for data/train.bin "
                                  "+ .idx), a .jsonl/.txt file or a folder.")
            warnings += (f"data {path} does not exist yet; create it before training",)
        return replace(state, answers={**answers, key: info.path}, data=info, warnings=warnings)
    if key == "gpu":
        value: Any = _gpu(raw, state)
    elif key == "method":
        value = ALIASES.get(str(raw).strip().lower(), str(raw).strip().lower())
        _choice("method", value, METHODS)
    elif key == "quant":
        value = _choice("quant", raw, tuple(QUANT_HELP))
    elif key in ("precision", "strategy", "train_type"):
        value = _choice(key, raw, {"precision": PRECISIONS, "strategy": STRATEGIES, "train_type": TRAIN_TYPES}[key])
    elif key in ("grad_cp", "more"):
        value = _bool(key, raw)
    elif key in ("lr_init", "lr_final"):
        value = _float(key, raw)
    elif key == "chunk_ctx":
        value = _int(key, raw, 16)
    elif key in ("rank", "ctx_len", "micro_bsz", "devices", "epoch_steps", "epoch_count", "accumulate_grad_batches"):
        value = _int(key, raw)
    elif key == "out":
        value = str(raw).strip().strip("'\"") or "preset.yaml"
        if Path(value).expanduser().is_dir():
            raise ConfigError(f"--out {value} is a folder", f"Name a file, e.g. {Path(value) / 'preset.yaml'}.")
    else:
        raise ConfigError(f"unknown wizard answer {key!r}", f"Use one of: {', '.join((*FLOW, *FLAG_ONLY))}.")
    return replace(state, answers={**answers, key: value})


def answer(state: State, key: str, raw: Any, *, must_exist: bool = True) -> State:
    """Record one answer; a bad one (or one the preset or estimate rejects) raises ConfigError, state unchanged."""
    return answer_many(state, {key: raw}, must_exist=must_exist)


def answer_many(state: State, raw: Mapping[str, Any], *, must_exist: bool = True) -> State:
    """Record several answers (e.g. the command-line flags), in flow order, then check them together."""
    order = {k: i for i, k in enumerate((*FLOW, *FLAG_ONLY))}
    new = state
    for key in sorted(raw, key=lambda k: order.get(k, -1)):
        new = _parse(new, key, raw[key], must_exist)
    if new.spec is not None and set(raw) - {"data", "out", "gpu", "more"}:
        build_preset(new)  # the preset's own checks (bat divisibility, devices vs strategy, lr order, …)
        current_estimate(new)  # and the estimator's (e.g. infctx on RWKV-5)
    return new


def apply_fix(state: State, flags: str) -> State:
    """Apply an estimate fix such as '--quant nf4 --micro-bsz 2'; micro_bsz changes keep the batch via accumulation."""
    words = flags.split()
    raw: dict[str, Any] = {}
    values = resolved(state)
    i = 0
    while i < len(words):
        flag = words[i].removeprefix("--").replace("-", "_")
        if flag in ("grad_cp", "no_grad_cp"):
            raw["grad_cp"] = flag == "grad_cp"
            i += 1
            continue
        raw[flag] = words[i + 1]
        i += 2
    if "micro_bsz" in raw:
        b = int(raw["micro_bsz"])
        raw["accumulate_grad_batches"] = max(1, values["accumulate_grad_batches"] * values["micro_bsz"] // b)
    return answer_many(state, raw)


# ---- preset and estimate ---------------------------------------------------------------------------


def to_raw(state: State) -> dict[str, Any]:
    """The preset mapping these answers describe (what `preset.from_dict` validates)."""
    v = resolved(state)
    name, mode = method_parts(v["method"])
    method: dict[str, Any] = {"name": name}
    if name in ("lora", "pissa", "miss"):
        method["r"] = v["rank"]
    if name in ("lora", "pissa"):
        method["alpha"] = float(v["rank"])  # scale alpha/r = 1: the learning rate means the same at every rank
    if name == "miss":
        method["mode"] = mode
    spec = state.spec
    model: dict[str, Any] = {"path": v["model"]}
    if spec is not None:
        model["spec"] = {k: getattr(spec, k) for k in ("version", "n_layer", "n_embd", "n_head", "head_size",
                                                       "vocab_size", "dim_ffn")}
    train = {k: v[k] for k in ("micro_bsz", "accumulate_grad_batches", "epoch_steps", "epoch_count", "lr_init",
                                "lr_final", "grad_cp", "precision", "strategy", "devices", "train_type")}
    if v["train_type"] == "infctx":
        train["chunk_ctx"] = v["chunk_ctx"]
    size = spec.size_name if spec is not None else "model"
    return {"model": model, "method": method, "quant": "none" if name == "full" else v["quant"],
            "data": {"path": v["data"] or "data/train", "ctx_len": v["ctx_len"]}, "train": train,
            "output": {"dir": f"runs/{name}{'-' + mode if name == 'miss' else ''}-{size}"}}


def build_preset(state: State) -> Preset:
    """The validated Preset (field, cross-field and model-spec checks; int8/nf4 need bitsandbytes only to train)."""
    raw = to_raw(state)
    if raw["quant"] != "none" and importlib.util.find_spec("bitsandbytes") is None:
        preset = from_dict({**raw, "quant": "none"})  # written here, trained on a machine that has it
        preset.quant = raw["quant"]
    else:
        preset = from_dict(raw)
    if state.spec is not None:
        check_against_spec(preset, state.spec)
    return preset


def _estimate(state: State, values: Mapping[str, Any]) -> Estimate | None:
    from rwkv_tune.estimate import estimate

    if state.spec is None:
        return None
    name, mode = method_parts(_peek("method", state, values))
    keys = ("quant", "ctx_len", "micro_bsz", "grad_cp", "precision", "strategy", "devices", *FLAG_ONLY)
    knobs = {k: _peek(k, state, values) for k in keys}
    if name == "full":
        knobs["quant"] = "none"
    if knobs["train_type"] != "infctx":
        knobs.pop("chunk_ctx")
    steps = {k: _peek(k, state, values) for k in ("epoch_steps", "epoch_count")}
    return estimate(state.spec, method=name, mode=mode, rank=_peek("rank", state, values) or 64,
                    gpu=_peek("gpu", state, values), **{k: v for k, v in steps.items() if v}, **knobs)


def current_estimate(state: State) -> Estimate | None:
    """The estimate for the answers so far (recommended values for the rest); None before the model is known."""
    return _estimate(state, resolved(state)) if state.spec is not None else None


def describe_spec(spec: ModelSpec) -> str:
    """One line: what the model file is."""
    return (f"RWKV-{spec.version} {spec.size_name} ({spec.arch}): {spec.n_layer} layers × {spec.n_embd}, "
            f"{spec.n_head} heads × {spec.head_size}, vocab {spec.vocab_size}, {spec.params / 1e6:,.1f}M params, "
            f"{spec.dtype}")


def summary(e: Estimate, gpus: Sequence[GPU] = ()) -> list[str]:
    """The estimate as short lines: total with its breakdown, fit on each detected/target GPU, and the fix."""
    parts = " · ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in e.breakdown.items() if v >= 0.005)
    lines = [f"VRAM ≈ {e.total_gib:.2f} GiB per GPU ({parts})"]
    cards = list(gpus) + ([e.target] if e.target is not None and e.target not in gpus else [])
    for g in cards:
        ok = fits(e.total_gib, g)
        where = " (this machine)" if g in gpus else ""
        lines.append(f"{'✓ fits' if ok else '✗ does not fit'} {g.name}{where}: {usable_gib(g):.1f} GiB usable")
    if not cards:
        lines.append(f"fits {e.gpus_fit[0].name} and larger" if e.gpus_fit else "✗ fits no common GPU")
    if e.fits_target and e.target is not None and e.max_micro_bsz:
        ctx = f", ctx_len up to {e.max_ctx_len:,}" if e.max_ctx_len else ""
        lines.append(f"on {e.target.name}: micro_bsz up to {e.max_micro_bsz} at ctx_len {e.config.ctx_len}{ctx}")
    if not e.fits_target:
        if e.fix is not None:
            lines.append(f"fix for {e.fix_gpu.name}: {e.fix.flags} → {e.fix.total_gib:.2f} GiB "
                         f"(saves {e.fix.saves_gib:.2f} GiB: {e.fix.change})")
        else:
            for k in e.knobs[:3]:
                lines.append(f"{k.flags} saves {k.saves_gib:.2f} GiB → {k.total_gib:.2f} GiB ({k.change})")
    if e.timing.time_s:
        lines.append(f"speed (rough): ~{e.timing.tokens_per_s:,.0f} tokens/s on {e.timing.gpu}; "
                     f"{e.timing.tokens:,} tokens → {_duration(e.timing.time_s)}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def next_command(out: str | Path) -> str:
    """The exact command to run after the preset is written."""
    return f"rwkv-tune train {shlex.quote(str(out))}"
