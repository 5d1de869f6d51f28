"""The menu's methods and quantisations, and how a menu name maps to the preset's method name and MiSS mode.

The methods, their one-line descriptions and their aliases come from `rwkv_tune.peft` (torch-free at import).
"""

from __future__ import annotations

from rwkv_tune.peft import ALIASES as PEFT_ALIASES
from rwkv_tune.peft import METHOD_HELP, PeftConfig

METHODS = tuple(METHOD_HELP)  # the PEFT methods, with bat (miss in its block-wise mode) as an entry of its own
ALIASES = {alias: name for alias, (name, _) in PEFT_ALIASES.items() if alias not in METHOD_HELP}
ADAPTERS = ("lora", "pissa", "miss", "bat")
QUANT_HELP = {
    "none": "base weights stay bf16",
    "int8": "frozen Linear weights in 8 bits (bitsandbytes)",
    "nf4": "frozen Linear weights in 4-bit NormalFloat (QLoRA-style): least memory",
}


def method_parts(method: str) -> tuple[str, str]:
    """(preset method name, MiSS mode) for a wizard method: bat → (miss, bat); disha/bone → (miss, bone)."""
    name, mode = PEFT_ALIASES.get(method, (method, None))
    return name, mode or PeftConfig.mode  # no mode implied: the method's default (bone)
