"""Is a difference between two evaluated models real? Paired sign tests on the prompts both answered.

Two models answer the same prompts, so each prompt's verdict can be compared directly: B fixed it,
B broke it, or both agree. Only the prompts whose verdict changed say anything about which model is
better, and on the real 0.5B they are many: between two fine-tuned models 67 to 83 of 188
prompts change their compile verdict, in both directions together, so a gap of 8 points of
compile@1 can still be 34 prompts fixed against 49 broken, which a rerun could reverse. The sign
test says how often a split at least that uneven comes from a fair coin (two-sided, exact).

Each metric here is the tier of the same name in `eval compare` (sample 0 of each case, the answer
compile@1 and pass@1 count); edit similarity is a number per answer, not a verdict, and is left out.
"""

from __future__ import annotations

from math import comb
from typing import Any

ALPHA = 0.05  # below this p-value a difference is called real

# tier name (as `eval compare` shows it) → (score field, which suites)
PAIRED_METRICS: dict[str, tuple[str, str]] = {
    "compile@1": ("compiles", "bbj"),
    "clean@1": ("clean", "bbj"),
    "patterns pass rate": ("patterns_ok", "bbj"),
    "factual accuracy": ("factual", "bbj"),
    "HumanEval pass@1": ("passed", "humaneval"),
    "FIM exact match": ("exact", "fim"),
    "FIM compile@1": ("compiles", "fim"),
    "FIM stop rate": ("stopped", "fim"),
    "FIM exact match, as an editor shows it": ("shown_exact", "fim"),
    "FIM compile@1, as an editor shows it": ("shown_compiles", "fim"),
}


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven from a fair coin."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(better, worse) + 1))
    return min(1.0, 2 * tail / 2**n)


def _group(suite: str) -> str:
    return suite if suite in ("humaneval", "fim") else "bbj"


def _first_samples(scores: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["suite"], s["id"]): s for s in scores if s.get("sample") == 0}


def paired_changes(
    scores_a: list[dict[str, Any]], scores_b: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per metric: prompts both models were judged on, how many B fixed and broke, the p-value, a verdict."""
    first_a, first_b = _first_samples(scores_a), _first_samples(scores_b)
    out: dict[str, dict[str, Any]] = {}
    for name, (field, group) in PAIRED_METRICS.items():
        both = [
            (bool(first_a[k][field]), bool(first_b[k][field]))
            for k in first_a.keys() & first_b.keys()
            if _group(k[0]) == group
            and first_a[k].get(field) is not None
            and first_b[k].get(field) is not None
        ]
        if not both:
            continue
        better = sum(b and not a for a, b in both)
        worse = sum(a and not b for a, b in both)
        p = sign_test(better, worse)
        verdict = (
            "no change"
            if better == worse == 0
            else ("a real gain" if better > worse else "a real loss")  # every metric here: higher is better
            if p < ALPHA
            else "within noise"
        )
        out[name] = {
            "n": len(both),
            "better": better,
            "worse": worse,
            "p_value": float(f"{p:.3g}"),
            "verdict": verdict,
        }
    return out


def counts(change: dict[str, Any]) -> str:
    """`34 prompts better, 49 worse of 188 (sign test p = 0.12)`."""
    return (
        f"{change['better']} prompts better, {change['worse']} worse of {change['n']} "
        f"(sign test {p_text(change['p_value'])})"
    )


def describe(name: str, change: dict[str, Any]) -> str:
    """One line: `compile@1: 34 prompts better, 49 worse of 188 (sign test p = 0.12): within noise, ...`."""
    verdict = change["verdict"]
    if verdict == "within noise":
        verdict = "within noise, a rerun could reverse it"
    return f"{name}: {counts(change)}: {verdict}"


def p_text(p: float) -> str:
    """`p = 0.12`, or `p < 0.001` where two digits would print a small p as 0."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
