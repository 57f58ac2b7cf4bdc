"""Sampling answers of very different lengths: padded batches against refilled segments, in one run.

Self-training's answers end at very different lengths (the real 0.5B, 2026-12-07: median 60 tokens,
one in ten at the 512-token limit). A padded batch (`sampling.engine: batched`) decodes until its
longest answer ends; `refill` decodes segments of `segment_tokens` and gives the rows of ended
answers to waiting ones. To give a random-initialised model such lengths, a set of ordinary tokens
ends an answer like <|im_end|> does, as many as make the chance to end at each token ln 2 / --median
(the logits of random weights are nearly flat; the measured lengths are reported). Every variant gets
the same model, prompts, stop tokens and sampling; "useful tokens/s" counts the tokens of the
answers (up to their end), which is what self-training uses.

    python benchmarks/refill_speed.py --smoke          # CPU, tiny model: checks the script, gives CPU ratios
    python benchmarks/refill_speed.py                  # CUDA: random-init Qwen2.5-Coder-0.5B shape
    python benchmarks/refill_speed.py --segments 32 64 128 --median 60 --max-new-tokens 512
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from generate_batching import load, suite_prompts, timed_generate  # noqa: E402 — same model and prompts


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU")
    p.add_argument(
        "--model", help="a model source; default: random-init 0.5B shape (CUDA), tiny:test (--smoke)"
    )
    p.add_argument("--prompts", type=int, help="prompts (default 256; smoke 16)")
    p.add_argument("--k", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, help="token limit per answer (default 512; smoke 96)")
    p.add_argument("--median", type=float, help="median answer length to aim at (default 60; smoke 12)")
    p.add_argument("--batch-tokens", type=int, help="token budget of a batch (default 1048576; smoke 8192)")
    p.add_argument(
        "--segments", type=int, nargs="+", help="refill segment sizes (default 64 128; smoke 8 16)"
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args()
    args.prompts = args.prompts or (16 if args.smoke else 256)
    args.max_new_tokens = args.max_new_tokens or (96 if args.smoke else 512)
    args.median = args.median or (12.0 if args.smoke else 60.0)
    args.batch_tokens = args.batch_tokens or (8192 if args.smoke else 1_048_576)
    args.segments = args.segments or ([8, 16] if args.smoke else [64, 128])
    return args


def stop_tokens(tok, rows: int, median: float, seed: int = 0) -> list[int]:
    """Ordinary token ids, as many as give each generated token a ln 2 / median chance to be one of them.

    `rows` is the model's output size: the random model samples over all of it (the default 0.5B shape
    has 151,936 rows whatever tokenizer the benchmark borrows)."""
    specials = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    ordinary = [i for i in range(rows) if i not in specials]
    count = max(1, round(len(ordinary) * math.log(2) / median))
    return random.Random(seed).sample(ordinary, count)


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from bbjtune.models.generate import Request, Sampling, TransformersBackend

    model, tok, model_name = load(args)
    requests = [Request(messages=[{"role": "user", "content": t}]) for t in suite_prompts(args.prompts)]
    sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, n=args.k, seed=1)
    extra = stop_tokens(tok, model.get_output_embeddings().weight.shape[0], args.median)

    def backend(segment: int | None) -> TransformersBackend:
        b = TransformersBackend(model, tok, batch_tokens=args.batch_tokens, refill_segment=segment)
        b.stop_ids = sorted({*b.stop_ids, *extra})
        return b

    warm = backend(None)
    timed_generate(warm, requests[:4], Sampling(temperature=0.0, max_new_tokens=4))  # CUDA context, kernels
    variants = {"batched": None, **{f"refill-{s}": s for s in args.segments}}
    rows = {}
    for name, segment in variants.items():
        b = backend(segment)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        lengths: list[int] = []
        seconds, tokens = timed_generate(b, requests, sampling, lengths)
        rows[name] = {
            "seconds": round(seconds, 2),
            "tokens": tokens,
            "useful_tokens_per_s": round(tokens / seconds, 1),
            "median_answer_tokens": statistics.median(lengths),
            "answers_at_the_limit": sum(n >= args.max_new_tokens for n in lengths),
        }
        if torch.cuda.is_available():
            rows[name]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(name, json.dumps(rows[name]), flush=True)
    base = rows["batched"]["useful_tokens_per_s"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    result = {
        "date": date.today().isoformat(),
        "device": device,
        "model": model_name,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompts": args.prompts,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "median_aimed": args.median,
        "stop_tokens": len(extra),
        "batch_tokens": args.batch_tokens,
        "variants": rows,
        "speedup_vs_batched": {n: round(r["useful_tokens_per_s"] / base, 2) for n, r in rows.items()},
        "command": "python benchmarks/refill_speed.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
