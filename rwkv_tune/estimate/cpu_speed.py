"""Training speed on this CPU, measured: a few forward+backward steps in a subprocess, scaled by FLOPs.

The estimator stays torch-free: `measured_flops_per_s(spec)` runs `python -m rwkv_tune.estimate.cpu_probe`
once per model shape (cached), which times full-model training steps of the model itself when it is small,
else of a 0.1B-shaped one, and reports FLOPs per second; `cpu_timing` turns that into this run's time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from functools import cache

from rwkv_tune.estimate.config import Config
from rwkv_tune.estimate.timing import Timing, flops_per_token
from rwkv_tune.estimate.vram import count_params
from rwkv_tune.spec import ModelSpec

PROBE_TIMEOUT_S = 120
CPU_LABEL = "this CPU (measured)"


MAX_MEASURED_PARAMS = 20e6  # bigger models are timed as a 2-layer stand-in of their width (cpu_probe.stand_in)


@cache
def _probe(key: str, spec_json: str) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-m", "rwkv_tune.estimate.cpu_probe", spec_json], capture_output=True,
                         text=True, timeout=PROBE_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "the CPU probe failed")
    result = json.loads(out.stdout)
    return float(result["flops_per_s"]), str(result["measured"])


def measured_flops_per_s(spec: ModelSpec) -> tuple[float, str]:
    """(training FLOPs per second this CPU achieves, what was measured); RuntimeError when it cannot tell."""
    spec_json = json.dumps(asdict(spec), sort_keys=True)
    key = f"stand-in {min(spec.n_embd, 512)}" if spec.params > MAX_MEASURED_PARAMS else spec_json
    return _probe(key, spec_json)


def cpu_timing(spec: ModelSpec, cfg: Config, tokens: int | None) -> tuple[Timing, str]:
    """(this run's speed and time on this CPU, how it was measured)."""
    rate, measured = measured_flops_per_s(spec)
    flops = flops_per_token(spec, cfg, count_params(spec, cfg))
    tps = rate / flops
    return Timing(CPU_LABEL, flops, tps, tokens, tokens / tps if tokens else None), measured
