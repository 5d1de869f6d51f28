"""`rwkv-tune train preset.yaml`: validate, show the plan, train (dashboard or plain output), merge."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from rwkv_tune.cli._common import console, print_json, user_errors


def train(
    preset: Path = typer.Argument(..., help="The preset YAML (from `rwkv-tune init` or `rwkv-tune presets copy`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.lr_init=1e-4 (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved preset, the plan and the VRAM estimate; "
                                 "train nothing."),
    resume: str = typer.Option(None, "--resume", help="auto (latest checkpoint of the run) or a checkpoint folder."),
    restart: bool = typer.Option(False, "--restart", help="Start the run in output.dir over: its files move to "
                                 "output.dir/archive/<time>/."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Plain progress output instead of the dashboard."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the plan as JSON."),
) -> None:
    """Train from a preset: validation, plan, live progress, checkpoints, exact resume, merge at the end."""
    from rwkv_tune import preset as preset_mod

    with user_errors():
        p = preset_mod.load(preset, set_)
        if dry_run:
            from rwkv_tune.train.plan import dry_run_plan

            plan = dry_run_plan(p)
            if as_json:
                print_json(plan)
            else:
                _print_plan(p, plan)
            return
        preset_mod.check_machine(p)
        from rwkv_tune.train.ranks import started_as_rank

        if started_as_rank():  # torchrun / deepspeed / srun started this process as one rank
            from rwkv_tune.train.worker import train_rank

            raise typer.Exit(train_rank(p, resume, quiet=False, restart=restart))
        ranks = p.train.devices * p.train.nodes
        use_tui = not no_tui and sys.stdout.isatty() and os.environ.get("RWKV_TUNE_NO_TUI") != "1"
        if ranks > 1:  # a bad hostfile is refused before anything is written or started
            from rwkv_tune.train.launcher import rank_launch_command

            rank_launch_command(preset, set_, resume)
        if ranks > 1 or use_tui:  # the trainer runs in other processes: check the run directory here, report cleanly
            from rwkv_tune.train.run_guard import check_run_dir

            check_run_dir(p, resume=resume, restart=restart)
        if use_tui:
            from rwkv_tune.train.launcher import train_with_dashboard

            raise typer.Exit(train_with_dashboard(preset, set_, resume, Path(p.output.dir), ranks=ranks))
        if ranks > 1:
            from rwkv_tune.train.launcher import launch

            raise typer.Exit(launch(preset, set_, resume))
        _train_here(p, resume, restart, rank=0)


def _train_here(p, resume: str | None, restart: bool, rank: int) -> None:
    from rwkv_tune import exit_codes
    from rwkv_tune.progress import make_printer
    from rwkv_tune.train import run
    from rwkv_tune.train.run_guard import claim_run

    with claim_run(p, resume=resume, restart=restart, rank=rank) as claim:  # held over the merge too
        with exit_codes.record_signals() as signals:
            result = run(p, resume=resume, echo=make_printer(console), claim=claim)
        code = exit_codes.for_run(result.reason, signals.last())
        if code == exit_codes.DONE and (p.output.merge or p.output.export == "gguf") and result.adapter is not None:
            from rwkv_tune.train.finish import merge_run

            merge_run(p, console=console)
    if code:
        raise typer.Exit(code)


def _print_plan(p, plan: dict) -> None:
    from rich.panel import Panel
    from rich.syntax import Syntax

    console.print(Panel(Syntax(plan["preset"], "yaml", theme="ansi_dark"), title="resolved preset", expand=False))
    spec = plan["spec"]
    console.print(f"[bold]model[/] RWKV-{spec['version']} L{spec['n_layer']} × C{spec['n_embd']} "
                  f"({spec.get('size_name', '')}) · method {plan['method']} · quant {plan['quant']}"
                  + (f" · objective {plan['objective']}" if plan.get("objective", "sft") != "sft" else ""))
    if plan["trainable_params"]:
        console.print(f"[bold]trainable[/] {plan['trainable_params']:,} parameters")
    passes = plan["passes_over_data"]
    console.print(f"[bold]steps[/] {plan['total_steps']:,} × {plan['tokens_per_step']:,} tokens = "
                  f"{plan['total_tokens']:,} tokens" + (f" ≈ {passes:.2f} passes over the data" if passes else ""))
    for warning in plan["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    console.print(f"[bold]VRAM[/] ≈ {plan['vram_gib']:.2f} GiB per GPU  "
                  + "  ".join(f"{k} {v:.2f}" for k, v in plan["vram_breakdown"].items() if v))
    if plan["gpus_fit"]:
        console.print(f"[bold]fits[/] {', '.join(plan['gpus_fit'][:6])}" + (" …" if len(plan["gpus_fit"]) > 6 else ""))
    console.print(f"\nNext: [bold]rwkv-tune train {p.source}[/]")
