"""Which adapter each `output.export` format can hold, checked when a preset is read (torch-free, imports no peft).

`rwkv-peft` (RWKV-PEFT's G1 rwkv-N.pth): every method except MiSS bat/mini (its bat files index blocks
by input, ours by output; it has no mini). `peft` (a Hugging Face peft folder): lora, pissa and miss
with no dense train_parts and no quantized base (peft has no place for either). `gguf` (llama.cpp): every
method but state (llama.cpp has nowhere to load a trained state).
"""

from __future__ import annotations

from typing import Any

from rwkv_tune.errors import ConfigError


def check_export(export: str | None, method: str, mode: str = "bone", train_parts: Any = (),
                 quant: str = "none") -> None:
    """Refuse, when the preset is read, an `output.export` the method cannot be written in."""
    from rwkv_tune.preset.schema import CANONICAL_METHOD

    name = CANONICAL_METHOD.get(str(method).lower(), str(method).lower())
    mode = "bat" if str(method).lower() == "bat" else mode
    if export == "rwkv-peft" and name == "miss" and mode != "bone":
        raise ConfigError(f"output.export = rwkv-peft cannot hold MiSS mode {mode} (RWKV-PEFT's files index bat "
                          "blocks by input, ours by output, and it has no mini)",
                          "Use output.export: peft (Hugging Face peft reads bat and mini), mode: bone, or no export.")
    if export == "gguf" and name == "state":
        raise ConfigError("output.export = gguf cannot hold method state: llama.cpp has no place for a trained "
                          "initial state", "Use output.export: rwkv-peft (RWKV Runner and Ai00 load the state), or "
                          "an adapter method (lora, pissa, miss).")
    if export != "peft":
        return
    if name in ("state", "full"):
        raise ConfigError(f"output.export = peft cannot hold method {name}: Hugging Face peft folders hold adapter "
                          "weights only", "Use output.export: rwkv-peft, or a lora/pissa/miss method.")
    parts = list(train_parts or [])
    if parts:
        raise ConfigError(f"output.export = peft cannot hold method.train_parts = {parts}: Hugging Face peft has no "
                          "place for dense RWKV tensors (time_*, ln)",
                          "Set method.train_parts: [] to export to peft, or use output.export: rwkv-peft.")
    if quant != "none":
        raise ConfigError(f"output.export = peft cannot record quant = {quant}: peft would merge into the "
                          "full-precision weights, not the quantized ones the adapter trained on",
                          "Use quant: none, or merge with `rwkv-tune merge` (it follows the recorded quant).")
