"""`python -m rwkv_tune.train.worker PRESET [--set k=v] [--resume auto]`: one training process.

Started by `rwkv-tune train` behind the dashboard, or once per rank by the multi-GPU launcher
(RANK / WORLD_SIZE / LOCAL_RANK in the environment, or SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID).
Progress goes to metrics.jsonl (rank 0). `rwkv-tune train` run by an external launcher on every rank
ends up in `train_rank` too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rwkv_tune.train.worker")
    parser.add_argument("preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--resume", default=None)
    parser.add_argument("--restart", action="store_true", help="archive the run in output.dir and start over")
    parser.add_argument("--quiet", action="store_true", help="no plain progress output (the dashboard shows it)")
    args = parser.parse_args(argv)

    from rwkv_tune import preset as preset_mod
    from rwkv_tune.errors import UserError

    if os.environ.get("RWKV_TUNE_DIE_WITH_PARENT") == "1":
        _die_with_parent()
    try:
        p = preset_mod.load(args.preset, args.overrides)
    except UserError as exc:
        _print_error(_console(), exc)
        return exc.exit_code
    return train_rank(p, args.resume, quiet=args.quiet, restart=args.restart)


def _die_with_parent() -> None:
    """Linux: SIGKILL this rank when its launcher dies (a killed torchrun agent would leave ranks running,
    still holding the run directory)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_error(console: Any, exc: Any) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(exc.one_line())}", soft_wrap=True)


def train_rank(p: Any, resume: str | None, *, quiet: bool, restart: bool = False) -> int:
    """Train as this process's rank (one process, or one of WORLD_SIZE); rank 0 holds the run lock, reports
    and merges. Returns the exit code (rwkv_tune.exit_codes)."""
    from rwkv_tune import exit_codes
    from rwkv_tune.errors import ConfigError, UserError
    from rwkv_tune.progress import make_printer
    from rwkv_tune.train import run
    from rwkv_tune.train.ranks import adopt_slurm_rank
    from rwkv_tune.train.run_guard import claim_run

    adopt_slurm_rank(p.train.master_addr, p.train.master_port)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    console = _console()
    try:
        if world_size != p.train.devices * p.train.nodes:
            raise ConfigError(f"the launcher started {world_size} ranks (WORLD_SIZE), but train.devices × train.nodes = "
                              f"{p.train.devices} × {p.train.nodes}",
                              "Make train.devices the processes per node and train.nodes the node count.")
        echo = make_printer(console) if rank == 0 and not quiet else None
        with claim_run(p, resume=resume, restart=restart, rank=rank) as claim:  # held over the merge
            engine = None
            if world_size > 1:
                from rwkv_tune.train.engines import DeepSpeedEngine

                engine = DeepSpeedEngine(p, rank=rank, world_size=world_size)
            with exit_codes.record_signals() as signals:
                result = run(p, resume=resume, echo=echo, rank=rank, world_size=world_size, engine=engine,
                             claim=claim)
            if rank == 0 and (p.output.merge or p.output.export == "gguf") and result.adapter is not None \
                    and result.reason == "finished":  # a GGUF export is made from the merged model
                from rwkv_tune.train.finish import merge_run

                merge_run(p, console=console)
        return exit_codes.for_run(result.reason, signals.last())
    except UserError as exc:
        _print_error(console, exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
