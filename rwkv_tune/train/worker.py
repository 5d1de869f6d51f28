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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rwkv_tune.train.worker")
    parser.add_argument("preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--resume", default=None)
    parser.add_argument("--quiet", action="store_true", help="no plain progress output (the dashboard shows it)")
    args = parser.parse_args(argv)

    from rwkv_tune import preset as preset_mod
    from rwkv_tune.errors import UserError

    try:
        p = preset_mod.load(args.preset, args.overrides)
    except UserError as exc:
        _console().print(f"[bold red]error:[/] {exc.one_line()}", soft_wrap=True)
        return 2
    return train_rank(p, args.resume, quiet=args.quiet)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def train_rank(p, resume: str | None, *, quiet: bool) -> int:
    """Train as this process's rank (one process, or one of WORLD_SIZE); rank 0 reports and merges."""
    from rwkv_tune.errors import ConfigError, UserError
    from rwkv_tune.progress import make_printer
    from rwkv_tune.train import run
    from rwkv_tune.train.ranks import adopt_slurm_rank

    adopt_slurm_rank(p.train.master_addr, p.train.master_port)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    console = _console()
    try:
        if world_size != p.train.devices * p.train.nodes:
            raise ConfigError(f"the launcher started {world_size} ranks (WORLD_SIZE), but train.devices × train.nodes = "
                              f"{p.train.devices} × {p.train.nodes}",
                              "Make train.devices the processes per node and train.nodes the node count.")
        engine = None
        if world_size > 1:
            from rwkv_tune.train.engines import DeepSpeedEngine

            engine = DeepSpeedEngine(p, rank=rank, world_size=world_size)
        echo = make_printer(console) if rank == 0 and not quiet else None
        result = run(p, resume=resume, echo=echo, rank=rank, world_size=world_size, engine=engine)
        if rank == 0 and p.output.merge and result.adapter is not None and result.reason == "finished":
            from rwkv_tune.train.finish import merge_run

            merge_run(p, console=console)
        return 1 if result.reason == "diverged" else 0
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc.one_line()}", soft_wrap=True)
        return 2

if __name__ == "__main__":
    sys.exit(main())
