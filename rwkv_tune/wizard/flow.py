"""The flow: state → the next question (with its default and choices), and the answers → a validated preset."""

from __future__ import annotations

import importlib.util
from typing import Any

from rwkv_tune.estimate.gpus import GPUS
from rwkv_tune.preset import PRECISIONS, STRATEGIES, Preset, check_against_spec, from_dict
from rwkv_tune.wizard.defaults import current_estimate, default, resolved
from rwkv_tune.wizard.methods import ADAPTERS, METHOD_HELP, METHODS, QUANT_HELP, method_parts
from rwkv_tune.wizard.state import ADVANCED, CPU, FLOW, NO_GPU, Choice, Question, State

OBJECTIVE_CHOICES = (
    Choice("sft", "SFT: learn from texts", "next-token training on documents or chat/instruction records"),
    Choice("dpo", "preferences: DPO", "{prompt, chosen, rejected} pairs; the base (adapter off) is the reference"),
    Choice("orpo", "preferences: ORPO", "{prompt, chosen, rejected} pairs; SFT and preference in one loss, no reference"),
    Choice("grpo", "rewards: GRPO", "{prompt, answer} records; completions are sampled and scored by reward functions"),
)
OBJECTIVE_DATA = {  # the data question for each non-SFT objective: (message, help)
    "dpo": ("Preference pairs (.jsonl)", 'one {"prompt", "chosen", "rejected"} record per line'),
    "orpo": ("Preference pairs (.jsonl)", 'one {"prompt", "chosen", "rejected"} record per line'),
    "grpo": ("Prompts (.jsonl)", 'one {"prompt", "answer"} record per line; exact_answer rewards matching answers'),
}


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
    if key == "objective":
        return Question(key, "select", "What kind of training?", d, OBJECTIVE_CHOICES,
                        "preferences and rewards train on .jsonl records (pairs or prompts)")
    if key == "data":
        kind = state.answers.get("objective", "sft")
        if kind in OBJECTIVE_DATA:
            return Question(key, "path", OBJECTIVE_DATA[kind][0], d, (), OBJECTIVE_DATA[kind][1])
        return Question(key, "path", "Training data", d, (),
                        "a binidx prefix (data/train for data/train.bin + .idx), a .jsonl/.txt file or a folder")
    if key == "gpu":
        choices = [Choice(g, f"{g.name} · {g.memory_gib:.0f} GiB (this machine)") for g in state.gpus]
        choices.append(Choice(CPU, "train on this CPU (the time is measured here)"))
        choices += [Choice(g, g.name) for g in GPUS if g not in state.gpus]
        choices.append(Choice(NO_GPU, "none: just show which cards it fits"))
        return Question(key, "select", "Which GPU will train it?", d if d is not None else NO_GPU, tuple(choices),
                        "the estimate says whether the run fits it, what to change if not, and how long it takes")
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
        if spec.variant:  # RWKV-7a/7b: checked against the file like the rest
            model["spec"]["variant"] = spec.variant
    train = {k: v[k] for k in ("micro_bsz", "accumulate_grad_batches", "epoch_steps", "epoch_count", "lr_init",
                                "lr_final", "grad_cp", "precision", "strategy", "devices", "train_type")}
    if v["train_type"] == "infctx":
        train["chunk_ctx"] = v["chunk_ctx"]
    if v["gpu"] == CPU:
        train["device"] = "cpu"
    size = spec.size_name if spec is not None else "model"
    raw = {"model": model, "method": method, "quant": "none" if name == "full" else v["quant"],
           "data": {"path": v["data"] or "data/train", "ctx_len": v["ctx_len"]}, "train": train,
           "output": {"dir": f"runs/{name}{'-' + mode if name == 'miss' else ''}-{size}"}}
    kind = v.get("objective") or "sft"
    if kind == "sft":
        raw["data"].update(_mask(state))
    else:
        raw["objective"] = {"type": kind, **({"rewards": ["exact_answer"]} if kind == "grpo" else {})}
        raw["data"]["type"] = "prompts" if kind == "grpo" else "pairs"
        raw["output"]["dir"] = f"runs/{kind}-{raw['output']['dir'].removeprefix('runs/')}"
    return raw


def _mask(state: State) -> dict[str, str]:
    """The loss mask the data suggests (qa/sft need whole documents: dataload pad)."""
    mask = state.data.loss_mask if state.data is not None else "pad"
    return {"loss_mask": mask, "dataload": "pad"} if mask != "pad" else {}


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
