"""The menu's methods and quantisations, and how a menu name maps to the preset's method name and MiSS mode.

The methods, their one-line descriptions and their aliases come from `rwkv_tune.peft` (torch-free at import);
the quantisations and their help from the preset schema.
"""

from __future__ import annotations

from rwkv_tune.peft import ALIASES as PEFT_ALIASES
from rwkv_tune.peft import METHOD_HELP, PeftConfig
from rwkv_tune.preset.schema import QUANT_HELP

METHODS = tuple(METHOD_HELP)  # the PEFT methods, with bat (miss in its block-wise mode) as an entry of its own
ALIASES = {alias: name for alias, (name, _) in PEFT_ALIASES.items() if alias not in METHOD_HELP}
ADAPTERS = ("lora", "pissa", "miss", "bat")
__all__ = ["ADAPTERS", "ALIASES", "METHODS", "METHOD_HELP", "QUANT_HELP", "method_parts"]


def method_parts(method: str) -> tuple[str, str]:
    """(preset method name, MiSS mode) for a wizard method: bat → (miss, bat); disha/bone → (miss, bone)."""
    name, mode = PEFT_ALIASES.get(method, (method, None))
    return name, mode or PeftConfig.mode  # no mode implied: the method's default (bone)
