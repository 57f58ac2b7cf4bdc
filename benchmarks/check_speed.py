"""Speed of the built-in BBj checker: lines per second on one CPU core.

Checks every BBj source in the corpus (default ../shared/bbj-corpus: real programs, the language
server's examples, snippets and builtin libraries) several times and reports the best run.
Files are read and decoded once, before timing; the timing covers `check_source` only.

    python benchmarks/check_speed.py [--corpus DIR] [--repeat 5] [--jsonl data.jsonl ...]

`--jsonl` adds the BBj code of ChatML answers (assistant messages, via `extract_bbj`), the shape
of the training and evaluation data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bbjtune.bbj.checker import check_source, decode_source
from bbjtune.bbj.extract import extract_bbj

SOURCE_EXTENSIONS = (".bbj", ".bbjt", ".src", ".bbl")


def corpus_texts(corpus: Path) -> list[str]:
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in SOURCE_EXTENSIONS and p.is_file())
    return [decode_source(p.read_bytes()) for p in files]


def chatml_texts(path: Path) -> list[str]:
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            for message in json.loads(line).get("messages", []):
                if message.get("role") == "assistant":
                    code = extract_bbj(message.get("content", ""))
                    if code:
                        texts.append(code)
    return texts


def main() -> None:
    default_corpus = Path(__file__).resolve().parents[1].parent / "shared" / "bbj-corpus"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=default_corpus)
    parser.add_argument("--jsonl", type=Path, nargs="*", default=[])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    texts = corpus_texts(args.corpus) if args.corpus.is_dir() else []
    for path in args.jsonl:
        texts += chatml_texts(path)
    if not texts:
        raise SystemExit(f"no BBj sources found (corpus {args.corpus} missing?)")
    lines = sum(len(t.splitlines()) for t in texts)
    chars = sum(len(t) for t in texts)

    best = float("inf")
    invalid = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        results = [check_source(t) for t in texts]
        best = min(best, time.perf_counter() - start)
        invalid = sum(any(d.severity == "error" for d in r) for r in results)

    print(f"python {platform.python_version()} on {platform.machine()}, one core")
    print(f"{len(texts)} sources, {lines:,} lines, {chars / 1e6:.2f} MB ({invalid} with errors)")
    print(f"best of {args.repeat}: {best:.3f} s = {lines / best:,.0f} lines/s, {chars / best / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
