"""Score BBj samples (compile, patterns, facts) and sum them up into results.json's numbers.

Per sample (scores.jsonl): whether its code compiles, with the compiler's first errors; whether it
is clean (compiles and passes the tier 2 checks of `bbj/quality.py`: real BBjAPI methods, defined
labels, a statement, no runaway repetition, the right generation), with their findings; which
`must` patterns are missing and which `must_not` patterns match; whether a factual answer is right.
A sample that failed to generate (error) fails every check that applies to it.

Summaries: compile@k and clean@k by the unbiased estimator over each prompt's samples (prompts
whose answer is compiled), the share of samples passing all their patterns, the share of factual answers right;
overall and per category, BBj generation, suite and task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from bbjtune.bbj.quality import check_quality
from bbjtune.evaluate.compile import compile_code
from bbjtune.evaluate.estimator import mean_pass_at_k
from bbjtune.evaluate.patterns import score_patterns
from bbjtune.evaluate.suite import EvalCase

MISSING_SAMPLE = "no generation for this sample (the run was interrupted before it)"
MAX_FINDINGS_KEPT = 20


def score_bbj_samples(rows: Sequence[dict[str, Any]], cases: Sequence[EvalCase], n_samples: int,
                      compiler: str = "auto", on_done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One score per (case, sample); samples missing from `rows` are scored as failed."""
    by_key = {(r["suite"], r["id"], r["sample"]): r for r in rows}
    scores = []
    for case in cases:
        for s in range(n_samples):
            row = by_key.get((case.suite, case.id, s))
            scores.append(score_sample(case, s, row, compiler))
        if on_done:
            on_done(1)
    return scores


def score_sample(case: EvalCase, sample: int, row: dict[str, Any] | None, compiler: str) -> dict[str, Any]:
    error = MISSING_SAMPLE if row is None else row.get("error")
    output = "" if row is None or error else row.get("output") or ""
    score: dict[str, Any] = {"suite": case.suite, "id": case.id, "sample": sample, "category": case.category,
                             "generation": case.generation, "task": case.task, "error": error,
                             "compiles": None, "compiler": None, "compile_reason": "", "diagnostics": [],
                             "clean": None, "findings": [],
                             "patterns_ok": None, "missing": [], "forbidden": [], "factual": None}
    if case.compile:
        if error:
            score.update(compiles=False, compile_reason=f"no answer: {error}", clean=False)
        else:
            code = row.get("code")
            if code is None:  # rows written by other tools may lack the extracted code
                from bbjtune.bbj import extract_bbj
                code = extract_bbj(output)
            result = compile_code(code, compiler, f"{case.id}.bbj")
            score.update(compiles=result.compiles, compiler=result.compiler, compile_reason=result.reason,
                         diagnostics=result.diagnostics)
            findings = check_quality(code, generation=case.generation, must_not=case.must_not)
            score.update(clean=result.compiles and not any(f.severity == "error" for f in findings),
                         findings=[f.to_dict() for f in findings[:MAX_FINDINGS_KEPT]])
    pat = score_patterns(case, output)
    if pat.has_patterns:
        score.update(patterns_ok=pat.passed and not error, missing=pat.missing, forbidden=pat.forbidden)
    if case.answer is not None:
        score["factual"] = bool(pat.factual) and not error
    return score


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _at_k(per_prompt: dict[tuple[str, str], list[bool]], k_list: Sequence[int]) -> dict[str, float]:
    counts = [(len(v), sum(v)) for v in per_prompt.values()]
    out = {}
    for k in k_list:
        value = mean_pass_at_k(counts, k)
        if value is not None:
            out[str(k)] = round(value, 4)
    return out


def summarize_bbj(scores: Sequence[dict[str, Any]], k_list: Sequence[int]) -> dict[str, Any]:
    """The headline numbers of a set of sample scores."""
    per_prompt: dict[tuple[str, str], list[bool]] = defaultdict(list)
    per_prompt_clean: dict[tuple[str, str], list[bool]] = defaultdict(list)
    patterns, factual = [], []
    prompts = set()
    for s in scores:
        prompts.add((s["suite"], s["id"]))
        if s["compiles"] is not None:
            per_prompt[(s["suite"], s["id"])].append(bool(s["compiles"]))
            # scores written before tier 2 existed have no "clean": counted as unknown, not as failed
            if "clean" in s:
                per_prompt_clean[(s["suite"], s["id"])].append(bool(s["clean"]))
        if s["patterns_ok"] is not None:
            patterns.append(bool(s["patterns_ok"]))
        if s["factual"] is not None:
            factual.append(bool(s["factual"]))
    return {"n_prompts": len(prompts), "n_samples": len(scores), "n_compiled_prompts": len(per_prompt),
            "compile_at_k": _at_k(per_prompt, k_list), "clean_at_k": _at_k(per_prompt_clean, k_list),
            "patterns_pass_rate": _rate(patterns), "factual_accuracy": _rate(factual)}


def breakdown(scores: Sequence[dict[str, Any]], field: str, k_list: Sequence[int]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        groups[str(s.get(field))].append(s)
    return {name: summarize_bbj(group, k_list) for name, group in sorted(groups.items())}


def build_results(label: str, scores: Sequence[dict[str, Any]], k_list: Sequence[int], compiler: str,
                  humaneval: dict[str, Any] | None, errors: list[dict[str, Any]],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json (INTERFACES.md): headline numbers, breakdowns, HumanEval summary, errors."""
    head = summarize_bbj(scores, k_list)
    return {
        "model": label,
        "compiler": compiler,
        "compile_at_k": head["compile_at_k"],
        "clean_at_k": head["clean_at_k"],
        "patterns_pass_rate": head["patterns_pass_rate"],
        "factual_accuracy": head["factual_accuracy"],
        "by_category": breakdown(scores, "category", k_list),
        "by_generation": breakdown(scores, "generation", k_list),
        "by_suite": breakdown(scores, "suite", k_list),
        "by_task": breakdown(scores, "task", k_list),
        "humaneval": humaneval,
        "n_prompts": head["n_prompts"],
        "n_samples": head["n_samples"],
        "n_compiled_prompts": head["n_compiled_prompts"],
        "errors": errors,
        **(extra or {}),
    }
