"""`rwkv-tune data`: prepare (tokenize to binidx) and inspect training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rwkv_tune.cli._common import console, err_console, print_json, user_errors

app = typer.Typer(help="Prepare (tokenize to binidx) and inspect training data.", no_args_is_help=True)

FORMAT_HELP = ("auto | jsonl ({'text'}) | sft (prompt/response, alpaca) | chat ({'messages'}) | text (.txt) | "
               "utf-8 / utf-16le (plain text in that encoding) | numpy (.npy token ids) | uint16 (raw token file) | "
               "dummy (random tokens: INPUT is a size such as 1M or 1M,doc_len=512) | hf (Hugging Face dataset).")
SPLIT_HELP = "Hugging Face datasets split, e.g. train[:1000] (hub ids, save_to_disk folders, json/parquet files)."


def _source_options(fmt: str, fields: str | None, roles: str | None, template: str | None, text_docs: str,
                    skip_invalid: bool) -> Any:
    from rwkv_tune.data.records import ChatTemplate, SourceOptions
    from rwkv_tune.errors import ConfigError

    tpl: dict[str, Any] = {}
    for part in (roles or "").split(","):
        if not part.strip():
            continue
        key, sep, name = part.partition("=")
        if not sep or key.strip() not in ("user", "assistant", "system") or not name.strip():
            raise ConfigError(f"--roles entry {part!r} is not ROLE=NAME", "Use e.g. user=Question,assistant=Answer.")
        tpl[key.strip()] = name.strip()
    if template is not None:
        if "{role}" not in template or "{content}" not in template:
            raise ConfigError(f"--template {template!r} lacks {{role}} or {{content}}", "Use e.g. '{role}: {content}'.")
        tpl["turn"] = template.replace("\\n", "\n").replace("\\t", "\t")
        try:
            tpl["turn"].format(role="User", content="x")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"--template {template!r} has braces other than {{role}} and {{content}}",
                              "Double any literal brace: {{ }}.") from None
    names = tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else None
    from rwkv_tune.data.loader import source_options

    return source_options(SourceOptions(fields=names, template=ChatTemplate(**tpl), text_docs=text_docs,
                                        skip_invalid=skip_invalid), fmt)


def _stats_table(stats: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    table.add_row("documents", f"{stats['documents']:,}")
    table.add_row("tokens", f"{stats['tokens']:,}")
    if "length" in stats:
        ln = stats["length"]
        table.add_row("tokens / document", f"min {ln['min']}  p50 {ln['p50']}  p90 {ln['p90']}  p99 {ln['p99']}  "
                      f"max {ln['max']}  (mean {ln['mean']})")
    if "ctx_len" in stats:
        over = stats["over_ctx_len"]
        style = "yellow" if over else "green"
        table.add_row(f"longer than ctx_len {stats['ctx_len']}",
                      f"[{style}]{over:,} documents ({stats['over_ctx_len_tokens_lost']:,} tokens cut in pad mode)[/]")
    table.add_row(f"epoch_steps (micro_bsz {stats['micro_bsz']})", f"{stats['epoch_steps']:,}  (one full pass, pad/only)")
    get = stats.get("get")
    if get:
        if get["magic_prime"] is None:
            table.add_row("get mode", "[yellow]data smaller than 3×ctx_len: use pad mode[/]")
        else:
            table.add_row("get mode", f"magic_prime {get['magic_prime']:,}, epoch_steps {get['epoch_steps']:,}, "
                          f"covers {get['coverage']:.1%}")
    return table


@app.command()
def prepare(
    inputs: list[str] = typer.Argument(..., help="Data files or folders (.jsonl .json .txt .md .npy .parquet), a "
                                       "Hugging Face dataset id or save_to_disk folder, or a dummy size."),
    out: Path = typer.Option(..., "--out", "-o", help="Output prefix: writes PREFIX.bin, PREFIX.idx, PREFIX.meta.json."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    fields: str = typer.Option(None, "--fields", help="Field names: TEXT | PROMPT,RESPONSE | INSTRUCTION,INPUT,OUTPUT | MESSAGES."),
    roles: str = typer.Option(None, "--roles", help="Chat role names, e.g. user=User,assistant=Assistant,system=System."),
    template: str = typer.Option(None, "--template", help="How one turn is written (default '{role}: {content}')."),
    text_docs: str = typer.Option("blank", "--text-docs", help="Plain text: 'blank' (blank-line separated) or 'file' (one document per file)."),
    no_eod: bool = typer.Option(False, "--no-eod", help="Do not append the end-of-document token 0."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle the document order (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --shuffle (and for --format dummy)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad records (invalid JSON/UTF-8, missing fields) instead of failing."),
    split: str = typer.Option(None, "--split", help=SPLIT_HELP),
    ctx_len: int = typer.Option(None, "--ctx-len", help="Report documents longer than this and get-mode numbers."),
    micro_bsz: int = typer.Option(1, "--micro-bsz", help="Micro batch size for the epoch_steps shown."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Tokenize documents into PREFIX.bin/.idx (uint16, one item per document, end token 0 appended).

    Token ids (numpy, uint16, dummy) are converted as given, without a tokenizer or an added end token.
    """
    with user_errors():
        from rwkv_tune.data.prepare import prepare as run_prepare
        from rwkv_tune.errors import ConfigError

        if (ctx_len is not None and ctx_len < 1) or micro_bsz < 1:
            raise ConfigError(f"--ctx-len {ctx_len} / --micro-bsz {micro_bsz} must be 1 or more", "Pass positive numbers.")
        options = _source_options(fmt, fields, roles, template, text_docs, skip_invalid)
        result = run_prepare(inputs, out, options=options, eod=not no_eod, shuffle=shuffle, seed=seed,
                             ctx_len=ctx_len, micro_bsz=micro_bsz, progress=not as_json, type=fmt, split=split)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(_stats_table(result.stats, f"{result.bin_path.with_suffix('')}  ({', '.join(sorted(set(result.formats.values())))})"))
    for line in result.skipped[:10]:
        err_console.print(f"[yellow]skipped[/] {line}", soft_wrap=True, markup=True)
    if len(result.skipped) > 10:
        err_console.print(f"[yellow]… {len(result.skipped) - 10} more skipped[/]")
    if result.empty:
        err_console.print(f"[yellow]{result.empty} empty documents skipped[/]")
    console.print(f"wrote {result.bin_path}, {result.idx_path}, {result.meta_path}")


@app.command()
def inspect(
    source: str = typer.Argument(..., help="A binidx prefix (PREFIX, PREFIX.bin or PREFIX.idx) or a data file."),
    ctx_len: int = typer.Option(None, "--ctx-len", help="Training context length (default: no cut)."),
    micro_bsz: int = typer.Option(1, "--micro-bsz", help="Micro batch size for epoch_steps."),
    mode: str = typer.Option("pad", "--mode", help="dataload: pad | only | get."),
    loss_mask: str = typer.Option(None, "--loss-mask", help="pad | qa | sft | none (default: suggested by prepare)."),
    samples: int = typer.Option(3, "--samples", "-n", help="How many samples to show."),
    max_tokens: int = typer.Option(400, "--max-tokens", help="Tokens shown per sample."),
    fmt: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    fields: str = typer.Option(None, "--fields", help="Field names for a raw data file."),
    split: str = typer.Option(None, "--split", help=SPLIT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Show data stats and the first samples, with the tokens that carry loss in green."""
    with user_errors():
        from rwkv_tune.data.binidx import read_meta
        from rwkv_tune.data.loader import default_markers, open_documents
        from rwkv_tune.data.prepare import SUGGESTED_MASK
        from rwkv_tune.data.preview import preview, render
        from rwkv_tune.data.sampling import Batches
        from rwkv_tune.data.stats import data_stats
        from rwkv_tune.data.tokenizer import get_tokenizer
        from rwkv_tune.errors import ConfigError

        if mode == "get" and ctx_len is None:
            raise ConfigError("dataload get cuts ctx_len windows, but no --ctx-len was given", "Pass --ctx-len N.")
        options = _source_options(fmt, fields, None, None, "blank", False)
        docs = open_documents(source, options=options, type=fmt, split=split,
                              doc_len=ctx_len + 1 if ctx_len else None)
        meta = read_meta(source) if Path(source).suffix not in (".json", ".jsonl", ".txt", ".md") else None
        mask = loss_mask or (meta or {}).get("suggested_loss_mask") or SUGGESTED_MASK.get(options.fmt, "pad")
        view_ctx = ctx_len or max(int(docs.sizes.max()) - 1, 1)
        batches = Batches(docs, mode=mode, ctx_len=view_ctx, micro_bsz=1, loss_mask=mask, shuffle=False,
                          markers=default_markers(source, options), pad_multiple=1)
        stats = data_stats(docs.sizes, docs.num_tokens, ctx_len=ctx_len, micro_bsz=micro_bsz)
        shown = preview(batches, samples)
        tok = get_tokenizer()
    if as_json:
        print_json({"source": source, "loss_mask": mask, "mode": mode, **stats,
                    "samples": [s.to_dict(tok) for s in shown]})
        return
    console.print(_stats_table(stats, f"{docs.name}"))
    console.print(f"loss mask [bold]{mask}[/], dataload [bold]{mode}[/]: "
                  "[bold green]green[/] = learned (carries loss), [dim]dim[/] = context only")
    for s in shown:
        what = f"window at token {s.index:,}" if mode == "get" else f"document {s.index:,}"
        console.rule(f"{what} · {len(s.tokens)} tokens · {int(s.learned.sum())} learned", align="left")
        console.print(render(s, tok, max_tokens))
        if not s.learned.any():
            err_console.print("[yellow]this sample carries no loss (no assistant marker found?)[/]")
