"""`rwkv-tune inspect MODEL`: what is inside a model file, without typing n_layer/n_embd ever again."""

from __future__ import annotations

from pathlib import Path

import typer

from rwkv_tune.cli._common import console, print_json, user_errors


def inspect(
    model: Path = typer.Argument(..., help="An RWKV-5/6/7 model file (.pth or .safetensors), or an adapter: ours, "
                                 "an RWKV-PEFT rwkv-N.pth, or a Hugging Face peft folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show a model's detected architecture, size, dtype and the equivalent RWKV-PEFT flags (or what an adapter is)."""
    from rich.table import Table

    from rwkv_tune.spec import FAMILY_NAMES, detect

    with user_errors():
        adapter = _adapter_info(model)
        if adapter is None:
            spec = detect(model)
    if adapter is not None:
        _show_adapter(model, adapter, as_json)
        return
    file_size = model.stat().st_size
    if as_json:
        print_json({**spec.to_dict(), "path": str(model), "file_size": file_size, "peft_flags": spec.peft_flags()})
        return
    table = Table(title=f"{model.name}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    rows = [
        ("version", f"RWKV-{spec.version} ({spec.arch}, {FAMILY_NAMES[spec.version]})"),
        *([("variant", f"{spec.variant_name} ({spec.variant})")] if spec.variant else []),
        ("size", f"{spec.size_name}  ({spec.params:,} parameters)"),
        ("layers", str(spec.n_layer)),
        ("width (n_embd)", str(spec.n_embd)),
        ("heads", f"{spec.n_head} × {spec.head_size}"),
        ("vocab", f"{spec.vocab_size:,}"),
        ("ffn", str(spec.dim_ffn)),
    ]
    if spec.lora_dims:
        rows.append(("low-rank dims", "  ".join(f"{k}={v}" for k, v in spec.lora_dims.items())))
    if spec.version == 7:
        rows.append(("layer-0 v0/v1/v2", "present" if spec.layer0_v else "absent"))
    if spec.time_state:
        rows.append(("time_state", "present (state-tuned)"))
    rows += [
        ("dtype", spec.dtype),
        ("file size", _human_bytes(file_size)),
        ("RWKV-PEFT flags", spec.peft_flags()),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _adapter_info(path: Path) -> dict | None:
    """What the adapter at `path` is (None for a model file); torch is loaded only for files that may be one."""
    if path.suffix not in (".pth", ".safetensors", ".bin") and not path.is_dir():
        return None
    from rwkv_tune.peft.identify import describe_adapter

    return describe_adapter(path)


def _show_adapter(path: Path, info: dict, as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    table = Table(title=f"{path.name} (adapter)", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key in ("tool", "peft_type", "method", "mode", "r", "target_r", "alpha", "rslora", "scale", "patterns",
                "targets", "layers", "quant", "base_fingerprint", "tensors", "readable"):
        if key in info:
            value = info[key]
            if key == "base_fingerprint" and not value:
                value = "not recorded"
            table.add_row(key.replace("_", " "), ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    console.print(table)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
