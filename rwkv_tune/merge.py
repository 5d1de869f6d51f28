"""Merge an adapter (ours, or an RWKV-PEFT checkpoint) into its base model file, verified, written atomically.

`merge(base, adapter, out)` folds the adapter in with the pure `peft.merge_iter` (no model is built
for the math), checks that the output has exactly the base's keys, order, shapes and dtypes and no
adapter keys, writes the file via temp + rename, reloads it and compares its logits on a probe
sequence with base + adapter run as in training (`peft.probe`), then writes `merge-report.json`
beside it. The tolerance is fp32 round-off plus exactly the logit change that storing the merged
weights in the output dtype causes (measured, not guessed), so a bf16 merge of a deep model passes
and a wrong merge fails. It never overwrites an input.

Quant-aware by default: an adapter trained on an int8/nf4/fp4 base (the quant is in its metadata) is
folded into dequant(quant(W)), the weights training saw; `quant="none"` forces the full-precision base.

Memory: the base is memory-mapped and streamed tensor by tensor. A tensor the adapter changes is
written back into the base's private copy-on-write mapping (the file itself is never modified), so
the model is held once, not twice; `.safetensors` output is streamed to disk; verification builds
one fp32 block at a time (`peft.probe`). Peak RSS stays near the base file size when the output
keeps the base's dtype (`benchmarks/bench_merge.py` measures it); `dtype=` another dtype adds the
converted copy.
"""

from __future__ import annotations

import json
import mmap
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.peft.adapter import check_fits, merge_iter
from rwkv_tune.peft.adapter_file import Adapter
from rwkv_tune.peft.fingerprint import check_fingerprint, fingerprint
from rwkv_tune.peft.rwkv_peft import load_any_adapter, read_rwkv_peft, strip_prefix

__all__ = ["MergeError", "MergeReport", "file_sha256", "load_any_adapter", "merge", "read_rwkv_peft"]

PROBE_TOKENS = 16
TOLERANCE = 1e-3  # × max(1, max |logit|) for fp32 math; storing in a lower precision adds its measured effect
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FORMATS = ("pth", "safetensors")
_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
Progress = Callable[[int, int, str], None]


class MergeError(UserError):
    """The merged model failed verification; nothing was written."""


@dataclass
class MergeReport:
    """What a merge read, wrote and checked (also written as merge-report.json)."""

    out: dict[str, Any]
    base: dict[str, Any]
    adapter: dict[str, Any]
    merged_into: str
    fingerprint_match: bool | None
    verification: dict[str, Any]
    seconds: float
    tool_version: str
    notes: list[str] = field(default_factory=list)
    quant: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    source: dict[str, Any] | None = None  # the run and step the adapter came from (run_merges.adapter_origin)
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 16 MiB chunks."""
    h = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _adapter_sha256(adapter: Any) -> str | None:
    """sha256 of the adapter file (of its weights file for a Hugging Face peft folder)."""
    if not isinstance(adapter, (str, Path)):
        return None
    from rwkv_tune.peft.hf_format import WEIGHT_NAMES

    path = Path(adapter)
    if path.is_dir():
        path = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
    return file_sha256(path) if path is not None else None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and b.samefile(a))
    except OSError:
        return False


def output_format(out: Path, fmt: str | None) -> str:
    """'pth' or 'safetensors': `fmt` if given (it must agree with a .pth/.safetensors suffix), else the suffix."""
    suffix = out.suffix.lstrip(".")
    if fmt is None:
        if suffix not in FORMATS:
            raise ConfigError(f"--out {out} must end in .pth or .safetensors (or pass --format pth|safetensors)",
                              f"Use {out.with_suffix('.pth').name}.")
        return suffix
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not one of {', '.join(FORMATS)}", "Use --format pth (the default).")
    if suffix in FORMATS and suffix != fmt:
        raise ConfigError(f"--format {fmt} but --out {out} ends in .{suffix}", f"Use --out {out.with_suffix('.' + fmt)}.")
    return fmt


def _check_paths(out: Path, inputs: dict[str, Any]) -> None:
    for what, p in inputs.items():
        if isinstance(p, (str, Path)) and _same_file(out, Path(p)):
            raise ConfigError(f"--out {out} is the {what} file; merge never overwrites an input",
                              "Choose a new output path, e.g. merged.pth.")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder", "Give a file path, e.g. merged.pth.")


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a .safetensors file tensor by tensor (no second in-memory copy of the model)."""
    header: dict[str, Any] = {}
    offset = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors.values():
            if t.numel():
                f.write(memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))


def _reload(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _check_layout(layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]], merged: Mapping[str, torch.Tensor],
                  dtype: torch.dtype | None) -> None:
    """The output's keys are the base's (plus time_state for state tuning), same order, shapes, dtypes."""
    order = [k for k in merged if not (k.endswith(".att.time_state") and k not in layout)]
    if order != list(layout):
        raise MergeError("the merged key set or order differs from the base's", "This is a bug; please report it.")
    for key, (shape, base_dtype) in layout.items():
        m = merged[key]
        want = dtype if dtype is not None and base_dtype.is_floating_point else base_dtype
        if tuple(m.shape) != shape or m.dtype != want:
            raise MergeError(f"merged '{key}' is {list(m.shape)} {m.dtype}, base is {list(shape)} {base_dtype}",
                             "This is a bug; please report it.")


def _choose_quant(ad: Adapter, quant: str | None) -> tuple[str, str, dict[str, Any], list[str]]:
    """(applied quant, what the merge folds into, report section, notes) from the adapter and `quant`."""
    from rwkv_tune.quant import require_bitsandbytes

    trained = ad.config.quant
    notes: list[str] = []
    if quant is None:
        applied, how = trained, "recorded in the adapter" if trained != "none" else "default"
    elif quant == "none":
        applied, how = "none", "--quant none"
    else:
        applied, how = quant, f"--quant {quant}"
        if ad.source != "rwkv-peft" and quant != trained:
            raise ConfigError(f"--quant {quant} but the adapter was trained with quant = {trained}",
                              f"Use --quant {trained}, or --quant none to merge into the full-precision base.")
        if ad.source == "rwkv-peft" and quant == "int8":
            raise ConfigError("--quant int8 cannot reproduce RWKV-PEFT's int8 (a bitsandbytes quantizer since removed)",
                              "Drop --quant to merge into the full-precision base.")
    if applied != "none":
        try:
            require_bitsandbytes(applied)
        except ConfigError as exc:
            if quant is not None:
                raise
            raise ConfigError(f"the adapter was trained on an {trained} base; merging into the weights it saw, "
                              f"dequant({trained}(W)), needs bitsandbytes ({exc.message})",
                              "pip install bitsandbytes, or pass --quant none to merge into the full-precision base."
                              ) from None
        merged_into = f"dequant({applied}(W)), the {applied} weights training saw"
        if quant is None:
            notes.append(f"the adapter was trained on an {applied} base, so it was merged into the dequantized "
                         f"{applied} weights it saw (--quant none merges into the full-precision base instead)")
    elif trained != "none":
        merged_into = "the original full-precision base weights"
        notes.append(f"the run trained on an {trained} base; merged into the full-precision weights instead "
                     f"(drop --quant none to merge into the {trained} weights training saw)")
    else:
        merged_into = "the base weights as stored"
    return applied, merged_into, {"trained": trained, "applied": applied, "how": how}, notes


def _merge_tensors(base_sd: dict[str, torch.Tensor], ad: Adapter, *, quant: str, dtype: torch.dtype | None,
                   in_place: bool, keep: Callable[[str], bool], progress: Progress | None,
                   total: int) -> dict[str, torch.Tensor]:
    """The merged dict, streamed; with `in_place`, changed tensors overwrite the base's own (private) storage."""
    shared = Counter(t.untyped_storage().data_ptr() for t in base_sd.values())
    merged: dict[str, torch.Tensor] = {}
    for i, (key, new) in enumerate(merge_iter(base_sd, ad, quant=quant, dtype=dtype)):
        old = base_sd.get(key)
        if (in_place and old is not None and new.data_ptr() != old.data_ptr() and new.dtype == old.dtype
                and new.shape == old.shape and old.is_contiguous() and shared[old.untyped_storage().data_ptr()] == 1
                and old.untyped_storage().nbytes() == old.numel() * old.element_size()):
            old.copy_(new)  # a copy-on-write page of the mapping: the base file is untouched
            new = old
        if keep(key):
            merged[key] = new
        if progress is not None:
            progress(i + 1, total, key)
    return merged


def _load_base(base: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict without wrapper prefixes, whether we own its storage and may write into it)."""
    from rwkv_tune.checkpoint import load_state_dict

    if not isinstance(base, (str, Path)):
        return {strip_prefix(k): v for k, v in base.items()}, False
    # torch maps .pth files MAP_PRIVATE unless told otherwise; only then is writing into them safe
    private = torch.serialization.get_default_mmap_options() == mmap.MAP_PRIVATE
    sd = {strip_prefix(k): v for k, v in load_state_dict(base).items()}
    if Path(base).suffix == ".safetensors":  # safetensors keeps no key order: use the official one
        from rwkv_tune.spec import detect

        official = [k for k in detect(sd).expected_shapes() if k in sd]
        sd = {k: sd[k] for k in official + [k for k in sd if k not in set(official)]}
    return sd, private


def _compare(probes: dict[str, torch.Tensor], got: torch.Tensor, out_dtype: torch.dtype) -> dict[str, Any]:
    """Merged-file logits vs base + adapter; the tolerance allows exactly what storing in `out_dtype` changes."""
    ref = probes["adapter"]
    diff = (ref - got).abs().max().item()
    rounding = (probes["rounded"] - probes["folded"]).abs().max().item()
    tol = TOLERANCE * max(1.0, ref.abs().max().item()) + rounding
    result = {"checked": True, "tokens": PROBE_TOKENS, "max_abs_diff": diff, "tolerance": tol,
              "fp32_merge_diff": (probes["folded"] - ref).abs().max().item(), "dtype_rounding": rounding,
              "dtype": str(out_dtype).removeprefix("torch.")}
    if not diff <= tol:
        raise MergeError(f"merged model's logits differ from base + adapter by {diff:.3g} (tolerance {tol:.3g}, "
                         f"of which {rounding:.3g} from storing {result['dtype']}); nothing was written",
                         "Report this with the adapter's method; --no-verify skips the check.")
    return result


def _return_freed_memory_early() -> None:
    """glibc only: hand freed blocks of 4 MiB and up straight back to the OS (a fixed mmap threshold).

    glibc's adaptive threshold otherwise keeps the merge's many short-lived per-tensor fp32 buffers
    in the heap, where freed memory still counts as resident; this keeps RSS near the live tensors.
    """
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where the OS does not say)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        return None


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}", "Use --dtype bf16.")
        return DTYPES[dtype]
    return dtype


def merge(base: str | Path | Mapping[str, torch.Tensor], adapter: Any, out_path: str | Path, *,
          dtype: torch.dtype | str | None = None, progress: Progress | None = None, alpha: float | None = None,
          r: int | None = None, pissa_init: Any = None, quant: str | None = None, force: bool = False,
          verify: bool | None = None, state_only: bool = False, fmt: str | None = None) -> MergeReport:
    """Merge `adapter` into `base`, write `out_path` (+ merge-report.json beside it) and return the report.

    quant None: the adapter's recorded quant (dequant(quant(W)) for a quantized run); "none": the
    full-precision base; int8/nf4/fp4: that quantization (must match ours; RWKV-PEFT files record none).
    fmt None: from the suffix of `out_path`. verify None or True: compare logits (False skips).
    """
    from rwkv_tune import __version__
    from rwkv_tune.checkpoint import atomic_path
    from rwkv_tune.peft.probe import probe_logits
    from rwkv_tune.run_merges import adapter_origin, merge_notice
    from rwkv_tune.spec import detect

    t0 = time.time()
    _return_freed_memory_early()
    out = Path(out_path)
    kind = output_format(out, fmt)
    _check_paths(out, {"base": base, "adapter": adapter, "PiSSA init": pissa_init})
    dtype = _dtype(dtype)
    base_sd, owned = _load_base(base)
    spec = detect(base_sd)
    ad = load_any_adapter(adapter, alpha=alpha, r=r, pissa_init=pissa_init)
    notes = list(ad.notes)
    base_fp = fingerprint(base_sd)
    match = check_fingerprint(base_fp, ad, force=force)
    if match is False:
        notes.append("base fingerprint differs from the adapter's recorded base (merged anyway: --force)")
    applied, merged_into, quant_info, quant_notes = _choose_quant(ad, quant)
    notes += quant_notes
    trained_q = ad.config.quant
    ad = replace(ad, config=replace(ad.config, quant=applied))
    check_fits(base_sd, ad)
    n_new = spec.n_layer if any(k.endswith(".att.time_state") and k not in base_sd for k in ad.tensors) else 0
    if state_only and not n_new and ad.config.name != "state":
        raise ConfigError(f"--state-only needs a state-tuning adapter, not method {ad.config.name}",
                          "Drop --state-only.")
    out_dtype = dtype or getattr(torch, spec.dtype)
    verification: dict[str, Any] = {"checked": False, "skipped": "disabled (--no-verify)"}
    probes = idx = None
    if state_only:
        verification = {"checked": False, "skipped": "state only (no model to compare)"}
    elif verify is not False:  # base + adapter logits, taken before the merge writes into the base's mapping
        idx = torch.randint(0, spec.vocab_size, (1, PROBE_TOKENS), generator=torch.Generator().manual_seed(0))
        probes = probe_logits(base_sd, idx, adapter=ad, quant=applied, dtype=dtype)
    layout = {k: (tuple(t.shape), t.dtype) for k, t in base_sd.items()}
    merged = _merge_tensors(base_sd, ad, quant=applied, dtype=dtype, in_place=owned and not state_only,
                            keep=(lambda k: k.endswith(".att.time_state")) if state_only else (lambda k: True),
                            progress=progress, total=len(base_sd) + n_new)
    if not state_only:
        _check_layout(layout, merged, dtype)
    keys = list(merged)
    with atomic_path(out) as tmp:
        if kind == "safetensors":
            save_safetensors(merged, tmp)
        else:
            torch.save(merged, tmp)
        merged.clear()
        base_sd.clear()  # drops our mapping of the base before the output is mapped for checking
        reloaded = _reload(tmp, kind)
        # safetensors stores keys sorted, so only a .pth keeps the base's key order
        if (list(reloaded) if kind == "pth" else sorted(reloaded)) != (keys if kind == "pth" else sorted(keys)):
            raise MergeError(f"re-reading {out.name} gave different keys than were written", "Check the disk.")
        if probes is not None:
            verification = _compare(probes, probe_logits(reloaded, idx)["model"], out_dtype)
        del reloaded
    report = MergeReport(
        out={"path": str(out), "sha256": file_sha256(out), "bytes": out.stat().st_size, "tensors": len(keys),
             "dtype": str(out_dtype).removeprefix("torch."), "format": kind, "state_only": state_only},
        base={"path": str(base) if isinstance(base, (str, Path)) else None,
              "sha256": file_sha256(base) if isinstance(base, (str, Path)) else None,
              "fingerprint": base_fp, "spec": spec.to_dict()},
        adapter={"path": str(adapter) if isinstance(adapter, (str, Path)) else None,
                 "sha256": _adapter_sha256(adapter),
                 "pissa_init": {"path": str(pissa_init), "sha256": file_sha256(pissa_init)}
                 if isinstance(pissa_init, (str, Path)) else None,
                 "format": ad.source, "method": ad.config.name, "config": ad.config.to_dict(),
                 "trained_quant": trained_q, "base_fingerprint": ad.base_fingerprint,
                 "tool_version": ad.tool_version},
        merged_into=merged_into, fingerprint_match=match, verification=verification,
        seconds=round(time.time() - t0, 3), tool_version=__version__, notes=notes, quant=quant_info,
        peak_rss_mb=_peak_rss_mb(), source=adapter_origin(adapter) if isinstance(adapter, (str, Path)) else None)
    notice = merge_notice(out, report.to_dict())
    if notice:
        report.notes.append(notice)
    report_path = out.with_name("merge-report.json")
    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    report.report_path = str(report_path)
    return report
