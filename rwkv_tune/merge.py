"""Merge an adapter (ours, or an RWKV-PEFT checkpoint) into its base model file, verified, written atomically.

`merge(base, adapter, out)` folds the adapter in with the pure `peft.merge_iter` (no model is built
for the math), checks that the output has exactly the base's keys, order, shapes and dtypes and no
adapter keys, optionally compares merged logits with base+adapter logits on a probe sequence, writes
the file via temp + rename and `merge-report.json` beside it. By default the adapter is folded into
the original full-precision base weights, even for a quantized run (`quant=` merges into
dequant(quant(W)) instead, what training saw). It never overwrites an input.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import ConfigError, ModelFileError, UserError
from rwkv_tune.peft.adapter import Adapter, check_fingerprint, fingerprint, merge_iter, read_adapter
from rwkv_tune.peft.config import PeftConfig

VERIFY_MAX_PARAMS = 500_000_000  # auto-verify logits only below this (it builds two fp32 models)
PROBE_TOKENS = 16
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}  # × max(1, max |logit|)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_PREFIXES = ("_forward_module.", "module.", "model.")
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
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_rwkv_peft(tensors: Mapping[str, torch.Tensor], *, source: str = "adapter", alpha: float | None = None,
                   r: int | None = None, pissa_init: Mapping[str, torch.Tensor] | None = None) -> Adapter:
    """An RWKV-PEFT checkpoint (rwkv-N.pth) as an Adapter; the kind comes from its keys, alpha from the caller.

    `*.lora_A/B` → LoRA (needs alpha; RWKV-PEFT does not save it) or PiSSA (with init_pissa.pth);
    `*.disha` → MiSS bone (2-D) or bat (3-D, indexed by input block); `*.time_state` → state;
    any other key must be a base tensor (train_parts) and replaces it.
    """
    sd = {_strip(k): v for k, v in tensors.items()}
    lora = [k for k in sd if k.endswith((".lora_A", ".lora_B"))]
    disha = [k for k in sd if k.endswith(".disha")]
    if lora and disha:
        raise ModelFileError(f"{source} mixes LoRA ('{lora[0]}') and DiSHA ('{disha[0]}') keys",
                             "Pass one adapter at a time.")
    if alpha is not None and not lora:
        raise ConfigError(f"--alpha {alpha} applies only to LoRA checkpoints, and {source} is not one",
                          "Drop --alpha.")
    notes = [f"read {source} as an RWKV-PEFT checkpoint (no metadata: base fingerprint not checked)"]
    extra: dict[str, Any] = {}
    if lora:
        ranks = {tuple(sd[k].shape)[0] for k in lora if k.endswith(".lora_A")}
        if len(ranks) != 1:
            raise ModelFileError(f"{source} has lora_A of different ranks {sorted(ranks)}", "Is the file corrupt?")
        rank = ranks.pop()
        if r is not None and r != rank:
            raise ConfigError(f"--r {r} does not match {source}, whose lora_A have rank {rank}", f"Use --r {rank}.")
        if pissa_init is not None:
            if alpha is not None:
                raise ConfigError(f"--alpha {alpha} does not apply to PiSSA (its scale is 1)", "Drop --alpha.")
            init = {_strip(k): v for k, v in pissa_init.items()}
            bad = [k for k in init if not k.endswith((".init_lora_A", ".init_lora_B"))]
            if bad:
                raise ModelFileError(f"the PiSSA init file has an unexpected key '{bad[0]}'",
                                     "Pass the init_pissa.pth written by the same RWKV-PEFT run.")
            missing = [k for k in lora if k.replace(".lora_", ".init_lora_") not in init]
            if missing:
                raise ModelFileError(f"the PiSSA init file has no '{missing[0].replace('.lora_', '.init_lora_')}'",
                                     "Pass the init_pissa.pth written by the same RWKV-PEFT run.")
            sd.update(init)
            name, cfg_extra = "pissa", {}
        else:
            if alpha is None:
                raise ConfigError(f"{source} is an RWKV-PEFT LoRA checkpoint, which does not record lora_alpha",
                                  "Pass --alpha with the --lora_alpha you trained with (RWKV-PEFT's training default "
                                  "is 32; its merge script assumed 16), or --pissa-init init_pissa.pth for PiSSA.")
            name, cfg_extra = "lora", {"alpha": float(alpha)}
        modules = [k.rpartition(".")[0] for k in lora]
    elif disha:
        ndims = {sd[k].ndim for k in disha}
        if ndims - {2, 3} or len(ndims) != 1:
            raise ModelFileError(f"{source} has DiSHA tensors of rank {sorted(ndims)}", "Expected all 2-D or all 3-D.")
        mode = "bone" if ndims == {2} else "bat"
        rank = sd[disha[0]].shape[0] if mode == "bone" else sd[disha[0]].shape[1]
        if mode == "bat":
            extra = {"bat_index": "in"}  # RWKV-PEFT's G1 bat: one r×r block per input block
        for k in disha:
            sd[k[: -len("disha")] + "miss"] = sd.pop(k)
        name, cfg_extra = "miss", {"mode": mode}
        modules = [k.rpartition(".")[0] for k in disha]
    else:
        name = "state" if any(k.endswith(".att.time_state") for k in sd) else "full"
        rank, cfg_extra, modules = 1, {}, []
    raw: dict[str, Any] = {"name": name, "r": rank, **cfg_extra, "train_parts": [], "extra": extra}
    if modules:
        raw["targets"] = sorted({".".join(m.split(".")[2:4]) for m in modules})
        raw["layers"] = sorted({int(m.split(".")[1]) for m in modules})
    try:
        config = PeftConfig.from_dict(raw)
    except ConfigError as exc:
        raise ModelFileError(f"{source} does not look like an RWKV-PEFT adapter ({exc.message})",
                             "Check the file.") from None
    return Adapter(sd, config, source="rwkv-peft", notes=notes)


def load_any_adapter(adapter: Any, *, alpha: float | None = None, r: int | None = None,
                     pissa_init: Any = None) -> Adapter:
    """Ours (safetensors with metadata, or an Adapter) or RWKV-PEFT's (.pth / plain tensors + flags)."""
    from rwkv_tune.checkpoint import load_state_dict

    init = load_state_dict(pissa_init) if isinstance(pissa_init, (str, Path)) else pissa_init
    if isinstance(adapter, Adapter):
        ours = adapter
    elif isinstance(adapter, (str, Path)) and Path(adapter).suffix == ".safetensors" and _has_our_metadata(adapter):
        ours = read_adapter(adapter)
    else:
        tensors = load_state_dict(adapter) if isinstance(adapter, (str, Path)) else dict(adapter)
        return read_rwkv_peft(tensors, source=str(adapter) if isinstance(adapter, (str, Path)) else "adapter",
                              alpha=alpha, r=r, pissa_init=init)
    cfg = ours.config
    if alpha is not None and (cfg.name != "lora" or float(alpha) != cfg.alpha):
        recorded = f"alpha {cfg.alpha:g}" if cfg.name == "lora" else f"method {cfg.name} (no alpha)"
        raise ConfigError(f"--alpha {alpha:g} conflicts with the adapter's recorded {recorded}",
                          "Drop --alpha: it is only for RWKV-PEFT files, which do not record it.")
    if r is not None and r != cfg.r:
        raise ConfigError(f"--r {r} conflicts with the adapter's recorded r = {cfg.r}", "Drop --r.")
    if init is not None and cfg.name != "pissa":
        raise ConfigError(f"--pissa-init was given, but the adapter is method {cfg.name}", "Drop --pissa-init.")
    return ours


def _has_our_metadata(path: str | Path) -> bool:
    from rwkv_tune.checkpoint import _safetensors_header

    meta = _safetensors_header(Path(path)).get("__metadata__") or {}
    return meta.get("format") == "rwkv-tune-adapter"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 16 MiB chunks."""
    h = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_paths(out: Path, inputs: dict[str, Any]) -> None:
    if out.suffix not in (".pth", ".safetensors"):
        raise ConfigError(f"--out {out} must end in .pth or .safetensors", f"Use {out.with_suffix('.pth').name}.")
    for what, p in inputs.items():
        if isinstance(p, (str, Path)) and _same_file(out, Path(p)):
            raise ConfigError(f"--out {out} is the {what} file; merge never overwrites an input",
                              "Choose a new output path, e.g. merged.pth.")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder", "Give a file path, e.g. merged.pth.")


def _write(sd: dict[str, torch.Tensor], path: Path, fmt: str) -> None:
    if fmt == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)


def _reload(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _check_layout(base: Mapping[str, torch.Tensor], merged: Mapping[str, torch.Tensor],
                  dtype: torch.dtype | None) -> None:
    """The output's keys are the base's (plus time_state for state tuning), same order, shapes, dtypes."""
    order = [k for k in merged if not (k.endswith(".att.time_state") and k not in base)]
    if order != list(base):
        raise MergeError("the merged key set or order differs from the base's", "This is a bug; please report it.")
    for key, t in base.items():
        m = merged[key]
        want = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if m.shape != t.shape or m.dtype != want:
            raise MergeError(f"merged '{key}' is {list(m.shape)} {m.dtype}, base is {list(t.shape)} {t.dtype}",
                             "This is a bug; please report it.")


def _verify(base: Mapping[str, torch.Tensor], adapter: Adapter, merged: Mapping[str, torch.Tensor],
            out_dtype: torch.dtype) -> dict[str, Any]:
    """Logits of the merged model vs base + adapter (fp32) on a fixed random probe sequence."""
    from rwkv_tune.model import load_model
    from rwkv_tune.peft.base import load_adapter

    ref = load_model(dict(base), dtype=torch.float32, device="cpu").eval()
    load_adapter(ref, adapter, force=True)
    ref.eval()
    got = load_model(dict(merged), dtype=torch.float32, device="cpu").eval()
    vocab = ref.spec.vocab_size
    idx = torch.randint(0, vocab, (1, PROBE_TOKENS), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(idx), got(idx)
    diff = (a - b).abs().max().item()
    tol = TOLERANCE.get(out_dtype, 5e-2) * max(1.0, a.abs().max().item())
    result = {"checked": True, "tokens": PROBE_TOKENS, "max_abs_diff": diff, "tolerance": tol}
    if not diff <= tol:
        raise MergeError(f"merged model's logits differ from base + adapter by {diff:.3g} (tolerance {tol:.3g}); "
                         "nothing was written", "Report this with the adapter's method; --no-verify skips the check.")
    return result


def merge(base: str | Path | Mapping[str, torch.Tensor], adapter: Any, out_path: str | Path, *,
          dtype: torch.dtype | str | None = None, progress: Progress | None = None, alpha: float | None = None,
          r: int | None = None, pissa_init: Any = None, quant: str | None = None, force: bool = False,
          verify: bool | None = None, state_only: bool = False) -> MergeReport:
    """Merge `adapter` into `base`, write `out_path` (+ merge-report.json beside it) and return the report."""
    from rwkv_tune import __version__
    from rwkv_tune.checkpoint import atomic_path, load_state_dict
    from rwkv_tune.spec import detect

    t0 = time.time()
    out = Path(out_path)
    _check_paths(out, {"base": base, "adapter": adapter, "PiSSA init": pissa_init})
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}", "Use --dtype bf16.")
        dtype = DTYPES[dtype]
    raw = load_state_dict(base) if isinstance(base, (str, Path)) else base
    base_sd = {_strip(k): v for k, v in raw.items()}
    spec = detect(base_sd)
    ad = load_any_adapter(adapter, alpha=alpha, r=r, pissa_init=pissa_init)
    notes = list(ad.notes)
    base_fp = fingerprint(base_sd)
    match = check_fingerprint(base_fp, ad, force=force)
    if match is False:
        notes.append("base fingerprint differs from the adapter's recorded base (merged anyway: --force)")
    trained_q = ad.config.quant
    quant = None if quant in (None, "none") else quant
    if quant is not None:
        from rwkv_tune.quant import require_bitsandbytes

        require_bitsandbytes(quant)
        if ad.source != "rwkv-peft" and quant != trained_q:
            raise ConfigError(f"--quant {quant} but the adapter was trained with quant = {trained_q}",
                              f"Use --quant {trained_q}, or drop --quant to merge into the full-precision base.")
        if ad.source == "rwkv-peft" and quant == "int8":
            raise ConfigError("--quant int8 cannot reproduce RWKV-PEFT's int8 (a bitsandbytes quantizer since removed)",
                              "Drop --quant to merge into the full-precision base.")
        merged_into = f"dequant({quant}(W)): the weights training saw"
    else:
        merged_into = "the original full-precision base weights"
        if trained_q != "none":
            notes.append(f"the run trained on a {trained_q} base; merged into the full-precision weights instead "
                         f"(--quant {trained_q} merges into the {trained_q} weights training saw)")
    ad = replace(ad, config=replace(ad.config, quant=quant or "none"))

    n_new = spec.n_layer if any(k.endswith(".att.time_state") and k not in base_sd for k in ad.tensors) else 0
    total = len(base_sd) + n_new
    merged: dict[str, torch.Tensor] = {}
    for i, (key, t) in enumerate(merge_iter(base_sd, ad, quant=quant, dtype=dtype)):
        merged[key] = t
        if progress is not None:
            progress(i + 1, total, key)
    _check_layout(base_sd, merged, dtype)
    if state_only:
        if not n_new and ad.config.name != "state":
            raise ConfigError(f"--state-only needs a state-tuning adapter, not method {ad.config.name}",
                              "Drop --state-only.")
        merged = {k: v for k, v in merged.items() if k.endswith(".att.time_state")}
    out_dtype = dtype or getattr(torch, spec.dtype)
    do_verify = verify if verify is not None else spec.params <= VERIFY_MAX_PARAMS
    verification: dict[str, Any] = {"checked": False, "skipped": "disabled (--no-verify)" if verify is False else
                                    f"model has {spec.params:,} parameters (> {VERIFY_MAX_PARAMS:,}); --verify forces it"}
    fmt = ".safetensors" if out.suffix == ".safetensors" else ".pth"
    with atomic_path(out) as tmp:
        _write(merged, tmp, fmt)
        reloaded = _reload(tmp, fmt)
        # safetensors stores keys sorted, so only a .pth keeps the base's key order
        if (list(reloaded) if fmt == ".pth" else sorted(reloaded)) != (list(merged) if fmt == ".pth" else sorted(merged)):
            raise MergeError(f"re-reading {out.name} gave different keys than were written", "Check the disk.")
        if state_only:
            verification = {"checked": False, "skipped": "state only (no model to compare)"}
        elif do_verify:
            verification = _verify(base_sd, ad, reloaded, out_dtype)
        del reloaded
    report = MergeReport(
        out={"path": str(out), "sha256": file_sha256(out), "bytes": out.stat().st_size, "tensors": len(merged),
             "dtype": str(out_dtype).removeprefix("torch."), "state_only": state_only},
        base={"path": str(base) if isinstance(base, (str, Path)) else None,
              "sha256": file_sha256(base) if isinstance(base, (str, Path)) else None,
              "fingerprint": base_fp, "spec": spec.to_dict()},
        adapter={"path": str(adapter) if isinstance(adapter, (str, Path)) else None,
                 "sha256": file_sha256(adapter) if isinstance(adapter, (str, Path)) else None,
                 "format": ad.source, "method": ad.config.name, "config": ad.config.to_dict(),
                 "trained_quant": trained_q, "base_fingerprint": ad.base_fingerprint,
                 "tool_version": ad.tool_version},
        merged_into=merged_into, fingerprint_match=match, verification=verification,
        seconds=round(time.time() - t0, 3), tool_version=__version__, notes=notes)
    report_path = out.with_name("merge-report.json")
    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    report.report_path = str(report_path)
    return report
