"""Start training processes: behind the dashboard (one subprocess) or one per rank (torchrun/DeepSpeed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def worker_command(preset: Path, overrides: list[str], resume: str | None, *, quiet: bool = False) -> list[str]:
    cmd = [str(preset)]
    for item in overrides:
        cmd += ["--set", item]
    if resume:
        cmd += ["--resume", resume]
    if quiet:
        cmd.append("--quiet")
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(preset: Path, overrides: list[str], resume: str | None) -> int:
    """One process per device (and node) through torchrun, or DeepSpeed's launcher with a hostfile."""
    from rwkv_tune import preset as preset_mod

    p = preset_mod.load(preset, overrides)
    args = worker_command(preset, overrides, resume)
    if p.train.nodes > 1 or p.train.hostfile:
        cmd = ["deepspeed", "--num_nodes", str(p.train.nodes), "--num_gpus", str(p.train.devices)]
        if p.train.hostfile:
            cmd += ["--hostfile", p.train.hostfile]
        cmd += ["--module", "rwkv_tune.train.worker", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(p.train.devices),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "rwkv_tune.train.worker", *args]
    return subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def train_with_dashboard(preset: Path, overrides: list[str], resume: str | None, run_dir: Path, *,
                         exit_on_done: bool = False) -> int:
    """Train in a subprocess and show the dashboard; closing the UI never kills training unless asked."""
    from rwkv_tune.tui.app import DashboardApp

    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "train.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune.train.worker",
                             *worker_command(preset, overrides, resume, quiet=True)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    status = DashboardApp(run_dir, process=proc, exit_on_done=exit_on_done).run()
    if proc.poll() is None and status in (None, "detach"):
        print(f"Training continues in the background (pid {proc.pid}); follow it with: rwkv-tune watch {run_dir}")
        return 0
    return proc.wait() or 0
