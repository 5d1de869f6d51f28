"""rwkv-tune: fine-tune RWKV-5/6/7 language models.

The top-level names are imported lazily so that `import rwkv_tune` (and the CLI's `--help`)
never pays for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "detect", "load_model", "ModelSpec", "UserError"]

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.errors import UserError
    from rwkv_tune.model import load_model
    from rwkv_tune.spec import ModelSpec, detect

_LAZY = {
    "detect": ("rwkv_tune.spec", "detect"),
    "ModelSpec": ("rwkv_tune.spec", "ModelSpec"),
    "load_model": ("rwkv_tune.model", "load_model"),
    "UserError": ("rwkv_tune.errors", "UserError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rwkv_tune' has no attribute {name!r}")
