"""Check every exported GGUF against the Hugging Face model it came from, with llama.cpp itself.

For each GGUF file: llama.cpp (through llama-cpp-python) must load it; it must split BBj samples into
exactly the token ids the HF tokenizer gives; its next-token logits on a fixed set of BBj prompts
must agree with the HF model's within a tolerance that depends on the quant type; and greedy
decoding from both must give the same text for the first tokens. Tolerances are stated relative
to the spread of the HF logits (their standard deviation over the vocabulary), so the same numbers
apply to a tiny test model and to a 7B model; the absolute figures are reported too.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bbjtune.errors import BbjtuneError
from bbjtune.export.quantize import quiet_llama_logs, require_llama_cpp
from bbjtune.models import load_model, load_tokenizer
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, render_chatml


@dataclass(frozen=True)
class Tolerance:
    """Limits for one quant type: max |Δlogit| / std(logits), mean |Δlogit| / std, top-1 agreement."""

    max_rel: float
    mean_rel: float
    top1: float
    greedy_tokens: int  # the first N greedy tokens must agree on every prompt (0: not required)


# Calibrated on Qwen2.5-Coder-0.5B-Instruct (bf16 merged model vs its GGUFs, 5 BBj prompts, ~150 k
# logits per position; benchmarks/RESULTS.md "Export") with 2-3x headroom: there f16 gave max 0.071×std,
# mean 0.0013×std, top-1 100 %; q8_0 0.32 / 0.024 / 98 %; q4_k_m 0.76 / 0.059 / 96 %. The max is a
# tail over millions of logits, so it gets the widest margin; the mean and top-1 carry the verdict.
# A wrong conversion (swapped tensors, wrong rope, wrong tokenizer) is off by orders of magnitude.
TOLERANCES: dict[str, Tolerance] = {
    "f32": Tolerance(0.05, 0.005, 0.99, 8),
    "f16": Tolerance(0.2, 0.01, 0.97, 8),
    "bf16": Tolerance(0.5, 0.03, 0.95, 0),
    "q8_0": Tolerance(0.8, 0.06, 0.93, 0),
    "q6_k": Tolerance(1.2, 0.1, 0.9, 0),
    "q5_k_m": Tolerance(1.6, 0.13, 0.87, 0),
    "q4_k_m": Tolerance(2.5, 0.2, 0.8, 0),
    "q4_0": Tolerance(3.0, 0.25, 0.75, 0),
    "q3_k_m": Tolerance(4.0, 0.35, 0.65, 0),
    "q2_k": Tolerance(6.0, 0.6, 0.4, 0),
}

SMALL_MODEL_BYTES = 64 * 2**20
SYSTEM = "You are an expert BBj (BASIS Business BASIC) developer."
PROMPTS = [
    render_chatml(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Write a BBj program that prints the numbers 1 to 10."},
        ],
        add_generation_prompt=True,
    ),
    render_chatml(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "How do I open a file for reading in BBj?"},
        ],
        add_generation_prompt=True,
    ),
    render_chatml(
        [{"role": "user", "content": "Create a BBjWindow with a button."}], add_generation_prompt=True
    ),
    'rem count the lines of a file\nch = unt\nopen (ch)"data.txt"\nwhile 1\n',
    "<|fim_prefix|>for i = 1 to 10\n<|fim_suffix|>\nnext i\n<|fim_middle|>",
]
TOKENIZER_SAMPLES = [
    '0010 REM Kundenliste drucken\r\n0020 LET A$="Größe: "+STR(X:"##0.00")\r\n0030 PRINT @(0,2),A$\r\n',
    "class public Customer\n    field public BBjString Name$\n    method public void setName(BBjString n$)\n"
    "        #Name$ = n$\n    methodend\nclassend\n",
    'sysgui = bbjapi().openSysGui("X0")\nwin! = sysgui!.addWindow(10,10,300,200,"Hello")\n'
    'btn! = win!.addButton(1,10,10,80,25,"OK")\nprocess_events\n',
    "\tx = 1\t\t; rem tabs and trailing spaces   \n\n\nseterr oops\nescape\noops: print err\n",
    '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n```bbj\nprint "hi"\n```<|im_end|>\n<|endoftext|>',
    '<|fim_prefix|>a$ = "x"<|fim_suffix|>print a$<|fim_middle|>',
    "emoji \U0001f600, é è, $0D0A$, 'CS', 1e-3, 0x1F, x%=-42",
]


@dataclass
class Reference:
    """What the HF model says about the prompts: token ids, logits per position, greedy continuations."""

    prompt_ids: list[list[int]]
    logits: list[np.ndarray]
    greedy: list[list[int]]
    sample_ids: list[list[int]]
    stop_ids: set[int]
    greedy_margins: list[list[float]] = field(
        default_factory=list
    )  # top-1 minus top-2 logit at each greedy step


def hf_reference(model_dir: str | Path, greedy_tokens: int = 16, model: Any = None) -> Reference:
    """Run the merged HF model on the fixed prompts (float32, CPU).

    `model`: the merged model already in memory (the streaming export merges none to disk);
    `model_dir` then only supplies the tokenizer.
    """
    import torch

    tokenizer = load_tokenizer(str(model_dir))
    model = (model if model is not None else load_model(str(model_dir), dtype="float32")).eval()
    stop = {tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT) if t in tokenizer.get_vocab()}
    prompt_ids, logits, greedy, margins = [], [], [], []
    threads = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_BYTES // 2
    torch.set_num_threads(1 if small else min(threads, default_threads()))  # see default_threads
    try:
        with torch.no_grad():
            for text in PROMPTS:
                ids = tokenizer(text, add_special_tokens=False).input_ids
                prompt_ids.append(ids)
                logits.append(model(torch.tensor([ids])).logits[0].float().numpy())
                tokens, steps = _greedy_hf(model, ids, greedy_tokens, stop)
                greedy.append(tokens)
                margins.append(steps)
    finally:
        torch.set_num_threads(threads)
    samples = [tokenizer(s, add_special_tokens=False).input_ids for s in TOKENIZER_SAMPLES]
    return Reference(prompt_ids, logits, greedy, samples, stop, margins)


def _greedy_hf(model, ids: list[int], n: int, stop: set[int]) -> tuple[list[int], list[float]]:
    """The greedy continuation, and at each step how far the chosen token's logit led the runner-up."""
    import torch

    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=sorted(stop) or None,
        pad_token_id=min(stop) if stop else None,
        return_dict_in_generate=True,
        output_logits=True,
    )
    margins = []
    for step in out.logits:
        top2 = torch.topk(step[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    return [int(t) for t in out.sequences[0, len(ids) :]], margins


def verify_gguf(path: str | Path, quant: str, ref: Reference, threads: int | None = None) -> dict[str, Any]:
    """Load `path` with llama.cpp and compare it with the HF reference; returns the report for this file."""
    llama_cpp = require_llama_cpp()
    path = Path(path)
    tol = TOLERANCES.get(quant, TOLERANCES["q2_k"])
    n_ctx = max(len(p) for p in ref.prompt_ids) + max(len(g) for g in ref.greedy) + 8
    threads = threads or default_threads(path)
    t0 = time.time()
    with quiet_llama_logs():
        try:
            llm = llama_cpp.Llama(
                str(path),
                n_ctx=max(n_ctx, 64),
                logits_all=True,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=max(n_ctx, 64),
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            return {"file": path.name, "quant": quant, "loads": False, "error": str(exc), "ok": False}
    load_s = time.time() - t0
    try:
        if llm.n_vocab() != ref.logits[0].shape[-1]:
            return {
                "file": path.name,
                "quant": quant,
                "loads": True,
                "ok": False,
                "error": f"vocabulary {llm.n_vocab()} != HF {ref.logits[0].shape[-1]}",
            }
        tokenization = [
            llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) == ids
            for s, ids in zip(TOKENIZER_SAMPLES, ref.sample_ids)
        ]
        diffs, top1, spreads, greedy_prefix = [], [], [], []
        for ids, hf_logits, hf_greedy in zip(ref.prompt_ids, ref.logits, ref.greedy):
            llm.reset()
            llm.eval(ids)
            gg = np.array(llm.scores[: len(ids)], dtype=np.float32)
            diffs.append(np.abs(gg - hf_logits))
            spreads.append(hf_logits.std(axis=-1))
            top1.append(gg.argmax(-1) == hf_logits.argmax(-1))
            greedy_prefix.append(
                _common_prefix(_greedy_llama(llm, ids, len(hf_greedy), ref.stop_ids), hf_greedy)
            )
    finally:
        llm.close()
    all_diff = np.concatenate([d.reshape(-1) for d in diffs])
    spread = float(np.mean(np.concatenate(spreads)))
    per_pos_max = np.concatenate([d.max(axis=-1) for d in diffs])
    report = {
        "file": path.name,
        "quant": quant,
        "loads": True,
        "bytes": path.stat().st_size,
        "load_s": round(load_s, 3),
        "tokenization_identical": all(tokenization),
        "tokenization_samples": len(tokenization),
        "positions": int(per_pos_max.size),
        "max_abs_diff": round(float(all_diff.max()), 5),
        "mean_abs_diff": round(float(all_diff.mean()), 6),
        "logit_std": round(spread, 5),
        "max_rel_diff": round(float(all_diff.max()) / spread, 5),
        "mean_rel_diff": round(float(all_diff.mean()) / spread, 6),
        "top1_agreement": round(float(np.concatenate(top1).mean()), 4),
        "greedy_tokens_compared": [len(g) for g in ref.greedy],
        "greedy_common_prefix": greedy_prefix,
        "greedy_identical": sum(p == len(g) for p, g in zip(greedy_prefix, ref.greedy)),
        # a divergence where the merged model's two best tokens were closer than twice the largest logit
        # difference measured is a tie that rounding broke, not a wrong conversion: seen with the
        # quickstart's briefly trained tiny model (margin 3e-05 against |Δlogit| 9e-04 in f16)
        "greedy_near_ties": [
            i
            for i, (p, g, m) in enumerate(zip(greedy_prefix, ref.greedy, ref.greedy_margins))
            if p < len(g) and p < len(m) and m[p] <= 2 * float(all_diff.max())
        ],
        "tolerance": asdict(tol),
    }
    report["failures"] = _failures(report, tol, ref)
    report["ok"] = not report["failures"]
    return report


def default_threads(path: str | Path | None = None) -> int:
    """Threads for llama.cpp and torch while verifying: all cores but one, and one for tiny models.

    Both libraries' worker threads spin-wait at every operation; when another process holds a
    core they wait for a descheduled thread each time. Measured on a busy 2-core machine
    (benchmarks/RESULTS.md, "Export"): Qwen2.5-0.5B verification 49 s on one thread, 622 s on
    both. Tiny models get one thread: their operations are too small to share.
    """
    if path is not None and Path(path).stat().st_size < SMALL_MODEL_BYTES:
        return 1
    return max(1, (os.cpu_count() or 2) - 1)


def _greedy_llama(llm, ids: list[int], n: int, stop: set[int]) -> list[int]:
    out: list[int] = []
    # llm.eval(ids) already ran: the last row of scores predicts the first new token
    scores = np.array(llm.scores[len(ids) - 1])
    for _ in range(n):
        tok = int(scores.argmax())
        out.append(tok)
        if tok in stop or len(out) == n:
            break
        llm.eval([tok])
        scores = np.array(llm.scores[llm.n_tokens - 1])
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _failures(report: dict[str, Any], tol: Tolerance, ref: Reference) -> list[str]:
    out = []
    if not report["tokenization_identical"]:
        out.append("llama.cpp tokenizes BBj samples differently from the HF tokenizer")
    if report["max_rel_diff"] > tol.max_rel:
        out.append(f"max logit difference {report['max_rel_diff']:.3g}×std exceeds {tol.max_rel}×std")
    if report["mean_rel_diff"] > tol.mean_rel:
        out.append(f"mean logit difference {report['mean_rel_diff']:.3g}×std exceeds {tol.mean_rel}×std")
    if report["top1_agreement"] < tol.top1:
        out.append(f"top-1 agreement {report['top1_agreement']:.3f} below {tol.top1}")
    if tol.greedy_tokens:
        ties = set(report.get("greedy_near_ties", ()))
        short = [
            p
            for i, (p, g) in enumerate(zip(report["greedy_common_prefix"], ref.greedy))
            if p < min(tol.greedy_tokens, len(g)) and i not in ties
        ]
        if short:
            out.append(
                f"greedy text diverges within the first {tol.greedy_tokens} tokens on {len(short)} prompt(s)"
            )
    return out


def gguf_reference(
    path: str | Path, tokenizer_dir: str | Path, greedy_tokens: int = 16, threads: int | None = None
) -> tuple[Reference, dict[str, Any]]:
    """The reference from a 16-bit GGUF run by llama.cpp, when the HF model does not fit in RAM.

    Prompts and tokenizer samples are split by the HF tokenizer (the file must split them the same
    way: that is checked and reported); logits and greedy continuations are llama.cpp's on this file.
    Returns the reference and this file's own report (it cannot be compared with itself).
    """
    llama_cpp = require_llama_cpp()
    path = Path(path)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    stop = {tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT) if t in tokenizer.get_vocab()}
    prompt_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in PROMPTS]
    samples = [tokenizer(s, add_special_tokens=False).input_ids for s in TOKENIZER_SAMPLES]
    n_ctx = max(64, max(len(p) for p in prompt_ids) + greedy_tokens + 8)
    threads = threads or default_threads(path)
    t0 = time.time()
    with quiet_llama_logs():
        llm = llama_cpp.Llama(
            str(path), n_ctx=n_ctx, logits_all=True, n_threads=threads, n_threads_batch=threads,
            n_batch=n_ctx, verbose=False,
        )  # fmt: skip
    load_s = time.time() - t0
    logits, greedy, margins = [], [], []
    try:
        tokenization = [
            llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) == ids
            for s, ids in zip(TOKENIZER_SAMPLES, samples)
        ]
        for ids in prompt_ids:
            llm.reset()
            llm.eval(ids)
            logits.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
            tokens, steps = [], []
            scores = np.array(llm.scores[len(ids) - 1])
            for _ in range(greedy_tokens):
                second, first = np.partition(scores, -2)[-2:]
                steps.append(float(first - second))
                tokens.append(int(scores.argmax()))
                if tokens[-1] in stop or len(tokens) == greedy_tokens:
                    break
                llm.eval([tokens[-1]])
                scores = np.array(llm.scores[llm.n_tokens - 1])
            greedy.append(tokens)
            margins.append(steps)
    finally:
        llm.close()
    own = {
        "file": path.name,
        "loads": True,
        "reference": True,
        "bytes": path.stat().st_size,
        "load_s": round(load_s, 3),
        "tokenization_identical": all(tokenization),
        "tokenization_samples": len(tokenization),
        "failures": []
        if all(tokenization)
        else ["llama.cpp tokenizes BBj samples differently from the HF tokenizer"],
    }
    own["ok"] = not own["failures"]
    return Reference(prompt_ids, logits, greedy, samples, stop, margins), own


def verify_all(
    model_dir: str | Path,
    ggufs: dict[str, Path],
    threads: int | None = None,
    *,
    model: Any = None,
    reference_gguf: tuple[str, Path] | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    """Verify each {quant: path}; returns the verify.json content (raises nothing on a mismatch).

    The reference is the merged HF model (from `model_dir`, or `model` when it is in memory), or,
    with `reference_gguf` = (quant, path), that 16-bit GGUF run by llama.cpp (`why` says why).
    """
    t0 = time.time()
    if reference_gguf is None:
        ref = hf_reference(model_dir, model=model)
        results = {quant: verify_gguf(path, quant, ref, threads) for quant, path in ggufs.items()}
        described = {"reference": str(model_dir), "reference_kind": "hf"}
    else:
        ref_quant, ref_path = reference_gguf
        ref, own = gguf_reference(ref_path, model_dir, threads=threads)
        results = {
            quant: {**own, "quant": quant} if quant == ref_quant else verify_gguf(path, quant, ref, threads)
            for quant, path in ggufs.items()
        }
        described = {
            "reference": Path(ref_path).name,
            "reference_kind": "gguf",
            "reference_quant": ref_quant,
            "reference_why": why,
            "reference_tokenization_identical": own["tokenization_identical"],
        }
        if ref_quant not in ggufs and not own["ok"]:
            results[f"{ref_quant} (reference)"] = {**own, "quant": ref_quant}
    return {
        **described,
        "prompts": len(PROMPTS),
        "tokenizer_samples": len(TOKENIZER_SAMPLES),
        "results": results,
        "ok": all(r["ok"] for r in results.values()),
        "seconds": round(time.time() - t0, 2),
    }


def raise_on_failure(report: dict[str, Any]) -> None:
    bad = {q: r for q, r in report["results"].items() if not r["ok"]}
    lora = report.get("lora_gguf") or {}
    if lora.get("lora_ok") is False:
        bad["lora"] = {
            "failures": ["base + GGUF LoRA adapter does not compute what the merged model computes"]
        }
    if bad:
        text = "; ".join(
            f"{q}: {', '.join(r.get('failures') or [r.get('error', 'failed')])}" for q, r in bad.items()
        )
        good = [q for q, r in report["results"].items() if r["ok"]]
        raise BbjtuneError(
            f"GGUF verification failed — {text}",
            "see verify.json in the export directory; the files were kept for inspection"
            + (f"; {', '.join(good)} passed" if good else ""),
        )


def compare_lora_with_merged(
    base: Path, lora: Path, merged: Path, threads: int | None = None
) -> dict[str, Any]:
    """llama.cpp with base + GGUF LoRA adapter must compute what the merged f16 GGUF computes."""
    llama_cpp = require_llama_cpp()
    ids = list(range(0, 32))
    scores = {}
    with quiet_llama_logs():
        for label, kwargs in (
            ("lora", {"model_path": str(base), "lora_path": str(lora)}),
            ("merged", {"model_path": str(merged)}),
            ("base", {"model_path": str(base)}),
        ):
            n = threads or default_threads(kwargs["model_path"])
            llm = llama_cpp.Llama(
                **kwargs, n_ctx=64, logits_all=True, n_threads=n, n_threads_batch=n, verbose=False
            )
            try:
                llm.eval(ids)
                scores[label] = np.array(llm.scores[: len(ids)], dtype=np.float32)
            finally:
                llm.close()
    lora_vs_merged = float(np.abs(scores["lora"] - scores["merged"]).max())
    base_vs_merged = float(np.abs(scores["base"] - scores["merged"]).max())
    # the adapter must account for (nearly) all of the change the merge made
    ok = lora_vs_merged <= 0.1 * max(base_vs_merged, 1e-6) or lora_vs_merged < 1e-3
    return {
        "lora_vs_merged_max_abs_diff": round(lora_vs_merged, 5),
        "base_vs_merged_max_abs_diff": round(base_vs_merged, 5),
        "lora_ok": bool(ok),
    }
