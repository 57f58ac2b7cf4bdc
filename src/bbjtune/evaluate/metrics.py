"""The BBj metrics of an evaluation, each declared once: name, direction, format, aggregation.

results.json (its headline and every breakdown group), the model report, the comparison (deltas
and regressions), the terminal summary and the stage manifest all read `METRICS`. Adding a metric
is one `Metric` here plus the per-sample field it aggregates, which `scoring.score_sample` writes
to scores.jsonl. HumanEval's pass@k comes from its own tier (humaneval.py) and is listed beside
these by the report and the comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bbjtune.evaluate.estimator import mean_pass_at_k


def _rate(scores: Sequence[dict[str, Any]], field: str, k_list: Sequence[int]) -> float | None:
    """Share of the samples where `field` is true, over the samples where it applies (not null)."""
    values = [bool(s[field]) for s in scores if s.get(field) is not None]
    return round(sum(values) / len(values), 4) if values else None


def _pass_at_k(scores: Sequence[dict[str, Any]], field: str, k_list: Sequence[int]) -> dict[str, float]:
    """Unbiased pass@k over each prompt's samples, for every k that the sample count allows."""
    per_prompt: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for s in scores:
        if s.get(field) is not None:
            per_prompt[(s["suite"], s["id"])].append(bool(s[field]))
    counts = [(len(v), sum(v)) for v in per_prompt.values()]
    out = {}
    for k in k_list:
        value = mean_pass_at_k(counts, k)
        if value is not None:
            out[str(k)] = round(value, 4)
    return out


@dataclass(frozen=True)
class Metric:
    key: str  # the key in results.json and in each by_* group
    label: str  # a row of the report and of the comparison
    short: str  # a column of the breakdown tables and the terminal summary
    meaning: str  # the report's one-line explanation
    sample_field: str  # the scores.jsonl field it aggregates
    aggregate: Callable[[Sequence[dict[str, Any]], str, Sequence[int]], Any] = _rate
    per_k: bool = False  # one value per k (a dict "k" -> value) instead of one number
    higher_is_better: bool = True
    charted: bool = True  # a bar of the report's per-category chart
    # results.json written before the metric existed lack it (or hold {}): the report and the
    # comparison then leave it out instead of showing "–" as if it had been measured
    added_later: bool = False

    def compute(self, scores: Sequence[dict[str, Any]], k_list: Sequence[int]) -> Any:
        return self.aggregate(scores, self.sample_field, k_list)

    def values(
        self, results: dict[str, Any] | None, ks: Sequence[str], *, short: bool = False
    ) -> dict[str, float | None]:
        """{label: value} from a results.json (or a by_* group); compile@k spreads over the ks."""
        results = results or {}
        name = self.short if short else self.label
        if self.per_k:
            return {name.replace("@k", f"@{k}"): (results.get(self.key) or {}).get(k) for k in ks}
        return {name: results.get(self.key)}

    def format(self, value: float | None) -> str:
        return percent(value)  # every BBj metric is a share of prompts or samples

    def worse(self, a: float, b: float) -> bool:
        """B is worse than A on this metric."""
        return b < a if self.higher_is_better else b > a


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


METRICS: tuple[Metric, ...] = (
    Metric(
        "compile_at_k",
        "compile@k",
        "compile@k",
        "share of prompts whose generated BBj compiles (unbiased estimator)",
        "compiles",
        aggregate=_pass_at_k,
        per_k=True,
    ),
    # tier 2 (bbj/quality.py); a sample that does not compile is not clean, prose-only cases have no "clean"
    Metric(
        "clean_at_k",
        "clean@k",
        "clean@k",
        "compiles and passes the tier 2 checks: real BBjAPI methods and argument counts, defined labels, "
        "a statement, no runaway repetition, the right generation",
        "clean",
        aggregate=_pass_at_k,
        per_k=True,
        added_later=True,
    ),
    Metric(
        "patterns_pass_rate",
        "patterns pass rate",
        "patterns",
        "answers using the expected APIs and idioms, none of the forbidden ones",
        "patterns_ok",
    ),
    Metric(
        "factual_accuracy",
        "factual accuracy",
        "factual",
        "factual questions answered right",
        "factual",
        charted=False,
    ),
)
PRIMARY = METRICS[0]


def headline(scores: Sequence[dict[str, Any]], k_list: Sequence[int]) -> dict[str, Any]:
    """Every metric over a set of sample scores, keyed as in results.json."""
    return {m.key: m.compute(scores, k_list) for m in METRICS}


def present(*results: dict[str, Any] | None) -> tuple[Metric, ...]:
    """The metrics any of these results.json hold: all but those added later that every one lacks."""
    return tuple(
        m
        for m in METRICS
        if not m.added_later or any((r or {}).get(m.key) not in (None, {}) for r in results)
    )


def flat(
    results: dict[str, Any] | None,
    ks: Sequence[str],
    *,
    short: bool = False,
    metrics: Sequence[Metric] = METRICS,
) -> dict[str, float | None]:
    """The metrics of a results.json (or a by_* group) as {label: value}, compile@k spread over the ks."""
    out: dict[str, float | None] = {}
    for m in metrics:
        out.update(m.values(results, ks, short=short))
    return out


def metric_of(label: str) -> Metric | None:
    """The metric behind a label that `values` produced; None for a row from outside the registry
    (HumanEval's pass@k, the FIM rates: shares too, higher is better)."""
    for m in METRICS:
        for name in (m.label, m.short):
            if label == name or (m.per_k and label.startswith(name.split("@")[0] + "@")):
                return m
    return None
