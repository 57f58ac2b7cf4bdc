"""experiments/real-0.5b/results.json: one machine-readable row per evaluated recipe.

    python experiments/real-0.5b/results.py runs/real-0.5b [--out experiments/real-0.5b/results.json]

Reads every runs/real-0.5b/eval/<label>/ that has results.json, cases.jsonl and generations.jsonl
and writes `{"rows": [...]}`, one row per label, base first. Rates are percent:

    recipe               "base", "sft", "+replay", "+rft", "+dpo", ... (the label when unknown)
    label                the eval directory's name
    compile_at_1         compile@1 on the BBj suites
    clean_at_1           the share of prompts whose first answer compiles AND is clean (train.verdict:
                         tier 2's checks, bbjtune.bbj.quality.assess)
    clean_checks         which checks decided clean_at_1 ("checker+quality")
    patterns_pass_rate   answers passing their case's must/must_not patterns
    factual_accuracy     factual questions answered right
    humaneval_pass_at_1  HumanEval pass@1 (null when not run for that label)
    median_answer_chars  median length of the BBj answers
    hit_token_limit      BBj answers that ran to max_new_tokens (count), and their share
    by_suite             compile@1 and clean@1 per suite

Scores come from the committed files alone, so anyone can re-score the generations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

# eval label → recipe name, in table order (run.sh writes these labels)
RECIPES = {
    "base": "base",
    "stage1": "stage 1 only",
    "tuned": "sft",
    "sft-replay-20": "+replay",
    "sft-replay": "+replay",
    "rft": "+rft",
    "rft-dpo": "+dpo",
    "dpo": "+dpo (on sft)",
    "dpo-greedy": "+dpo on sft+replay, greedy answers rejected first",
    "dpo-greedy-r2": "+dpo on sft+replay, greedy answers rejected first, round 2",
    "grpo": "+grpo",
    "tuned-q8_0": "sft q8_0 gguf",
    "tuned-q4_k_m": "sft q4_k_m gguf",
    "best-q8_0": "best q8_0 gguf",
    "rft-dpo-q8_0": "+dpo q8_0 gguf (llama.cpp)",
    "rft-dpo-q8_0-rp1.1": "+dpo q8_0 gguf (llama.cpp), repeat_penalty 1.1",
    "rft-dpo-q8_0-gateway-bo3": "+dpo q8_0 gguf through the checking gateway (best-of-3, loop cut)",
    "base-q4_k_m": "base q4_k_m gguf",
    "sft-replay-20-reference": "+replay, + factual pairs from the builtins reference",
    "gateway-bo3-resample": "q8_0 gguf through the checking gateway (best-of-3, resample)",
    "gateway-bo3-repair": "q8_0 gguf through the checking gateway (best-of-3, repair)",
}


def pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def clean_rates(eval_dir: Path) -> tuple[dict[str, dict[str, float | None]], str, list[int]]:
    """clean@1 and compile@1 per suite from the first sample of each compiled case; answer lengths."""
    from bbjtune.artifacts import read_complete_jsonl
    from bbjtune.evaluate.suite import EvalCase
    from bbjtune.train.verdict import CHECKS, judge

    cases = [
        EvalCase.from_dict(json.loads(line))
        for line in (eval_dir / "cases.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = {
        (r["suite"], r["id"]): r
        for r in read_complete_jsonl(eval_dir / "generations.jsonl")
        if r["sample"] == 0
    }
    per_suite: dict[str, list[tuple[bool, bool]]] = {}
    lengths, ran_on = [], 0
    for case in cases:
        row = rows.get(case.key)
        output = (row or {}).get("output") or ""
        lengths.append(len(output))
        ran_on += bool(row) and row.get("finish_reason") == "length"
        if not case.compile:
            continue
        v = (
            judge(output, [], finish_reason=(row or {}).get("finish_reason") or "stop")
            if row and not row.get("error")
            else None
        )
        per_suite.setdefault(case.suite, []).append((bool(v and v.compiles), bool(v and v.clean)))
    table = {
        suite: {
            "compile_at_1": pct(sum(c for c, _ in v) / len(v)),
            "clean_at_1": pct(sum(k for _, k in v) / len(v)),
        }
        for suite, v in per_suite.items()
    }
    allv = [x for v in per_suite.values() for x in v]
    table["all"] = {
        "compile_at_1": pct(sum(c for c, _ in allv) / len(allv)) if allv else None,
        "clean_at_1": pct(sum(k for _, k in allv) / len(allv)) if allv else None,
    }
    return table, CHECKS, [len(cases), ran_on, *lengths]


def row_for(eval_dir: Path) -> dict:
    results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    table, checks, (n_cases, ran_on, *lengths) = clean_rates(eval_dir)
    humaneval = (results.get("humaneval") or {}).get("pass_at_1")
    label = eval_dir.name
    return {
        "recipe": RECIPES.get(label, label),
        "label": label,
        "compile_at_1": pct(results["compile_at_k"].get("1")),
        "clean_at_1": pct(results["clean_at_k"].get("1"))
        if "clean_at_k" in results
        else table["all"]["clean_at_1"],
        "clean_checks": "results.json" if "clean_at_k" in results else checks,
        "patterns_pass_rate": pct(results.get("patterns_pass_rate")),
        "factual_accuracy": pct(results.get("factual_accuracy")),
        "humaneval_pass_at_1": pct(humaneval),
        "median_answer_chars": statistics.median(lengths) if lengths else None,
        "hit_token_limit": ran_on,
        "hit_token_limit_share": pct(ran_on / n_cases) if n_cases else None,
        "by_suite": _suites(results)
        if "clean_at_k" in results
        else {k: v for k, v in table.items() if k != "all"},
    }


def _suites(results: dict) -> dict[str, dict[str, float | None]]:
    """compile@1 and clean@1 per suite as the evaluation scored them (clean there includes the case's
    generation fit, which the self-training verdict alone does not know)."""
    return {
        suite: {"compile_at_1": pct(v["compile_at_k"].get("1")), "clean_at_1": pct(v["clean_at_k"].get("1"))}
        for suite, v in (results.get("by_suite") or {}).items()
        if "clean_at_k" in v
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run directory (runs/real-0.5b)")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    args = p.parse_args()
    eval_root = args.run / "eval"
    dirs = (
        [
            d
            for d in sorted(eval_root.iterdir())
            if (d / "results.json").exists() and (d / "cases.jsonl").exists()
        ]
        if eval_root.is_dir()
        else []
    )
    if not dirs:
        sys.exit(f"{eval_root}: no evaluated model (run run.sh's eval steps first)")
    order = list(RECIPES)
    dirs.sort(key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
    rows = [row_for(d) for d in dirs]
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n", encoding="utf-8")
    for r in rows:
        print(
            f"{r['recipe']:18s} compile@1 {r['compile_at_1']}  clean@1 {r['clean_at_1']}  patterns "
            f"{r['patterns_pass_rate']}  HumanEval {r['humaneval_pass_at_1']}  median chars {r['median_answer_chars']}"
            f"  hit limit {r['hit_token_limit']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
