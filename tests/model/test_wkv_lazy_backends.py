"""`import rwkv_tune.model` imports neither fla nor Triton, even on a GPU machine: cuda and fla register on first use.

Fake `fla` and `triton` packages on PYTHONPATH and a faked `torch.cuda.is_available()` make a CPU
machine take the path a GPU machine takes; the control shows that using op "fla" does import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAKE_CHUNK_RWKV7 = '''import torch
import triton

def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
    return v, torch.zeros(r.shape[0], r.shape[2], r.shape[3], r.shape[3])  # y = v marks that this one ran
'''

SCRIPT = '''import json, sys, torch
torch.cuda.is_available = lambda: True  # take the GPU machine's path
import rwkv_tune.model
from rwkv_tune.model import resolve_op
from rwkv_tune.model.wkv import WKV7_OPS, wkv7
seen = {"auto_on_cuda": resolve_op("auto", "cuda")}
if sys.argv[1] == "use-fla":
    r, g, k, v, a, b = torch.rand(6, 1, 4, 2, 8).unbind(0)
    y, _ = wkv7(r, -g, k, v, a, b, op="fla")
    seen["fla_ran"] = torch.equal(y, v)
seen.update(fla="fla" in sys.modules, triton="triton" in sys.modules, ops=sorted(WKV7_OPS))
print(json.dumps(seen))
'''


def _run(tmp_path: Path, mode: str) -> dict:
    (tmp_path / "fla" / "ops").mkdir(parents=True)
    (tmp_path / "fla" / "__init__.py").write_text("")
    (tmp_path / "fla" / "ops" / "__init__.py").write_text("")
    (tmp_path / "fla" / "ops" / "rwkv7.py").write_text(FAKE_CHUNK_RWKV7)
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""), str(Path(__file__).parents[2])])
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": path})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_model_imports_neither_fla_nor_triton(tmp_path):
    seen = _run(tmp_path, "import")
    assert seen["fla"] is False and seen["triton"] is False
    assert seen["auto_on_cuda"] == "cuda" and "cuda" in seen["ops"]  # op auto registered cuda when asked
    assert "fla" not in seen["ops"]


def test_control_using_the_fla_op_imports_the_fake_fla_and_triton(tmp_path):
    seen = _run(tmp_path, "use-fla")
    assert seen["fla_ran"] is True and "fla" in seen["ops"]
    assert seen["fla"] is True and seen["triton"] is True
