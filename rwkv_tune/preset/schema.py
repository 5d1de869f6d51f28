"""The preset schema: every section, key, default, choice list, range and help line, in one place.

Torch-free. The validator, the estimator, PEFT, quantisation, the wizard and the CLI take their
choice lists and defaults from here, so a value one of them accepts the others accept too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rwkv_tune.objectives.config import OBJECTIVES

METHODS = ("lora", "pissa", "disha", "bone", "bat", "miss", "state", "full")
CANONICAL_METHOD = {"bone": "miss", "bat": "miss", "disha": "miss"}
QUANT_HELP = {
    "none": "base weights stay bf16",
    "int8": "frozen Linear weights in 8 bits (bitsandbytes)",
    "nf4": "frozen Linear weights in 4-bit NormalFloat (QLoRA-style): least memory",
    "fp4": "frozen Linear weights in 4-bit float (bitsandbytes)",
}
QUANTS = tuple(QUANT_HELP)
QUANT_KINDS = QUANTS[1:]  # what quant.py can quantize to
DATA_TYPES = ("auto", "binidx", "jsonl", "sft", "chat", "text", "utf-8", "utf-16le", "numpy", "uint16", "dummy", "hf",
              "pairs", "prompts")  # pairs: {prompt, chosen, rejected} (dpo/orpo); prompts: {prompt, answer?} (grpo)
DATALOADS = ("get", "pad", "only")
LOSS_MASKS = ("pad", "qa", "sft", "none")
SCHEDULES = ("cos_decay", "wsd", "constant")
PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
STRATEGIES = ("single", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
              "deepspeed_stage_3", "deepspeed_stage_3_offload")
OPS = ("auto", "torch", "cuda", "fla", "naive")
TRAIN_TYPES = ("normal", "infctx")
MISS_MODES = ("bone", "bat", "mini")
MERGE_DTYPES = ("bf16", "fp16", "fp32")
EXPORTS = ("rwkv-peft", "peft", "gguf")  # output.export: extra adapter formats written at the end of a run
TRAIN_PARTS = ("emb", "head", "time", "ln", "deepembed")  # deepembed: RWKV-7a/7b per-token tables
ATT_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "att.gate")
FFN_TARGETS = ("ffn.key", "ffn.value", "ffn.receptance")
# RWKV-7a/7b only (never default): the Linears that map LN0(emb) into the per-token tables, and 7b's q.
DEEPEMBED_TARGETS = ("ffn.s_emb_x", "qkv.qq", "qkv.k_emb_x", "qkv.v_emb_x")
ALL_TARGETS = ATT_TARGETS + FFN_TARGETS + DEEPEMBED_TARGETS
DEFAULT_TRAIN_PARTS = ("time", "ln")  # RWKV-PEFT's default: adapters also train time-mix vectors and norms
STATE_GRAD_OPS = ("auto", "torch", "naive", "cuda")  # ops whose backward returns the initial-state gradient


def _f(default: Any = None, *, choices: tuple | None = None, lo: float | None = None, hi: float | None = None,
       above: float | None = None, doc: str = "") -> Any:
    """A schema field: default, allowed values, inclusive range [lo, hi] or exclusive lower bound `above`, help."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "above": above, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    path: str = _f("", doc="the base model .pth (its architecture is detected)")
    spec: dict | None = _f(None, doc="recorded detected spec; checked against the file, never trusted")


@dataclass
class MethodSection:
    name: str = _f("lora", choices=METHODS, doc="the fine-tuning method (disha, bone and bat are names of miss)")
    r: int = _f(64, lo=1, hi=4096, doc="adapter rank (MiSS/DiSHA: shard size)")
    alpha: float = _f(32.0, above=0.0, doc="LoRA scaling numerator (scale = alpha/r, or alpha/sqrt(r) with rslora)")
    dropout: float = _f(0.0, lo=0.0, hi=0.9, doc="LoRA dropout on the adapter input")
    rslora: bool = _f(False, doc="rank-stabilised LoRA scaling alpha/sqrt(r)")
    mode: str = _f("bone", choices=MISS_MODES, doc="DiSHA/MiSS variant")
    mini_r: int | None = _f(None, lo=1, doc="MiSS 'mini' mode inner size")
    svd_niter: int = _f(4, lo=0, hi=64, doc="PiSSA: power iterations of the randomized SVD")
    train_parts: list = _f(list(DEFAULT_TRAIN_PARTS), doc="trained densely on top of an adapter: emb head time ln deepembed (7a/7b tables)")
    targets: list | None = _f(None, doc="Linear layers to adapt, e.g. [att.key, att.value, ffn.key] or [att, ffn]; "
                              "default: all")
    layers: Any = _f(None, doc="layers to adapt: null (all), '12-23', or a list of indices")
    load: str | None = _f(None, doc="start from this adapter (ours, RWKV-PEFT's rwkv-N.pth or a Hugging Face peft "
                          "folder); its file sets method, r, alpha and targets")


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
    hostfile: str | None = _f(None, doc="DeepSpeed hostfile for multi-node runs: one `host slots=N` line per node")
    master_addr: str = _f("127.0.0.1", doc="address of rank 0's node (multi-node runs started by rwkv-tune)")
    master_port: int = _f(0, lo=0, hi=65535, doc="rendezvous port (0: a free port on one node, 29500 on several)")
    zero3_persistence: int = _f(100000, lo=0, doc="ZeRO-3 keeps parameters under this many elements whole on "
                                "every rank (DeepSpeed's stage3_param_persistence_threshold)")
    op: str = _f("auto", choices=OPS)
    train_type: str = _f("normal", choices=TRAIN_TYPES)
    chunk_ctx: int = _f(512, lo=16)
    seed: int = _f(42, lo=0)
    max_bad_steps: int = _f(10, lo=1, doc="stop after this many NaN/inf losses in a row")
    sample_every: int = _f(0, lo=0, doc="generate every N steps from sample_prompts (none given: prompts from the data; 0: never)")
    sample_prompts: list = _f([])
    sample_tokens: int = _f(64, lo=1)
    device: str = _f("auto", doc="auto | cpu | cuda | cuda:N")


@dataclass
class OutputSection:
    dir: str = _f("runs/run", doc="the run directory (metrics.jsonl, checkpoints, adapter, merged model)")
    merge: bool = _f(False, doc="merge the adapter into the base at the end (merged.pth)")
    merge_dtype: str | None = _f(None, choices=(None, *MERGE_DTYPES))
    export: str | None = _f(None, choices=(None, *EXPORTS), doc="also write: rwkv-peft (rwkv-N.pth adapters), peft (a Hugging Face peft folder), gguf (merged.gguf for llama.cpp)")
    wandb: str = _f("", doc="W&B project name ('' disables)")
    tensorboard: bool = _f(False)


@dataclass
class ObjectiveSection:
    """What training optimises; validated as a whole by `rwkv_tune.objectives.ObjectiveConfig`."""

    type: str = _f("sft", choices=OBJECTIVES, doc="sft: next-token; dpo/orpo: preference pairs; grpo: rewards")
    beta: float = _f(0.1, above=0.0, doc="dpo / orpo strength")
    group_size: int = _f(8, lo=2, doc="grpo: completions sampled per prompt")
    max_new_tokens: int = _f(256, lo=1, doc="grpo: longest completion, in tokens")
    temperature: float = _f(1.0, above=0.0, doc="grpo: sampling temperature")
    top_p: float = _f(1.0, above=0.0, hi=1.0, doc="grpo: nucleus sampling")
    kl_beta: float = _f(0.04, lo=0.0, doc="grpo: KL penalty to the reference (the base, adapter off)")
    clip_eps: float = _f(0.2, above=0.0, doc="grpo: ratio clip")
    rewards: list = _f([], doc="grpo: built-in names (exact_answer regex length format) or {fn: 'module:function'}")


SECTIONS: dict[str, type] = {"model": ModelSection, "method": MethodSection, "data": DataSection,
                             "train": TrainSection, "output": OutputSection, "objective": ObjectiveSection}


@dataclass
class Preset:
    model: ModelSection = field(default_factory=ModelSection)
    method: MethodSection = field(default_factory=MethodSection)
    quant: str = "none"
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
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
    def objective_config(self) -> Any:
        """The objective section as an `ObjectiveConfig` (what `build_objective` takes)."""
        from rwkv_tune.objectives.config import ObjectiveConfig

        return ObjectiveConfig.from_dict(asdict(self.objective))

    @property
    def real_batch(self) -> int:
        return self.train.micro_bsz * self.train.accumulate_grad_batches * self.train.devices * self.train.nodes

    @property
    def total_steps(self) -> int:
        return self.train.epoch_steps * self.train.epoch_count

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.real_batch * self.data.ctx_len


def section_fields(section: str) -> dict[str, Any]:
    """The dataclass fields of one preset section, by key."""
    return {f.name: f for f in fields(SECTIONS[section])}


def choices(key: str) -> tuple:
    """The allowed values of a 'section.key' (or 'quant'); () for a key without a choice list."""
    if key == "quant":
        return QUANTS
    section, _, name = key.partition(".")
    values = section_fields(section)[name].metadata.get("choices") or ()
    return tuple(v for v in values if v is not None)


def key_help(key: str) -> str:
    """The one-line help of a 'section.key' (or 'quant'), with its choices and default."""
    if key == "quant":
        return f"{' | '.join(QUANTS)} (frozen base weights; default none)"
    section, _, name = key.partition(".")
    f = section_fields(section)[name]
    default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
    listed = " | ".join(choices(key))
    parts = [p for p in (f.metadata.get("doc"), listed) if p]
    return f"{'; '.join(parts) or name} (default {default!r})"


CHOICE_KEYS = ("quant", *(f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)
                          if f.metadata.get("choices")))
