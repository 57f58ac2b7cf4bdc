"""GGUF writing with tensors prepared one at a time against several at once, in one run.

The export writes q8_0 (and f16) itself: each tensor is read from safetensors, merged with the
adapter (streamed export) and encoded before it is written. `export/gguf.py` prepares up to
ENCODE_WORKERS tensors at once in threads. This times `write_gguf` on the same model with each
worker count in turn after one warm-up write (A B A B ..., `--repeat` rounds), checks that every file is byte-identical, and
reports the median seconds and the ratio to one worker.

    python benchmarks/gguf_write_speed.py --model random:qwen2.5-coder-3b --workers 1 2 --repeat 3
    python benchmarks/gguf_write_speed.py --model tiny:test --workers 1 2 --repeat 1   # seconds

Needs the Qwen2.5 tokenizer for `random:` models (BBJTUNE_TOKENIZER_SOURCE or fetch_qwen05b.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:qwen2.5-coder-3b", help="any model source (default: random 3B)")
    p.add_argument("--type", default="q8_0", choices=["f16", "q8_0"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeat", type=int, default=3, help="rounds over all worker counts")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    a = p.parse_args()

    from bbjtune.export.gguf import write_gguf
    from bbjtune.models.loading import resolve_source

    model = resolve_source(a.model).path
    times: dict[int, list[float]] = {w: [] for w in a.workers}
    digests: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="gguf-speed-") as tmp:
        out = Path(tmp) / f"model.{a.type}.gguf"
        write_gguf(model, out, a.type, workers=a.workers[0])  # warm-up, not counted: imports, page cache
        out.unlink()
        for r in range(a.repeat):
            for w in a.workers:
                t0 = time.perf_counter()
                write_gguf(model, out, a.type, workers=w)
                times[w].append(time.perf_counter() - t0)
                digests.add(sha256(out))
                size = out.stat().st_size
                out.unlink()
                print(f"round {r + 1}: {w} worker(s) {times[w][-1]:.1f} s", file=sys.stderr, flush=True)
    base = statistics.median(times[a.workers[0]])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "command": "python benchmarks/gguf_write_speed.py " + " ".join(sys.argv[1:]),
        "model": a.model,
        "type": a.type,
        "file_bytes": size,
        "identical_files": len(digests) == 1,
        "seconds": {str(w): [round(t, 2) for t in ts] for w, ts in times.items()},
        "median_s": {str(w): round(statistics.median(ts), 2) for w, ts in times.items()},
        "speedup_vs_first": {str(w): round(base / statistics.median(ts), 2) for w, ts in times.items()},
    }
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    if len(digests) != 1:
        sys.exit("the files differ between worker counts")


if __name__ == "__main__":
    main()
