"""Benchmark `data prepare` against the pure-Python TRIE tokenizer: `python -m rwkv_tune.data.bench`.

Builds a varied synthetic corpus (English, CJK, code, emoji, whitespace runs) in a temp folder,
then, `--repeat` times in turn: the whole `prepare` (read, parse, tokenize, write binidx), the
`rwkv` package's TRIE_TOKENIZER and our tokenizer alone on the same texts. Prints the median MB/s
of UTF-8 text of each side by side, and the speed-up as the median of each run's ratio: runs taken
back to back share the machine's load, so a busy machine moves the ratio less than any one number.
Loading either tokenizer is not timed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PIECES = (
    "The quick brown fox jumps over the lazy dog. ", "In 1998, researchers measured 42.7% growth. ",
    "人工智能正在改变世界，语言模型可以写诗。", "日本語のテキストも含まれています。", "모델은 한국어도 처리합니다. ",
    "def f(x):\n    return x * 2  # double\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
    "🙂🚀✨ emoji run 👍🏽 ", "    \t   whitespace   runs\n\n\n", "Ünïcödé àccents — “quotes” ‘and’ dashes… ",
)
TARGET = 10.0


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a jsonl corpus of about `megabytes` MB; return its size in bytes."""
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            text = "".join(rng.choice(PIECES) for _ in range(rng.randint(20, 400)))
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    return size


def _texts(corpus: Path, budget: int | None = None) -> list[str]:
    """The `text` of each line, up to about `budget` bytes of the file."""
    texts = []
    with open(corpus, "rb") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if budget is not None:
                budget -= len(line)
                if budget <= 0:
                    break
    return texts


def _timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    """Print prepare's and the TRIE tokenizer's throughput on the same corpus, and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB for prepare")
    ap.add_argument("--trie-mb", type=float, default=5.0, help="MB of the same text given to the TRIE tokenizer")
    ap.add_argument("--corpus", type=Path, help="use this jsonl file ({'text': ...} per line) instead")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each measurement; medians are printed")
    ap.add_argument("--workers", type=int, help="prepare's worker processes (default: its own choice per run)")
    args = ap.parse_args(argv)

    import importlib.resources

    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from rwkv_tune.data.prepare import prepare
    from rwkv_tune.data.tokenizer import get_tokenizer

    tok = get_tokenizer()
    trie = TRIE_TOKENIZER(str(importlib.resources.files("rwkv") / "rwkv_vocab_v20230424.txt"))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or Path(tmp) / "corpus.jsonl"
        size = corpus.stat().st_size if args.corpus else make_corpus(corpus, args.mb)
        text_bytes = sum(len(t.encode("utf-8")) for t in _texts(corpus))
        sample = _texts(corpus, int(args.trie_mb * 1e6))
        sample_bytes = sum(len(t.encode("utf-8")) for t in sample)
        ours, alone, theirs, workers = [], [], [], []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            result = prepare([corpus], Path(tmp) / "out", workers=args.workers)
            ours.append(text_bytes / (time.perf_counter() - t0) / 1e6)
            workers.append(result.workers)
            theirs.append(sample_bytes / _timed(lambda: [trie.encode(s) for s in sample]) / 1e6)
            alone.append(sample_bytes / _timed(tok.encode_batch, sample) / 1e6)
    ratio = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
    alone_ratio = statistics.median(a / t for a, t in zip(alone, theirs, strict=True))
    runs = len(ours)
    print(f"corpus: {size / 1e6:.1f} MB jsonl ({text_bytes / 1e6:.1f} MB of text), "
          f"{result.stats['documents']:,} documents, {result.stats['tokens']:,} tokens; "
          f"prepare's worker processes in each run: {', '.join(map(str, workers))}")
    print(f"MB/s of UTF-8 text, median of {runs} run{'s' if runs > 1 else ''} (min..max):")
    rows = [(f"rwkv-tune data prepare, end to end ({text_bytes / 1e6:.1f} MB)", ours),
            (f"rwkv-tune tokenizer alone ({sample_bytes / 1e6:.1f} MB)", alone),
            (f"rwkv TRIE_TOKENIZER alone ({sample_bytes / 1e6:.1f} MB)", theirs)]
    width = max(len(label) for label, _ in rows)
    for label, v in rows:
        print(f"  {label.ljust(width)} {statistics.median(v):8.1f}   ({min(v):.1f}..{max(v):.1f})")
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"speed-up over TRIE (median of the runs' ratios): prepare end to end {ratio:.1f}x "
          f"({verdict} the {TARGET:.0f}x target), tokenizer alone {alone_ratio:.1f}x")


if __name__ == "__main__":
    main()
