"""Benchmark `data prepare` against the pure-Python TRIE tokenizer: `python -m rwkv_tune.data.bench`.

Builds a varied synthetic corpus (English, CJK, code, emoji, whitespace runs) in a temp folder,
times the whole `prepare` (read, parse, tokenize, write binidx), then our tokenizer alone and the
`rwkv` package's TRIE_TOKENIZER on the same texts, and prints MB/s of UTF-8 text.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

PIECES = (
    "The quick brown fox jumps over the lazy dog. ", "In 1998, researchers measured 42.7% growth. ",
    "人工智能正在改变世界，语言模型可以写诗。", "日本語のテキストも含まれています。", "모델은 한국어도 처리합니다. ",
    "def f(x):\n    return x * 2  # double\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
    "🙂🚀✨ emoji run 👍🏽 ", "    \t   whitespace   runs\n\n\n", "Ünïcödé àccents — “quotes” ‘and’ dashes… ",
)


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


def main(argv: list[str] | None = None) -> None:
    """Print prepare's and the TRIE tokenizer's throughput on the same corpus."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB for prepare")
    ap.add_argument("--trie-mb", type=float, default=5.0, help="MB of the same text given to the TRIE tokenizer")
    ap.add_argument("--corpus", type=Path, help="use this jsonl file ({'text': ...} per line) instead")
    args = ap.parse_args(argv)

    from rwkv_tune.data.prepare import prepare
    from rwkv_tune.data.tokenizer import get_tokenizer

    get_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or Path(tmp) / "corpus.jsonl"
        size = corpus.stat().st_size if args.corpus else make_corpus(corpus, args.mb)
        t0 = time.perf_counter()
        result = prepare([corpus], Path(tmp) / "out")
        ours = size / (time.perf_counter() - t0) / 1e6

        import importlib.resources

        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        vocab = importlib.resources.files("rwkv") / "rwkv_vocab_v20230424.txt"
        trie = TRIE_TOKENIZER(str(vocab))
        texts, budget = [], int(args.trie_mb * 1e6)
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line)["text"])
                budget -= len(line.encode("utf-8"))
                if budget <= 0:
                    break
        trie_bytes = sum(len(t.encode("utf-8")) for t in texts)
        t0 = time.perf_counter()
        for t in texts:
            trie.encode(t)
        theirs = trie_bytes / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        get_tokenizer().encode_batch(texts)
        tok_only = trie_bytes / (time.perf_counter() - t0) / 1e6
    print(f"corpus: {size / 1e6:.1f} MB jsonl, {result.stats['documents']:,} documents, {result.stats['tokens']:,} tokens")
    print(f"rwkv-tune data prepare (read+tokenize+write): {ours:8.1f} MB/s")
    print(f"rwkv-tune tokenizer alone (same {trie_bytes / 1e6:.1f} MB):    {tok_only:8.1f} MB/s")
    print(f"rwkv TRIE_TOKENIZER alone (same {trie_bytes / 1e6:.1f} MB):    {theirs:8.1f} MB/s")
    print(f"speed-up: prepare end to end {ours / theirs:.1f}x, tokenizer alone {tok_only / theirs:.1f}x")


if __name__ == "__main__":
    main()
