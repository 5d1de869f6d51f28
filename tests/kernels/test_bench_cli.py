"""`rwkv-tune bench --size tiny --json` runs on a CPU and reports sane numbers."""

import json

import pytest
from typer.testing import CliRunner

from rwkv_tune.bench import model_spec, run
from rwkv_tune.cli import app

runner = CliRunner()


def test_bench_tiny_json():
    result = runner.invoke(app, ["bench", "--size", "tiny", "--ctx", "32", "--steps", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["results"]
    assert {(r["kind"], r["op"]) for r in rows} >= {("model", "torch"), ("wkv", "torch")}
    for r in rows:
        assert r["error"] is None
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mib"] > 0
        assert r["ctx"] == 32 and r["size"] == "tiny"


def test_bench_table_and_naive_op():
    result = runner.invoke(app, ["bench", "--size", "tiny", "--ctx", "16", "--steps", "1", "--warmup", "0",
                                 "--op", "torch", "--op", "naive", "--what", "wkv"])
    assert result.exit_code == 0, result.output
    assert "naive" in result.output and "tokens/s" in result.output


@pytest.mark.parametrize("args,message", [
    (["--size", "7B"], "--size 7B"),
    (["--op", "cuda"], "cannot run here"),
    (["--what", "everything"], "--what"),
    (["--dtype", "fp8"], "--dtype"),
])
def test_bench_rejects_bad_options(args, message):
    result = runner.invoke(app, ["bench", "--size", "tiny", *args] if args[0] != "--size" else ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_model_spec_shapes_match_released_models():
    spec = model_spec("1.5B")
    assert (spec.n_layer, spec.n_embd, spec.n_head, spec.vocab_size, spec.dim_ffn) == (24, 2048, 32, 65536, 8192)
    assert spec.size_name == "1.5B"
    assert model_spec("0.4B").size_name == "0.4B" and model_spec("0.1B").size_name == "0.1B"


def test_run_records_errors_instead_of_crashing():
    rows = run(["tiny"], [16], ["no-such-op"], kinds=("wkv",), steps=1, warmup=0)
    assert len(rows) == 1 and rows[0].error and "no-such-op" in rows[0].error


def test_a_registered_op_that_cannot_run_is_a_row_without_timing(monkeypatch):
    """As on a GPU machine whose kernels do not build: `cuda` is registered but would run the torch op."""
    from rwkv_tune.model.wkv import WKV7_OPS
    from rwkv_tune.model.wkv.cuda import wkv7_cuda

    monkeypatch.setitem(WKV7_OPS, "cuda", wkv7_cuda)
    rows = run(["tiny"], [16], ["torch", "cuda"], kinds=("wkv",), steps=1, warmup=0, device="cpu")
    cuda = next(r for r in rows if r.op == "cuda")
    assert cuda.error.startswith("unavailable: ") and "cpu" in cuda.error
    assert cuda.step_ms is None and cuda.tokens_per_s is None and cuda.speedup_vs_torch is None
    assert next(r for r in rows if r.op == "torch").step_ms > 0
