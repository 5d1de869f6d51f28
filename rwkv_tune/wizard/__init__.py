"""The `rwkv-tune init` wizard as pure functions: state → next question, answer → new state, state → preset.

Nothing here reads the terminal (that is `prompts.py`, imported only by the command), so the whole flow
is unit-tested. Every question has a recommended default that follows the detected model and the answers
so far, and `summary()` turns the live estimate into the lines shown after each answer. Torch-free.

- `state`: the Question / State types and the order of the questions
- `methods`: the methods and quantisations on the menu (from `rwkv_tune.peft`)
- `detect`: GPUs (nvidia-smi), model files, and the kind of the training data
- `defaults`: recommended values and the estimate for the answers so far
- `flow`: the next question, and the answers → a validated preset
- `answers`: raw replies → checked values
- `report`: the model, estimate and next command as text
"""

from __future__ import annotations

from rwkv_tune.wizard.answers import answer, answer_many, apply_fix
from rwkv_tune.wizard.defaults import current_estimate, default, recommended_lr, recommended_rank, resolved
from rwkv_tune.wizard.detect import (
    DataInfo,
    detect_gpus,
    find_models,
    inspect_data,
    parse_nvidia_smi,
    prepare_command,
)
from rwkv_tune.wizard.flow import applies, build_preset, next_question, question, to_raw
from rwkv_tune.wizard.methods import ADAPTERS, ALIASES, METHOD_HELP, METHODS, QUANT_HELP, method_parts
from rwkv_tune.wizard.report import describe_spec, next_command, summary
from rwkv_tune.wizard.state import ADVANCED, CPU, FLAG_ONLY, FLOW, NO_GPU, Choice, Question, State

__all__ = [
    "ADAPTERS", "ADVANCED", "ALIASES", "CPU", "FLAG_ONLY", "FLOW", "METHODS", "METHOD_HELP", "NO_GPU", "QUANT_HELP",
    "Choice", "DataInfo", "Question", "State",
    "answer", "answer_many", "applies", "apply_fix", "build_preset", "current_estimate", "default", "describe_spec",
    "detect_gpus", "find_models", "inspect_data", "method_parts", "next_command", "next_question", "parse_nvidia_smi",
    "prepare_command", "question", "recommended_lr", "recommended_rank", "resolved", "summary", "to_raw",
]
