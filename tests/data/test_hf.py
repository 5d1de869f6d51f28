"""SFT straight from Hugging Face datasets: saved folders, parquet/jsonl through `datasets`, hub ids offline."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.data import IGNORE, make_batches, open_documents, read_binidx
from rwkv_tune.data.binidx import read_meta
from rwkv_tune.data.detect import detect_data_type, hf_source_kind, is_hub_id
from rwkv_tune.data.hf import hub_reachable
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import DataError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ROWS = {
    "query": ["What is 2+2?", "Name the capital of France.", "Say hi.", "Count to three."],
    "response": ["4", "Paris.", "Hi!", "1, 2, 3."],
    "type": ["math", "geo", "chat", "math"],
}
FIELDS = ["query", "response"]


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, ANSI.sub("", result.output)


def expected_rows(indices, ctx_len):
    """By hand: the rendered prompt/response, tokenized with the end token; loss only on the response + end."""
    tok = get_tokenizer()
    xs, ys = [], []
    for i in indices:
        prompt = f"User: {ROWS['query'][i]}\n\nAssistant:"
        ids = tok.encode(prompt + " " + ROWS["response"][i]) + [0]
        n_prompt = len(tok.encode(prompt))
        assert tok.encode(prompt) == ids[:n_prompt]  # the prompt tokenizes the same inside the document
        x = ids[:-1] + [0] * (ctx_len - len(ids) + 1)
        y = [IGNORE] * (n_prompt - 1) + ids[n_prompt:] + [IGNORE] * (ctx_len - len(ids) + 1)
        xs.append(x)
        ys.append(y)
    return xs, ys


@pytest.fixture
def saved(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(ROWS)
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict(train=ds, test=ds.select([2, 3])).save_to_disk(str(tmp_path / "dd"))
    return tmp_path


def test_saved_dataset_gives_sft_batches_with_the_prompt_masked(saved):
    b = make_batches(saved / "saved", type="sft", fields=FIELDS, split="train[:2]", loss_mask="sft", mode="pad",
                     ctx_len=32, micro_bsz=2, shuffle=False, pad_multiple=1, vocab_size=65536)
    assert b.epoch_steps == 1
    x, y = next(b)
    xs, ys = expected_rows([0, 1], 32)
    assert x.tolist() == xs and y.tolist() == ys
    tok = get_tokenizer()
    assert [tok.decode([t for t in row if t != IGNORE]) for row in y.tolist()] == [" 4", " Paris."]


def test_dataset_dict_splits_percentages_and_sharding(saved):
    docs = open_documents(saved / "dd", type="sft", fields=FIELDS, split="test")
    tok = get_tokenizer()
    assert [tok.decode(docs[i]) for i in range(len(docs))] == [
        "User: Say hi.\n\nAssistant: Hi!", "User: Count to three.\n\nAssistant: 1, 2, 3."]
    assert len(open_documents(saved / "dd", type="sft", fields=FIELDS, split="train[50%:]+test[:1]")) == 3
    assert len(open_documents(saved / "dd", type="auto")) == 4  # default split train, fields detected
    ranks = [make_batches(saved / "saved", type="sft", fields=FIELDS, loss_mask="sft", mode="pad", ctx_len=32,
                          micro_bsz=1, shuffle=False, pad_multiple=1, rank=r, world_size=2) for r in (0, 1)]
    firsts = [next(r).x[0].tolist() for r in ranks]
    assert firsts[0] != firsts[1]
    with pytest.raises(DataError, match=r"split 'validation' is not in .*dd \(splits: train, test\)"):
        open_documents(saved / "dd", split="validation")
    with pytest.raises(DataError, match=r"split 'train\[:' for .* is not valid"):
        open_documents(saved / "dd", split="train[:")
    with pytest.raises(DataError, match=r"column 'question' is not in .*\(columns: query, response, type\)"):
        open_documents(saved / "saved", type="sft", fields=["question", "response"])


def test_parquet_and_jsonl_through_datasets_match_the_local_reader(saved):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(ROWS).to_parquet(str(saved / "d.parquet"))
    local = saved / "d.jsonl"
    local.write_text("".join(json.dumps({k: ROWS[k][i] for k in ROWS}) + "\n" for i in range(4)), encoding="utf-8")
    by_reader = open_documents(local, type="sft", fields=FIELDS)
    from_parquet = open_documents(saved / "d.parquet", type="sft", fields=FIELDS)
    assert np.array_equal(by_reader.tokens, from_parquet.tokens)
    via_hf = open_documents(local, type="sft", fields=FIELDS, split="train[1:3]")
    assert np.array_equal(via_hf.tokens, np.concatenate([by_reader[1], by_reader[2]]))
    assert detect_data_type(saved / "d.parquet") == "sft"


def test_cli_prepare_from_saved_dataset_then_train_batches_from_binidx(saved):
    out = saved / "bin" / "sft"
    code, text = run("data", "prepare", saved / "saved", "--format", "sft", "--fields", "query,response",
                     "--split", "train[:2]", "-o", out, "--json")
    assert code == 0, text
    assert json.loads(text)["documents"] == 2
    meta = read_meta(out)
    assert meta["suggested_loss_mask"] == "sft" and meta["split"] == "train[:2]"
    assert meta["source_formats"] == {f"{saved / 'saved'}": "sft"}
    b = make_batches(out, type="sft", loss_mask="sft", mode="pad", ctx_len=32, micro_bsz=2, shuffle=False,
                     pad_multiple=1)
    x, y = next(b)
    xs, ys = expected_rows([0, 1], 32)
    assert x.tolist() == xs and y.tolist() == ys
    assert len(read_binidx(out)) == 2


def test_detection_without_datasets_installed(saved, monkeypatch):
    assert detect_data_type(saved / "saved") == "sft" and detect_data_type(saved / "dd") == "sft"
    assert hf_source_kind(saved / "saved") == "disk" and hf_source_kind("meta-math/MetaMathQA") == "hub"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError) as e:
        open_documents(saved / "saved", type="sft")
    assert "needs the Hugging Face 'datasets' package, which is not installed" in str(e.value)
    assert "pip install 'rwkv-tune[hf]'" in str(e.value) and "\n" not in str(e.value)


def test_hub_id_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("meta-math/MetaMathQA") and is_hub_id("hf:squad") and is_hub_id("hf://datasets/a/b")
    assert not is_hub_id("data.jsonl") and not is_hub_id("squad") and not is_hub_id("a/b.jsonl")
    (tmp_path / "data").mkdir()
    assert not is_hub_id("data/train")  # a local folder 'data' exists: a path, not an id
    assert not is_hub_id(str(tmp_path / "x"))


@pytest.fixture
def no_network(monkeypatch):
    """The hub endpoint points at a closed local port: no network, deterministically, in any environment."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY",
                "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def test_hub_id_without_network_is_one_line_fast(no_network):
    pytest.importorskip("datasets")
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        make_batches("meta-math/MetaMathQA", type="sft", fields=FIELDS, split="train[:1000]", loss_mask="sft",
                     mode="pad", ctx_len=64, micro_bsz=1)
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Hugging Face dataset 'meta-math/MetaMathQA' needs network access")
    assert "127.0.0.1 cannot be reached" in msg and "save_to_disk" in msg and "set data.path" in msg


@pytest.mark.parametrize("has_datasets", [True, False])
def test_cli_prepare_hub_id_without_network_exits_2(no_network, monkeypatch, tmp_path, has_datasets):
    if has_datasets:
        pytest.importorskip("datasets")
    else:
        monkeypatch.setitem(sys.modules, "datasets", None)
    code, out = run("data", "prepare", "meta-math/MetaMathQA", "--format", "sft", "--fields", "query,response",
                    "--split", "train[:1000]", "-o", tmp_path / "m")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    assert ("needs network access" if has_datasets else "'datasets' package, which is not installed") in lines[0]
    assert not (tmp_path / "m.bin").exists()


def test_offline_mode_reports_the_cache(tmp_path):
    pytest.importorskip("datasets")
    code = ("from rwkv_tune.data import open_documents\n"
            "try:\n    open_documents('meta-math/MetaMathQA', type='sft')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("DataError Hugging Face dataset 'meta-math/MetaMathQA' needs network access")
    assert "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" in out


class _Hub(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "reachable"), [(200, True), (404, False)])
def test_hub_reachable_needs_a_real_answer(monkeypatch, status, reachable):
    handler = type("Hub", (_Hub,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_reachable(timeout=5) is reachable
    finally:
        server.shutdown()
