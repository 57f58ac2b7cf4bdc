"""Batched generation vs one prompt at a time, same model, same run, through bbjtune's own backend.

The evaluation generates hundreds of answers per model; this measures what batching (left
padding, similar lengths together) buys over looping one prompt at a time, with
`TransformersBackend` in both cases. Prompts are the project's eval suite prompts, repeated with a
variant number up to --prompts. Every answer is forced to --max-new-tokens tokens (the model's
`min_new_tokens`), so both ways do the same work even with a random-initialised model.

    python benchmarks/generate_batching.py --smoke        # CPU, tiny model, seconds
    python benchmarks/generate_batching.py                # CUDA: a random-init model the size of
                                                          # Qwen2.5-Coder-0.5B, 500 prompts
    python benchmarks/generate_batching.py --model Qwen/Qwen2.5-Coder-0.5B-Instruct

One at a time is slow, so by default it runs on the first --sequential-sample prompts and its
per-prompt time is multiplied up to all prompts (the printed figure says so); pass
--sequential-sample 0 to run it on every prompt. The result is printed as JSON (and written to --out)
with a Markdown table row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Qwen2.5-Coder-0.5B's architecture (config.json of the released model).
QWEN05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--smoke", action="store_true", help="tiny model on CPU, few prompts (checks the script works)"
    )
    p.add_argument(
        "--model", help="a model source (hub id, directory, tiny:<preset>); default: random-init 0.5B shape"
    )
    p.add_argument("--prompts", type=int, help="number of prompts (default 500; smoke 24)")
    p.add_argument("--max-new-tokens", type=int, help="tokens per answer (default 128; smoke 16)")
    p.add_argument("--batch-size", type=int, help="batch size of the batched run (default 64; smoke 8)")
    p.add_argument(
        "--sequential-sample",
        type=int,
        help="prompts run one at a time, then scaled to all (default 64; smoke: all; 0: all)",
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args()
    smoke = args.smoke
    args.prompts = args.prompts or (24 if smoke else 500)
    args.max_new_tokens = args.max_new_tokens or (16 if smoke else 128)
    args.batch_size = args.batch_size or (8 if smoke else 64)
    if args.sequential_sample is None:
        args.sequential_sample = 0 if smoke else 64
    return args


def suite_prompts(n: int) -> list[str]:
    base = []
    for path in sorted((REPO / "evals").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                base.append(json.loads(line)["prompt"])
            except (ValueError, KeyError, TypeError):
                continue
    if not base:
        base = ["Write a BBj program that prints the numbers 1 to 10.", "Explain BBj channels and UNT."]
    return [base[i % len(base)] + ("" if i < len(base) else f" (variant {i // len(base)})") for i in range(n)]


def load(args: argparse.Namespace):
    import torch

    from bbjtune.models import load_model, load_tokenizer
    from bbjtune.models.loading import torch_dtype

    cuda = torch.cuda.is_available()
    if args.smoke and not args.model:
        args.model = "tiny:test"
    if args.model:
        model = load_model(args.model, dtype=args.dtype, device_map="cuda" if cuda else None)
        tok = load_tokenizer(args.model)
        return model, tok, args.model
    if not cuda:
        sys.exit("the default model is 0.5B parameters: run it on a CUDA GPU, or pass --smoke or --model")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = load_tokenizer("tiny:test")  # any Qwen ChatML tokenizer: its ids all fit the 151,936-row embedding
    config = Qwen2Config(**QWEN05B, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch_dtype(args.dtype))
    return model, tok, "random-init Qwen2.5-Coder-0.5B shape"


def timed_generate(backend, requests, sampling, lengths: list[int] | None = None) -> tuple[float, int]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = dict(backend.generate(requests, sampling))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(c.tokens or 0 for comps in results.values() for c in comps)
    assert len(results) == len(requests)
    if lengths is not None:  # each answer's token count, for the caller's statistics
        lengths.extend(c.tokens or 0 for comps in results.values() for c in comps)
    return seconds, tokens


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from bbjtune.models.generate import Request, Sampling, TransformersBackend

    model, tok, model_name = load(args)
    params = sum(p.numel() for p in model.parameters())
    requests = [Request(messages=[{"role": "user", "content": p}]) for p in suite_prompts(args.prompts)]
    sampling = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)
    prompt_tokens = [
        len(
            tok.apply_chat_template(r.messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
                "input_ids"
            ]
        )
        for r in requests
    ]

    batched = TransformersBackend(model, tok, batch_size=args.batch_size)
    sequential = TransformersBackend(model, tok, batch_size=1)
    timed_generate(
        batched, requests[: min(len(requests), args.batch_size)], Sampling(temperature=0.0, max_new_tokens=4)
    )
    timed_generate(sequential, requests[:2], Sampling(temperature=0.0, max_new_tokens=4))  # warm-up
    model.generation_config.min_new_tokens = args.max_new_tokens  # same work per answer, EOS or not

    b_seconds, b_tokens = timed_generate(batched, requests, sampling)
    sample = requests if not args.sequential_sample else requests[: args.sequential_sample]
    s_seconds, s_tokens = timed_generate(sequential, sample, sampling)
    s_all = s_seconds * len(requests) / len(sample)
    speedup = s_all / b_seconds

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    result = {
        "date": date.today().isoformat(),
        "device": device,
        "model": model_name,
        "parameters": params,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompts": len(requests),
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "batch_size": args.batch_size,
        "batched": {
            "seconds": round(b_seconds, 2),
            "tokens": b_tokens,
            "tokens_per_s": round(b_tokens / b_seconds, 1),
            "prompts_per_s": round(len(requests) / b_seconds, 2),
        },
        "sequential": {
            "prompts_run": len(sample),
            "seconds": round(s_seconds, 2),
            "tokens": s_tokens,
            "tokens_per_s": round(s_tokens / s_seconds, 1),
            "seconds_for_all_prompts": round(s_all, 1),
            "extrapolated": len(sample) < len(requests),
        },
        "speedup": round(speedup, 1),
        "command": "python benchmarks/generate_batching.py " + " ".join(sys.argv[1:]),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    seq_note = f"one at a time {s_all:,.0f} s" + (
        f" (measured on {len(sample)} prompts, scaled)" if result["sequential"]["extrapolated"] else ""
    )
    print(
        f"\n| {result['date']} | {device} | {model_name}, {result['dtype']}, {len(requests)} prompts x "
        f"{args.max_new_tokens} tokens, batch {args.batch_size} | `{result['command'].strip()}` | "
        f"**{speedup:.1f}x**: batched {b_seconds:,.1f} s ({result['batched']['tokens_per_s']:,.0f} tok/s), {seq_note} |"
    )


if __name__ == "__main__":
    main()
