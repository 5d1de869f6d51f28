"""Start training processes: behind the dashboard (one subprocess) or one per rank (torchrun/DeepSpeed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rwkv_tune.tui.state import MergeState

LINGER_S = 3.0  # how long a finished run's dashboard stays up before returning to the shell


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


def rank_launch_command(preset: Path, overrides: list[str], resume: str | None, *, quiet: bool = False) -> list[str]:
    """The command that starts every rank of a multi-process run; the hostfile is checked before anything starts.

    One node: torchrun with `devices` processes. Several nodes: DeepSpeed's launcher with `train.hostfile`
    (it reaches the other nodes over ssh/pdsh and starts `devices` ranks on each).
    """
    from rwkv_tune import preset as preset_mod
    from rwkv_tune.errors import ConfigError
    from rwkv_tune.train.ranks import DEFAULT_MULTI_NODE_PORT, read_hostfile

    p = preset_mod.load(preset, overrides)
    t = p.train
    args = worker_command(preset, overrides, resume, quiet=quiet)
    if t.nodes > 1 or t.hostfile:
        if not t.hostfile:
            raise ConfigError(f"train.nodes = {t.nodes} needs train.hostfile (which hosts to start ranks on)",
                              "Set train.hostfile to a file of 'HOST slots=N' lines, or start `rwkv-tune train` on "
                              "every node yourself (torchrun, srun: see the README).")
        read_hostfile(t.hostfile, devices=t.devices, nodes=t.nodes)
        return ["deepspeed", "--hostfile", t.hostfile, "--num_nodes", str(t.nodes), "--num_gpus", str(t.devices),
                "--master_addr", t.master_addr, "--master_port", str(t.master_port or DEFAULT_MULTI_NODE_PORT),
                "--module", "rwkv_tune.train.worker", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(t.devices),
            "--master_addr", t.master_addr, "--master_port", str(t.master_port or _free_port()),
            "-m", "rwkv_tune.train.worker", *args]


DIE_WITH_PARENT = "RWKV_TUNE_DIE_WITH_PARENT"


def rank_env() -> dict[str, str]:
    """The ranks' environment; each rank dies with the launcher that started it (no orphan holding the run)."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), DIE_WITH_PARENT: "1"}


def launch(preset: Path, overrides: list[str], resume: str | None) -> int:
    """One process per device (and node) through torchrun, or DeepSpeed's launcher with a hostfile."""
    return subprocess.call(rank_launch_command(preset, overrides, resume), env=rank_env())


def train_with_dashboard(preset: Path, overrides: list[str], resume: str | None, run_dir: Path, *,
                         exit_on_done: bool = True, linger_s: float = LINGER_S, ranks: int = 1) -> int:
    """Train in a subprocess behind the dashboard, then print the run's summary; returns the exit code.

    With `ranks` > 1 the subprocess is the rank launcher; the dashboard follows rank 0's events and its
    stop/save words reach every rank (rank 0 broadcasts them).
    Closing the dashboard never kills training unless the user asks. With `exit_on_done` the dashboard
    returns to the shell shortly after the run (and its merge) ends, unless a key was pressed meanwhile.
    """
    from rwkv_tune.tui.app import DashboardApp

    if ranks > 1:  # torchrun (or DeepSpeed's launcher) behind the dashboard; rank 0 writes metrics.jsonl
        cmd, env = rank_launch_command(preset, overrides, resume, quiet=True), rank_env()
    else:
        cmd = [sys.executable, "-m", "rwkv_tune.train.worker", *worker_command(preset, overrides, resume, quiet=True)]
        env = None
    run_dir.mkdir(parents=True, exist_ok=True)
    # Events before this instant belong to earlier sessions appended to the same metrics.jsonl.
    since = int(time.time() * 1000) / 1000
    with open(run_dir / "train.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    app = DashboardApp(run_dir, process=proc, exit_on_done=exit_on_done, linger_s=linger_s, since=since)
    status = app.run()
    console = Console(highlight=False)
    if proc.poll() is None and status in (None, "detach"):
        console.print(f"Training continues in the background (pid {proc.pid}); follow it with: "
                      f"rwkv-tune watch {run_dir}", soft_wrap=True)
        return 0
    code = proc.wait()
    print_final_summary(run_dir, app.state.merge, code, console)
    return code


def print_final_summary(run_dir: Path, merge: MergeState, code: int, console: Console) -> None:
    """What stays in the terminal after the dashboard closes: the run's summary and what to do next."""
    from rwkv_tune.runs import RunDir, read_events
    from rwkv_tune.tui.format import summary_lines
    from rwkv_tune.tui.state import RunState

    run = RunDir(run_dir)
    state = RunState()
    for event in read_events(run.metrics):
        state.apply(event)
    if state.merge.status == "idle":
        state.merge = merge
    for line in summary_lines(state, now=time.time()):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if merge.status == "done":
        mark = {True: "verified", False: "VERIFICATION FAILED"}.get(merge.verified, "not verified")
        console.print(f"merge    {mark}", markup=False, highlight=False)
    elif merge.status == "failed":
        console.print(f"merge    failed: {merge.message}", markup=False, highlight=False, soft_wrap=True)
    if code != 0:
        log = run_dir / "train.log"
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:] if log.exists() else []
        if state.error:  # the summary already says what went wrong
            tail = []
        console.print(Text(f"the trainer exited with code {code}" + (f"; the end of {log}:" if tail else f" ({log})"),
                           "bold red"), soft_wrap=True)
        for line in tail:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    if run.adapter.exists():
        target = merge.path if merge.status == "done" and merge.path else run_dir
        console.print(f"Next: rwkv-tune generate {target} --prompt '...'", markup=False, highlight=False,
                      soft_wrap=True)
