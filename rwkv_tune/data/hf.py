"""Hugging Face `datasets` as a document source (optional extra `hf`): hub ids, save_to_disk folders, files.

`data: {type: sft, path: meta-math/MetaMathQA, fields: [query, response], split: "train[:1000]"}`
reads the records through `datasets` and renders them with the same `ChatTemplate` as local files,
so the `sft`/`qa` loss masks find the prompt and the response. Sources:

- a hub id `owner/name` (or `hf:name`): needs network access. We check that the hub answers an HTTP
  request within a few seconds before asking `datasets` (which otherwise retries for half a minute)
  and, without it, say so in one line with how to point at a local copy. `HF_HUB_OFFLINE=1` skips the
  check and lets `datasets` read its local cache.
- a folder written by `save_to_disk` (Dataset or DatasetDict): offline.
- local .json/.jsonl/.parquet/.csv/.arrow files through `datasets`' packaged builders: offline; the
  rows are kept in memory and the builder's cache goes to a temporary folder, removed at once.

`split` uses `datasets`' syntax (`train`, `train[:1000]`, `train[10%:20%]+test`); default `train`.
"""

from __future__ import annotations

import os
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rwkv_tune.data.detect import HF_FILE_SUFFIXES, hf_source_kind, hub_name, is_saved_dataset
from rwkv_tune.data.readers import RecordReader
from rwkv_tune.data.records import Document, SourceOptions
from rwkv_tune.errors import DataError

HUB_TIMEOUT = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
LOCAL_COPY = ("Where there is network, run datasets.load_dataset('{name}', split='{split}').save_to_disk('DIR') "
              "(or save it as .jsonl/.parquet) and set data.path to that folder or file")


def offline_mode() -> bool:
    """Whether the user asked Hugging Face libraries to stay offline (HF_HUB_OFFLINE=1 and friends)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_VARS)


def hub_endpoint() -> str:
    """The hub's base URL (HF_ENDPOINT, as `huggingface_hub` reads it)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """Whether the hub's API answers with success within `timeout` seconds (DNS and proxies included).

    Only a 2xx answer counts: networks that intercept traffic answer everything with an error page.
    The probe runs in a daemon thread so that a slow DNS lookup cannot hold us past the timeout either.
    """
    ok: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(f"{hub_endpoint()}/api/datasets?limit=1", timeout=timeout) as r:
                ok.append(200 <= r.status < 300)
        except (OSError, ValueError):  # URLError, HTTPError and timeouts are OSErrors
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def no_network_error(name: str, split: str | None) -> DataError:
    """The one-line error for a hub id that cannot be fetched."""
    host = urllib.parse.urlsplit(hub_endpoint()).hostname or hub_endpoint()
    why = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if offline_mode()
           else f"{host} cannot be reached from this machine")
    return DataError(f"Hugging Face dataset '{name}' needs network access to download, and {why}",
                     LOCAL_COPY.format(name=name, split=split or "train") + ".")


def import_datasets(what: str) -> Any:
    """The `datasets` module, or a one-line error naming the extra and the local alternative."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading {what} needs the Hugging Face 'datasets' package, which is not installed",
                        "Install it with pip install 'rwkv-tune[hf]', or convert the data to .jsonl and set "
                        "data.path to that file.") from None
    return datasets


@contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """No progress bars for local loads (they would interleave with ours)."""
    was = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            datasets.enable_progress_bars()


def _split_names(split: str) -> list[str]:
    return [part.split("[")[0].strip() for part in split.split("+")]


def select_split(obj: Any, split: str | None, name: str, datasets: Any) -> Any:
    """Apply a split spec (`train[:1000]`) to a Dataset or DatasetDict loaded from disk."""
    if isinstance(obj, datasets.DatasetDict):
        if split is None:
            if "train" not in obj and len(obj) != 1:
                raise DataError(f"{name} has splits {', '.join(obj)} and none is called train",
                                "Set data.split (--split) to one of them.")
            return obj["train" if "train" in obj else next(iter(obj))]
        missing = [s for s in _split_names(split) if s not in obj]
        if missing:
            raise DataError(f"split {missing[0]!r} is not in {name} (splits: {', '.join(obj)})",
                            "Set data.split (--split) to one of them, e.g. train[:1000].")
        parts = obj
    else:
        if split is None:
            return obj
        parts = {s: obj for s in _split_names(split)}
    try:
        spec = datasets.ReadInstruction.from_spec(split)
        todo = spec.to_absolute({s: len(d) for s, d in parts.items()})
    except (ValueError, AssertionError) as e:
        raise DataError(f"split {split!r} for {name} is not valid ({e})",
                        "Use e.g. train, train[:1000], train[10%:20%] or train+test.") from None
    pieces = [parts[a.splitname].select(range(a.from_, a.to)) for a in todo]
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def open_dataset(source: str | Path | Sequence[str | Path], split: str | None = None) -> tuple[Any, str]:
    """(datasets.Dataset, display name) for a hub id, a save_to_disk folder or local data files."""
    paths = [source] if isinstance(source, str | Path) else list(source)
    first = str(paths[0])
    kind = hf_source_kind(first) if len(paths) == 1 else "files"
    if kind == "hub":
        name = hub_name(first)
        datasets = import_datasets(f"the Hugging Face dataset '{name}'")
        if not offline_mode() and not hub_reachable():
            raise no_network_error(name, split)
        try:
            return datasets.load_dataset(name, split=split or "train"), f"{name}[{split or 'train'}]"
        except ConnectionError:
            raise no_network_error(name, split) from None
        except FileNotFoundError as e:
            raise DataError(f"Hugging Face dataset '{name}' was not found ({_first_line(e)})",
                            "Check the id on huggingface.co (for a gated or private dataset log in with "
                            "'hf auth login' first); if you meant a local path, check that it exists.") from None
        except ValueError as e:
            raise DataError(f"cannot load '{name}' with split {split or 'train'!r}: {_first_line(e)}",
                            "Use e.g. train or train[:1000].") from None
    if kind == "disk":
        datasets = import_datasets(f"the saved dataset {first}")
        with _quiet(datasets):
            return select_split(datasets.load_from_disk(first), split, first, datasets), first
    files = [Path(p) for p in paths]
    for f in files:
        if not f.is_file():
            what = "a saved dataset folder" if f.is_dir() and not is_saved_dataset(f) else "a file"
            raise DataError(f"{f} is not {what} that Hugging Face datasets can read",
                            "Pass .jsonl/.json/.parquet/.csv files, a save_to_disk folder or a hub id owner/name.")
    builders = {HF_FILE_SUFFIXES.get(f.suffix.lower()) for f in files}
    if None in builders or len(builders) != 1:
        raise DataError(f"cannot read {', '.join(map(str, files))} with Hugging Face datasets",
                        f"Pass files of one kind: {', '.join(sorted(HF_FILE_SUFFIXES))}.")
    name = ", ".join(map(str, files))
    datasets = import_datasets(name)
    try:
        with _quiet(datasets), tempfile.TemporaryDirectory(prefix="rwkv-tune-hf-") as cache:
            ds = datasets.load_dataset(builders.pop(), data_files=[str(f) for f in files], split=split or "train",
                                       cache_dir=cache, keep_in_memory=True)
    except ValueError as e:
        raise DataError(f"cannot load {name} with split {split or 'train'!r}: {_first_line(e)}",
                        "Use e.g. train, train[:1000] or train[:10%] (local files form one split, train).") from None
    except Exception as e:  # builders raise their own types for malformed files
        raise DataError(f"Hugging Face datasets cannot read {name}: {_first_line(e)}",
                        "Check the files (one JSON object per line for .jsonl).") from None
    return ds, name


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


class HFReader(RecordReader):
    """Documents from a Hugging Face dataset's rows, rendered like local records (jsonl / sft / chat)."""

    def __init__(self, source: str | Path | Sequence[str | Path], options: SourceOptions | None = None,
                 split: str | None = None):
        super().__init__(options)
        if self.options.fmt == "text":
            raise DataError("Hugging Face datasets give records, not plain text", "Use type jsonl, sft or chat.")
        self.dataset, self.name = open_dataset(source, split)
        paths = [source] if isinstance(source, str | Path) else list(source)
        self.files = [Path(p) for p in paths if Path(p).exists()]
        columns = list(self.dataset.column_names)
        fields = self.options.fields
        if fields:
            missing = [f for f in fields if f not in columns]
            if missing and not (len(fields) == 3 and missing == [fields[1]]):  # alpaca 'input' may be absent
                raise DataError(f"column {missing[0]!r} is not in {self.name} (columns: {', '.join(columns)})",
                                "Set data.fields (--fields) to the prompt and response columns.")
            self.dataset = self.dataset.select_columns([f for f in fields if f in columns])

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Document]:
        records = ((f"{self.name} row {i}", rec) for i, rec in enumerate(self.dataset))
        for doc in self._render(self.name, records, self.options.fmt):
            self.bytes_read += len(doc.text.encode("utf-8"))
            yield doc
