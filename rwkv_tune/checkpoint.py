"""Safe model-file I/O: load untrusted .pth/.safetensors without running code, write atomically.

`.pth` files are read with `torch.load(weights_only=True, mmap=True)`, so a pickle that tries to
run code is refused before anything runs, and large files are not copied into memory.
Everything we write goes to a temp file in the same folder, is fsynced, then renamed.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rwkv_tune.errors import ModelFileError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist", "Check the path (rwkv-tune inspect PATH).")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file", "Pass the .pth file inside it.")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes)", "Re-download or re-save it.")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, dict):
        for wrapper in ("state_dict", "module", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise ModelFileError(f"{path} holds a {type(obj).__name__}, not a dict of tensors",
                             "Pass a model saved as a plain {name: tensor} state dict.")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{path} is not a dict of tensors: entry '{bad[0]}' is a {type(obj[bad[0]]).__name__}",
                             "Pass a plain RWKV state dict (not one converted by the `rwkv` pip package).")
    return obj


def load_state_dict(path: str | Path, *, mmap: bool = True) -> dict[str, torch.Tensor]:
    """Load a `.pth` (weights only) or `.safetensors` file into a `{name: tensor}` dict on CPU."""
    import torch

    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path} is not a readable safetensors file ({_short(exc)})",
                                 "The file may be truncated; re-download it.") from None
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":
        raise ModelFileError(f"{path} is not a PyTorch or safetensors file (unknown format)",
                             "Pass an RWKV .pth or .safetensors model file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and magic[:2] == b"PK")
    except Exception as exc:  # torch raises many types for bad files; all mean "cannot read"
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text or "Unsupported operand" in text:
            raise ModelFileError(f"{path} contains Python objects or code, not just tensors; refused for safety "
                                 "(nothing in it was run)", "Only load model files from sources you trust, as plain "
                                 "state dicts.") from None
        if "zip archive" in text or "central directory" in text or "EOF" in text or "truncated" in text:
            raise ModelFileError(f"{path} is truncated or corrupt (incomplete archive)",
                                 "Re-download or re-save the file.") from None
        raise ModelFileError(f"{path} is not a readable PyTorch file ({_short(exc)})",
                             "The file may be truncated or not a model; re-download it.") from None
    return _unwrap(obj, path)


def read_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """`{key: shape}` and `{key: dtype}` of a model file; safetensors headers are read without torch."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        header = _safetensors_header(path)
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        dtypes = {k: _SAFETENSORS_DTYPES.get(v["dtype"], v["dtype"].lower()) for k, v in header.items()
                  if k != "__metadata__"}
        return shapes, dtypes
    sd = load_state_dict(path)
    return ({k: tuple(v.shape) for k, v in sd.items()}, {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()})


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelFileError(f"{path} is truncated (no safetensors header)", "Re-download it.")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ModelFileError(f"{path} has an implausible safetensors header size {n}", "Re-download it.")
        try:
            return json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{path} has a corrupt safetensors header", "Re-download it.") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success fsync and rename it into place, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file gets the user's umask
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write a flat `{name: tensor}` file atomically: `.safetensors` (with metadata) or `.pth`."""
    import torch

    path = Path(path)
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save(tensors, tmp)
    return path


def fingerprint(path: str | Path) -> dict[str, Any]:
    """A cheap identity for a large file (or a dataset folder / binidx prefix): sizes + sha256 of head and tail."""
    import hashlib

    path = Path(path)
    if path.is_dir():
        targets = sorted(p for p in path.rglob("*") if p.is_file())[:200]
    else:
        targets = [path] if path.exists() else sorted(path.parent.glob(path.name + ".*"))
    if not targets:
        return {"path": str(path), "missing": True}
    digest = hashlib.sha256()
    size = 0
    for target in targets:
        size += target.stat().st_size
        digest.update(str(target.relative_to(path) if path.is_dir() else target.name).encode())
        with open(target, "rb") as f:
            digest.update(f.read(1 << 20))
            if target.stat().st_size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                digest.update(f.read(1 << 20))
    return {"path": str(path), "size": size, "sha256_head_tail": digest.hexdigest()[:32]}
