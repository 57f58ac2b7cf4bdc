"""Sampling throughput for self-training: today's batching against token-budget batches, in one run.

Self-training samples k answers (8) per training prompt. Today's path batches a fixed number of
prompts (`batch_size`, 16 by default; 64 in the earlier eval benchmark's 1,501 tok/s row); the new
path fills each batch up to a token budget (`batch_tokens`: rows x (longest prompt + new tokens)),
and can pre-allocate a static KV cache so transformers compiles the decoding step. All variants use
`TransformersBackend`, the same model and the same prompts; every answer is forced to
--max-new-tokens tokens (`min_new_tokens`), so each variant does the same work per answer even
with a random-initialised model.

    python benchmarks/sample_speed.py --smoke      # CPU, tiny model, seconds (checks the script)
    python benchmarks/sample_speed.py              # CUDA: random-init Qwen2.5-Coder-0.5B shape
    python benchmarks/sample_speed.py --model Qwen/Qwen2.5-Coder-0.5B-Instruct

Variants (each on its own prompts count, reported with it; tokens/s is the figure to compare):
  old-eval     batch_size 64, one greedy answer per prompt (the earlier benchmark's setting)
  old-k        batch_size 16, k sampled answers per prompt (today's default batch for k samples)
  new-k        batch_tokens, k sampled answers per prompt
  new-k-static batch_tokens + static KV cache (compiled on CUDA): a cold run (with compiling) and a warm one
  continuous-k transformers' continuous batching (paged cache; the prompt prefilled once, k sequences forked)
A variant that fails (e.g. compiling on an unsupported setup) is reported with its error, not fatal.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from generate_batching import load, suite_prompts, timed_generate  # noqa: E402 — the same model and prompts as that benchmark


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--smoke", action="store_true", help="tiny model on CPU, few prompts (checks the script works)"
    )
    p.add_argument(
        "--model", help="a model source (hub id, directory, tiny:<preset>); default: random-init 0.5B shape"
    )
    p.add_argument("--prompts", type=int, help="prompts for the new variants (default 128; smoke 8)")
    p.add_argument("--old-prompts", type=int, help="prompts for the old variants (default 32; smoke 8)")
    p.add_argument("--k", type=int, default=8, help="samples per prompt (default 8)")
    p.add_argument("--max-new-tokens", type=int, help="tokens per answer (default 128; smoke 12)")
    p.add_argument(
        "--batch-tokens", type=int, help="token budget of the new batches (default 262144; smoke 2048)"
    )
    p.add_argument("--skip", nargs="*", default=[], help="variants to leave out (e.g. new-k-static)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args()
    args.prompts = args.prompts or (8 if args.smoke else 128)
    args.old_prompts = args.old_prompts or (8 if args.smoke else 32)
    args.max_new_tokens = args.max_new_tokens or (12 if args.smoke else 128)
    args.batch_tokens = args.batch_tokens or (2048 if args.smoke else 262144)
    return args


def timed(backend, requests, sampling) -> dict:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds, tokens = timed_generate(backend, requests, sampling)
    out = {
        "prompts": len(requests),
        "answers": len(requests) * sampling.n,  # every backend returns n completions per request
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
    }
    if torch.cuda.is_available():
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from bbjtune.models.generate import Request, Sampling, TransformersBackend

    model, tok, model_name = load(args)
    texts = suite_prompts(max(args.prompts, args.old_prompts))
    requests = [Request(messages=[{"role": "user", "content": t}]) for t in texts]
    greedy = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)
    sampled = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, n=args.k, seed=1)
    variants = {
        "old-eval": (lambda: TransformersBackend(model, tok, batch_size=64), args.old_prompts, greedy),
        "old-k": (lambda: TransformersBackend(model, tok, batch_size=16), args.old_prompts, sampled),
        "new-k": (
            lambda: TransformersBackend(model, tok, batch_tokens=args.batch_tokens),
            args.prompts,
            sampled,
        ),
        "new-k-static": (
            lambda: TransformersBackend(model, tok, batch_tokens=args.batch_tokens, static_cache=True),
            args.prompts,
            sampled,
        ),
        "continuous-k": (lambda: TransformersBackend(model, tok, continuous=True), args.prompts, sampled),
    }
    warm = TransformersBackend(model, tok, batch_size=8)
    timed(warm, requests[:8], Sampling(temperature=0.0, max_new_tokens=4))  # CUDA context, kernels
    model.generation_config.min_new_tokens = args.max_new_tokens  # same work per answer, EOS or not
    rows = {}
    for name, (make, n_prompts, sampling) in variants.items():
        if name in args.skip:
            continue
        try:
            backend = make()
            rows[name] = timed(backend, requests[:n_prompts], sampling)
            if name.endswith(
                ("static", "continuous-k")
            ):  # the first run compiled/captured; the second is steady
                rows[name] = {"cold": rows[name], **timed(backend, requests[:n_prompts], sampling)}
        except Exception as exc:  # noqa: BLE001 — a variant that cannot run is a result too
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        print(name, json.dumps(rows[name]), flush=True)

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    base = rows.get("old-k", {}).get("tokens_per_s")
    result = {
        "date": date.today().isoformat(),
        "device": device,
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "batch_tokens": args.batch_tokens,
        "variants": rows,
        "speedup_vs_old_k": {
            n: round(r["tokens_per_s"] / base, 2) for n, r in rows.items() if base and "tokens_per_s" in r
        },
        "command": "python benchmarks/sample_speed.py " + " ".join(sys.argv[1:]),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    cells = ", ".join(
        f"{n} {r['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in r else f"{n} failed"
        for n, r in rows.items()
    )
    print(
        f"\n| {result['date']} | {device} | {model_name}, {result['dtype']}, k={args.k} x {args.max_new_tokens} tokens, "
        f"budget {args.batch_tokens:,} | `{result['command'].strip()}` | {cells} |"
    )


if __name__ == "__main__":
    main()
