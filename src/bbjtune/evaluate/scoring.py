"""Score BBj samples (compile, patterns, facts) and sum them up into results.json's numbers.

Per sample (scores.jsonl): whether its code compiles, with the compiler's first errors; whether it
is clean (compiles and passes the tier 2 checks of `bbj/quality.py`: real BBjAPI methods, defined
labels, a statement, no runaway repetition, the right generation), with their findings; which
`must` patterns are missing and which `must_not` patterns match; whether a factual answer is right.
A sample that failed to generate (error) fails every check that applies to it.

Summaries: every metric of evaluate/metrics.py (compile@k and clean@k by the unbiased estimator
over each prompt's samples, the share of samples passing all their patterns, the share of factual
answers right); overall and per category, BBj generation, suite and task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from bbjtune.bbj import extract_bbj
from bbjtune.bbj.quality import assess
from bbjtune.bbj.compile import compile_answer
from bbjtune.evaluate.metrics import METRICS, headline
from bbjtune.evaluate.patterns import score_patterns
from bbjtune.evaluate.suite import EvalCase

MISSING_SAMPLE = "no generation for this sample (the run was interrupted before it)"
MAX_FINDINGS_KEPT = 20


def score_bbj_samples(
    rows: Sequence[dict[str, Any]],
    cases: Sequence[EvalCase],
    n_samples: int,
    compiler: str = "auto",
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
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
    score: dict[str, Any] = {
        "suite": case.suite,
        "id": case.id,
        "sample": sample,
        "category": case.category,
        "generation": case.generation,
        "task": case.task,
        "error": error,
        "compiles": None,
        "compiler": None,
        "compile_reason": "",
        "diagnostics": [],
        "clean": None,
        "findings": [],
        "patterns_ok": None,
        "missing": [],
        "forbidden": [],
        "factual": None,
    }
    if case.compile:
        if error:
            score.update(compiles=False, compile_reason=f"no answer: {error}", clean=False)
        else:
            code = row.get("code")
            if code is None:  # rows written by other tools may lack the extracted code
                code = extract_bbj(output)
            verdict = assess(
                code,
                generation=case.generation,
                must_not=case.must_not,
                compiler=compiler,
                filename=f"{case.id}.bbj",
            )
            score.update(
                compiles=verdict.compiles,
                compiler=verdict.compiler,
                compile_reason=verdict.compile_reason,
                diagnostics=verdict.diagnostics,
                clean=verdict.clean,
                findings=[f.to_dict() for f in verdict.findings[:MAX_FINDINGS_KEPT]],
            )
    pat = score_patterns(case, output)
    if pat.has_patterns:
        score.update(patterns_ok=pat.passed and not error, missing=pat.missing, forbidden=pat.forbidden)
    if case.answer is not None:
        score["factual"] = bool(pat.factual) and not error
    return score


def summarize_bbj(scores: Sequence[dict[str, Any]], k_list: Sequence[int]) -> dict[str, Any]:
    """The headline numbers of a set of sample scores: counts, then every metric of metrics.METRICS."""
    compiled = {(s["suite"], s["id"]) for s in scores if s["compiles"] is not None}
    return {
        "n_prompts": len({(s["suite"], s["id"]) for s in scores}),
        "n_samples": len(scores),
        "n_compiled_prompts": len(compiled),
        **headline(scores, k_list),
    }


def breakdown(scores: Sequence[dict[str, Any]], field: str, k_list: Sequence[int]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        groups[str(s.get(field))].append(s)
    return {name: summarize_bbj(group, k_list) for name, group in sorted(groups.items())}


def build_results(
    label: str,
    scores: Sequence[dict[str, Any]],
    k_list: Sequence[int],
    compiler: str,
    humaneval: dict[str, Any] | None,
    errors: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """results.json (INTERFACES.md): headline numbers, breakdowns, HumanEval summary, errors."""
    head = summarize_bbj(scores, k_list)
    return {
        "model": label,
        "compiler": compiler,
        **{m.key: head[m.key] for m in METRICS},
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


def check_against_reference(case: EvalCase, compiler: str = "builtin") -> list[str]:
    """Why the case's own reference answer would fail its checks ([] when it passes them all)."""

    if case.reference is None:
        return ["no reference answer"]
    problems = []
    pat = score_patterns(case, case.reference)
    problems += [f"must pattern does not match the reference: {p!r}" for p in pat.missing]
    problems += [f"must_not pattern matches the reference: {p!r}" for p in pat.forbidden]
    if pat.factual is False:
        problems.append(f"answer regex does not match the reference: {case.answer!r}")
    if case.compile:
        result = compile_answer(case.reference, compiler=compiler, filename=f"{case.id}.bbj")
        if not result.compiles:
            problems.append(f"reference code does not compile: {result.reason}")
    return problems
