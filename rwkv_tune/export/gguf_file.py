"""Write an RWKV-6/7 model as a GGUF file that llama.cpp runs, with the `gguf` library (llama.cpp's own writer).

`export_gguf(model, out)` reads the model memory-mapped, plans every GGUF tensor from the shapes alone
(`gguf_layout`), writes the header, metadata (architecture + the World tokenizer, `gguf_vocab`) and
tensor table, then builds, converts and writes one tensor at a time: peak memory stays near one tensor
plus its converted copy. With `adapter=`, the adapter is first merged into the model by the library
merge (verified, as `rwkv-tune merge` does) in a temporary folder beside the output. The file goes to
a temp file, is fsynced and renamed, and gets the mode the user's umask gives a new file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.export.gguf_layout import GGUFTensor, arch_metadata, arch_name, tensor_plan

DTYPES = ("f32", "f16", "bf16", "q8_0")
Progress = Callable[[int, int, str], None]
_ADAPTER_SUFFIXES = ("lora_A", "lora_B", "lora_A.weight", "lora_B.weight", ".bone", ".miss", ".disha")


@dataclass
class GGUFReport:
    """What an export wrote."""

    path: str
    bytes: int
    dtype: str
    arch: str
    tensors: int
    tensor_types: dict[str, int]
    source: str
    spec: dict[str, Any]
    seconds: float
    run_command: str
    merged_from: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)


def _types(dtype: str):
    import gguf

    q = gguf.GGMLQuantizationType
    ftypes = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    qtypes = {"f32": q.F32, "f16": q.F16, "bf16": q.BF16, "q8_0": q.Q8_0}
    return ftypes[dtype], qtypes[dtype]


def _tensor_type(t: GGUFTensor, shape: tuple[int, ...], want):
    """llama.cpp's choice for one tensor: f32 where it needs it, else `want` (f16 where a row won't quantize)."""
    import gguf

    q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or t.keep_f32:
        return q.F32
    if want == q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0]:
        return q.F16
    return want


def _nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, qtype)))


def _encode(data: torch.Tensor, qtype) -> np.ndarray:
    """fp32 tensor → the bytes GGUF stores for `qtype` (bf16 via torch: numpy has no bfloat16)."""
    import gguf

    q = gguf.GGMLQuantizationType
    if qtype == q.BF16:
        return data.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    return gguf.quants.quantize(data.contiguous().numpy(), qtype)


def _new_file_mode() -> int:
    """The permission bits a new file gets under the current umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output(out: Path, inputs: list[Path]) -> None:
    """--out must be a new .gguf file path, never an input."""
    if out.suffix != ".gguf":
        raise ConfigError(f"--out {out} must end in .gguf", f"Use --out {out.with_suffix('.gguf')}.")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", "Give a file path, e.g. model.gguf.")
    for p in inputs:
        if out.exists() and p.exists() and out.samefile(p):
            raise ConfigError(f"--out {out} is an input file; export never overwrites an input",
                              "Choose a new output path.")


def _load_model(path: Path) -> dict[str, torch.Tensor]:
    """The model's state dict (memory-mapped); an adapter or a non-model is refused with the reason."""
    from rwkv_tune.checkpoint import load_state_dict
    from rwkv_tune.spec import strip_wrapper_prefix

    sd = {strip_wrapper_prefix(k): v for k, v in load_state_dict(path).items()}
    if "emb.weight" not in sd and any(k.endswith(_ADAPTER_SUFFIXES) or k.endswith(".time_state") for k in sd):
        raise UserError(f"{path} is an adapter, not a model; GGUF export needs a whole model",
                        f"Pass the run directory (rwkv-tune export RUN_DIR merges on the way), or merge first: "
                        f"rwkv-tune merge --base BASE.pth --adapter {path} --out merged.pth.")
    return sd


def export_gguf(model: str | Path, out: str | Path, *, dtype: str = "f16", adapter: str | Path | None = None,
                progress: Progress | None = None, merge_options: dict[str, Any] | None = None) -> GGUFReport:
    """Write `model` (merged with `adapter` first, if given) to `out` as GGUF for llama.cpp; return the report."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}", "Use --dtype f16 (the default).")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ConfigError("GGUF export needs the `gguf` package (llama.cpp's GGUF writer), which is not installed",
                          "pip install gguf (or pip install 'rwkv-tune[gguf]').") from None
    out, model = Path(out), Path(model)
    check_output(out, [model] + ([Path(adapter)] if adapter is not None else []))
    if adapter is None:
        return _export_file(model, out, dtype, progress)
    from rwkv_tune.export.gguf_vocab import world_vocab
    from rwkv_tune.merge import merge
    from rwkv_tune.spec import detect

    spec = detect(model)  # refuse what cannot be exported before spending a merge on it
    arch_name(spec)
    world_vocab(spec.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rwkv-tune-export-", dir=out.parent) as tmp:
        merged = Path(tmp) / "merged.pth"
        merge_report = merge(model, adapter, merged, progress=progress, **(merge_options or {}))
        report = _export_file(merged, out, dtype, progress)
    v = merge_report.verification
    report.source = f"{model} + {adapter}"
    report.merged_from = {"base": str(model), "adapter": str(adapter), "method": merge_report.adapter["method"],
                          "verified": bool(v.get("checked")), "max_abs_diff": v.get("max_abs_diff")}
    report.notes = list(merge_report.notes) + report.notes
    return report


def _export_file(path: Path, out: Path, dtype: str, progress: Progress | None) -> GGUFReport:
    import gguf

    from rwkv_tune.checkpoint import atomic_path
    from rwkv_tune.export.gguf_vocab import world_vocab
    from rwkv_tune.spec import detect

    t0 = time.time()
    sd = _load_model(path)
    spec = detect(sd)
    arch = arch_name(spec)
    plan = tensor_plan(spec, list(sd))
    vocab = world_vocab(spec.vocab_size)
    file_type, want = _types(dtype)
    source_shapes = {k: tuple(v.shape) for k, v in sd.items()}
    shapes = [t.shape(source_shapes) for t in plan]
    qtypes = [_tensor_type(t, s, want) for t, s in zip(plan, shapes, strict=True)]

    writer = gguf.GGUFWriter(None, arch)
    writer.add_name(out.stem)
    writer.add_type(gguf.GGUFType.MODEL)
    for method, value in arch_metadata(spec).items():
        getattr(writer, method)(value)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model(vocab.model)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_eot_token_id(vocab.eot_id)
    writer.add_chat_template(vocab.chat_template)
    for t, shape, qtype in zip(plan, shapes, qtypes, strict=True):
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), _nbytes(shape, qtype), raw_dtype=qtype)

    with atomic_path(out) as tmp:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (t, qtype) in enumerate(zip(plan, qtypes, strict=True)):
            data = t.build(*(sd[k].float() for k in t.sources))
            writer.write_tensor_data(_encode(data, qtype))
            del data
            if progress is not None:
                progress(i + 1, len(plan), t.name)
        writer.close()
        sd.clear()
        os.chmod(tmp, _new_file_mode())

    counts: dict[str, int] = {}
    for qtype in qtypes:
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    return GGUFReport(
        path=str(out), bytes=out.stat().st_size, dtype=dtype, arch=arch, tensors=len(plan), tensor_types=counts,
        source=str(path), spec=spec.to_dict(), seconds=round(time.time() - t0, 3),
        run_command=f'llama-cli -m {out} -p "User: Hello\\n\\nAssistant:" -n 64')
