"""What the checking gateway adds to a request's latency, without and with best-of-N retries.

Starts `bbjtune serve gguf` on a GGUF and two gateways in front of it (`--best-of 1` and
`--best-of K`), then sends each prompt (the first --prompts of evals/bbj-core.jsonl) three ways, one
after another: straight to the model server (the baseline), through the best-of-1 gateway, and
through the best-of-K gateway. All three run in the same process on the same machine, so the ratios
compare like with like.

Two figures per gateway:
- client latency and its ratio to the direct request (includes retries: each one is a whole
  generation);
- the gateway's own overhead, from its log: the request's latency minus the time spent waiting for
  the model server. This is independent of the model's speed and of llama.cpp's prompt cache
  (which makes a repeated prompt cheaper for whoever asks second; the order of the three ways
  rotates per prompt so no way always goes first).

    python benchmarks/gateway_latency.py                      # the tiny test model: proxy overhead alone
    python benchmarks/gateway_latency.py --gguf ~/.cache/bbjtune/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

Prints JSON (written to --out too) and Markdown table rows for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from serving import free_port, start_bbjtune

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are an expert BBj developer. Answer with working BBj code in a ```bbj block."


def tiny_gguf(folder: Path) -> Path:
    from bbjtune.export.gguf import write_gguf
    from bbjtune.models.tiny import build_tiny

    return write_gguf(build_tiny("tiny:test", cache_dir=folder / "tiny"), folder / "bbj-tiny.f16.gguf", "f16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, help="model to serve (default: the tiny test model, built here)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--best-of", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from bbjtune.gateway_log import read_log

    prompts = [json.loads(line)["prompt"] for line in (REPO / "evals" / "bbj-core.jsonl").open()][
        : args.prompts
    ]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        gguf = args.gguf or tiny_gguf(tmp)
        up, g1, gk = free_port(), free_port(), free_port()
        procs = [
            start_bbjtune(
                [
                    "serve",
                    "gguf",
                    str(gguf),
                    "--port",
                    str(up),
                    "--n-ctx",
                    "2048",
                    "--threads",
                    str(args.threads),
                ],
                f"http://127.0.0.1:{up}/v1/models",
            )
        ]
        upstream = f"http://127.0.0.1:{up}/v1"
        for port, n in ((g1, 1), (gk, args.best_of)):
            procs.append(
                start_bbjtune(
                    [
                        "serve",
                        "gateway",
                        "--upstream",
                        upstream,
                        "--port",
                        str(port),
                        "--best-of",
                        str(n),
                        "--compiler",
                        "builtin",
                        "--log",
                        str(tmp / f"log-{n}.sqlite"),
                    ],
                    f"http://127.0.0.1:{port}/v1/models",
                )
            )
        ways = {
            "direct": upstream,
            "gateway best-of-1": f"http://127.0.0.1:{g1}/v1",
            f"gateway best-of-{args.best_of}": f"http://127.0.0.1:{gk}/v1",
        }
        times: dict[str, list[float]] = {w: [] for w in ways}
        try:
            with httpx.Client(timeout=600, trust_env=False) as client:
                client.post(
                    f"{upstream}/chat/completions",
                    json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                )  # load the model
                for i, prompt in enumerate(prompts):
                    order = list(ways)[i % 3 :] + list(ways)[: i % 3]
                    for way in order:
                        body = {
                            "model": "m",
                            "max_tokens": args.max_tokens,
                            "temperature": 0,
                            "seed": 0,
                            "messages": [
                                {"role": "system", "content": SYSTEM},
                                {"role": "user", "content": prompt},
                            ],
                        }
                        t0 = time.perf_counter()
                        res = client.post(f"{ways[way]}/chat/completions", json=body)
                        res.raise_for_status()
                        times[way].append(time.perf_counter() - t0)
                    print(
                        f"prompt {i + 1}/{len(prompts)} done: "
                        + ", ".join(f"{w} {times[w][-1]:.1f} s" for w in ways),
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
        logs = {
            "gateway best-of-1": read_log(tmp / "log-1.sqlite"),
            f"gateway best-of-{args.best_of}": read_log(tmp / f"log-{args.best_of}.sqlite"),
        }

    base = statistics.median(times["direct"])
    result = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "model": gguf.name if args.gguf else "tiny:test (f16 GGUF)",
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "command": "python benchmarks/gateway_latency.py " + " ".join(sys.argv[1:]),
        "direct_median_s": round(base, 4),
        "gateways": {},
    }
    for way, rows in logs.items():
        overhead = [r["latency_ms"] - r["upstream_ms"] for r in rows]
        result["gateways"][way] = {
            "median_s": round(statistics.median(times[way]), 4),
            "ratio_to_direct": round(statistics.median(times[way]) / base, 3),
            "overhead_ms_median": round(statistics.median(overhead), 2),
            "overhead_ms_max": round(max(overhead), 2),
            "upstream_ms_median": round(statistics.median(r["upstream_ms"] for r in rows), 2),
            "check_ms_median": round(statistics.median(r["check_ms"] for r in rows), 2),
            "mean_attempts": round(statistics.mean(r["attempts"] for r in rows), 2),
            "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "fail", "no-code")},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for way, g in result["gateways"].items():
        print(
            f"| {result['date']} | {result['machine']} | {result['model']} | {way} | {result['prompts']} | "
            f"{base:.3f} s | {g['median_s']:.3f} s | {g['ratio_to_direct']:.2f}x | {g['overhead_ms_median']:.1f} ms "
            f"(max {g['overhead_ms_max']:.1f}) | {g['check_ms_median']:.1f} ms | {g['mean_attempts']} | "
            f"{g['verdicts']['pass']}/{g['verdicts']['fail']}/{g['verdicts']['no-code']} |"
        )


if __name__ == "__main__":
    main()
