"""report.html for one model and for a comparison of two: one self-contained file each.

Plots are drawn with matplotlib and embedded as PNG data URIs; styles are inline. The page opens
from disk, offline, mailed as an attachment, with nothing else next to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_text
from bbjtune.evaluate.fim import FIM_METRICS
from bbjtune.evaluate.metrics import flat, percent, present
from bbjtune.evaluate.paired import p_text
from bbjtune.html_report import clip, esc, figure, img, table, td
from bbjtune.html_report import page as html_page

MAX_FAILURES_SHOWN = 25


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float | None]], title: str) -> str:
    """Horizontal grouped bars (one group per category, one bar per series), values 0..1."""
    if not groups:
        return ""
    height = max(2.2, 0.42 * len(groups) * max(1, len(series)) ** 0.5 + 1)
    _, (fig, ax) = figure(8, height)
    n = len(series)
    width = 0.8 / max(1, n)
    for j, (name, values) in enumerate(series.items()):
        ys = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        ax.barh(ys, [100 * (v or 0) for v in values], height=width, label=name)
    ax.set_yticks(range(len(groups)), labels=list(groups))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if n > 1:
        ax.legend(loc="lower right", fontsize=8)
    return img(fig)


def page(title: str, body: str) -> str:
    return html_page(title, body, written_by="bbjtune eval")


def words(mapping: Any) -> str:
    """{'temperature': 0.2, 'n': 1} → "temperature 0.2, n 1" (None values left out)."""
    if not isinstance(mapping, dict):
        return "" if mapping is None else str(mapping)
    return ", ".join(f"{k} {v}" for k, v in mapping.items() if v is not None and k != "fingerprint")


def _and(names: list[str]) -> str:
    """["a", "b", "c"] → "a, b and c"."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def k_keys(results: dict[str, Any]) -> list[str]:
    return sorted(results.get("compile_at_k", {}), key=int)


# ----------------------------------------------------------------------------- one model


def write_model_report(
    path: str | Path,
    results: dict[str, Any],
    scores: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
) -> Path:
    return atomic_write_text(path, model_report_html(results, scores, rows))


def model_report_html(
    results: dict[str, Any], scores: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
) -> str:
    label = results["model"]
    ks = k_keys(results)
    parts = [
        f"<h1>BBj evaluation: {esc(label)}</h1>",
        f"<p class='muted'>model {esc(words(results.get('model_spec')))} · compiler <b>{esc(results['compiler'])}</b> · "
        f"sampling {esc(words(results.get('sampling')))} · suites {esc(', '.join(results.get('suites', [])))}</p>",
    ]
    he = results.get("humaneval") or {}
    shown = present(results)  # clean@k is left out of results written before tier 2
    summary_rows = [
        [td(name), td(m.format(value), True), td(m.meaning)]
        for m in shown
        for name, value in m.values(results, ks).items()
    ]
    for key in sorted(k for k in he if k.startswith("pass_at_")):
        summary_rows.append(
            [
                td(f"HumanEval {key.replace('pass_at_', 'pass@')}"),
                td(percent(he[key]), True),
                td(f"{he.get('n_tasks')} Python tasks, run in the sandbox ({esc(he.get('style'))} prompts)"),
            ]
        )
    parts += [
        "<h2>Summary</h2>",
        table(["metric", "value", "meaning"], summary_rows),
        f"<p>{results['n_prompts']} BBj prompts, {results['n_samples']} samples, "
        f"{results.get('n_compiled_prompts', 0)} prompts with compiled code; "
        f"{len(results.get('errors', []))} error(s) recorded.</p>",
    ]
    if gw := results.get("gateway"):
        drawn = ", ".join(f"{n} answer(s) for {c}" for n, c in gw["requests_by_answers_drawn"].items())
        parts.append(
            f"<p>Answered through the checking gateway: {gw['answers_drawn']} answers drawn for "
            f"{gw['requests']} requests ({esc(drawn)}); {gw['repaired']} repaired, {gw['loop_cut']} cut "
            "where a loop started.</p>"
        )
    first_k = ks[0] if ks else None
    for field, title in (
        ("by_category", "By category"),
        ("by_generation", "By BBj generation"),
        ("by_task", "By task"),
    ):
        groups = results.get(field) or {}
        names = list(groups)
        if field == "by_category" and names:
            charted = flat(None, [first_k], short=True, metrics=[m for m in shown if m.charted])
            parts.append(
                bar_chart(
                    names,
                    {name: [flat(groups[n], [first_k], short=True)[name] for n in names] for name in charted},
                    f"{label}: {_and(list(charted))} per category",
                )
            )
        rows_html = [
            [td(esc(n)), td(g["n_prompts"], True)]
            + [td(percent(v), True) for v in flat(g, ks, short=True, metrics=shown).values()]
            for n, g in groups.items()
        ]
        parts += [
            f"<h2>{title}</h2>",
            table([field.split("_", 1)[1], "prompts", *flat(None, ks, short=True, metrics=shown)], rows_html),
        ]
    parts += _fim_html(results.get("fim"))
    if he:
        parts += [
            "<h2>HumanEval</h2>",
            f"<p>Outcomes: {esc(', '.join(f'{k}: {v}' for k, v in sorted(he.get('statuses', {}).items())))}. "
            f"Limits: {esc(he.get('limits'))}. Sandbox: {esc(he.get('sandbox'))}.</p>",
        ]
    parts += _failures_html(scores, rows)
    parts += _errors_html(results.get("errors", []))
    return page(f"bbjtune eval: {label}", "".join(parts))


def _fim_html(fim: dict[str, Any] | None) -> list[str]:
    """Editor completion on held-out files: the four rates, overall and per kind of hole."""
    if not fim:
        return []
    groups = {"all": fim, **(fim.get("by_kind") or {})}
    rows = [
        [td(esc(name)), td(g["n_samples"], True), *(td(percent(g.get(key)), True) for key, _ in FIM_METRICS)]
        for name, g in groups.items()
    ]
    rates = [label.removeprefix("FIM ") for _, label in FIM_METRICS]
    return [
        "<h2>Fill-in-the-middle (editor completion)</h2>",
        f"<p>{fim['n_cases']} holes in held-out source files the model never trained on. compile@1: the "
        "whole file with the completion in the hole compiles; stop rate: the completion ended by itself "
        "without running on into the code after the hole; as an editor shows it: the completion cut where "
        "editors cut it, before a line that repeats the one after the hole.</p>",
        table(["hole", "samples", *rates], rows),
    ]


def _failures_html(scores: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[str]:
    by_key = {(r["suite"], r["id"], r["sample"]): r for r in rows}
    failing = [
        s
        for s in scores
        if s.get("suite") != "humaneval"
        and (
            s.get("compiles") is False
            or s.get("clean") is False
            or s.get("patterns_ok") is False
            or s.get("factual") is False
        )
    ]
    if not failing:
        return []
    out = [f"<h2>Failing samples ({len(failing)}, first {min(len(failing), MAX_FAILURES_SHOWN)} shown)</h2>"]
    for s in failing[:MAX_FAILURES_SHOWN]:
        row = by_key.get((s["suite"], s["id"], s["sample"]), {})
        why = []
        if s.get("compiles") is False:
            why.append(f"does not compile: {esc(s.get('compile_reason'))}")
        elif s.get("clean") is False:
            found = [f for f in s.get("findings", []) if f.get("severity") == "error"]
            why.append(
                "not clean: "
                + "; ".join(
                    f"line {f['line']} {esc(f['rule'])}: {esc(clip(f['message'], 160))}" for f in found[:3]
                )
            )
        if s.get("missing"):
            why.append("missing " + ", ".join(f"<code>{esc(p)}</code>" for p in s["missing"]))
        if s.get("forbidden"):
            why.append("forbidden " + ", ".join(f"<code>{esc(p)}</code>" for p in s["forbidden"]))
        if s.get("factual") is False:
            why.append("factual answer wrong")
        out.append(
            f"<details><summary><b>{esc(s['suite'])}/{esc(s['id'])}</b> #{s['sample']} "
            f"<span class='muted'>{esc(s.get('category'))} · {esc(s.get('generation'))}</span> — "
            f"{'; '.join(why)}</summary><p>{esc(clip(row.get('prompt'), 600))}</p>"
            f"<pre>{esc(clip(row.get('output')))}</pre></details>"
        )
    return out


def _errors_html(errors: Sequence[dict[str, Any]]) -> list[str]:
    if not errors:
        return []
    rows = [
        [
            td(esc(e.get("suite"))),
            td(esc(e.get("id", f"line {e.get('line')}"))),
            td(esc(e.get("sample", ""))),
            td(esc(e.get("error"))),
        ]
        for e in errors[:200]
    ]
    return [f"<h2>Errors ({len(errors)})</h2>", table(["suite", "id / line", "sample", "reason"], rows)]


# ----------------------------------------------------------------------------- two models


def delta_cell(delta: float | None) -> str:
    if delta is None:
        return td("–", True)
    cls = "neg" if delta < 0 else "pos" if delta > 0 else ""
    return td(f"{100 * delta:+.1f}", True, cls)


def compare_report_html(cmp: dict[str, Any]) -> str:
    a, b = cmp["a"], cmp["b"]
    gate = cmp["humaneval_gate"]
    badge = {
        "pass": "<span class='badge pass'>PASS</span>",
        "fail": "<span class='badge fail'>FAIL</span>",
        "no_signal": "<span class='badge na'>NO SIGNAL</span>",
    }.get(gate["status"], "<span class='badge na'>NOT RUN</span>")
    parts = [
        f"<h1>BBj evaluation: {esc(b)} vs {esc(a)}</h1>",
        f"<p class='muted'>{esc(a)}: {esc(cmp['a_dir'])} · {esc(b)}: {esc(cmp['b_dir'])} · compiler "
        f"{esc(cmp['compiler'])}. Deltas are {esc(b)} − {esc(a)}, in percentage points; red rows are regressions.</p>",
        f"<h2>HumanEval gate {badge}</h2><p>{esc(gate['message'])}</p>",
    ]
    parts += [f"<p class='muted'><b>{esc(note)}</b></p>" for note in cmp.get("no_signal") or []]
    tier_rows, classes = [], []
    for name, t in cmp["tiers"].items():
        tier_rows.append(
            [td(esc(name)), td(percent(t["a"]), True), td(percent(t["b"]), True), delta_cell(t["delta"])]
        )
        classes.append("bad" if t["regression"] else "good" if (t["delta"] or 0) > 0 else "")
    parts += ["<h2>Tiers</h2>", table(["metric", a, b, "Δ points"], tier_rows, classes)]
    if cmp.get("paired"):
        rows, classes = [], []
        for name, c in cmp["paired"].items():
            rows.append(
                [td(esc(name)), td(c["n"], True), td(c["better"], True), td(c["worse"], True)]
                + [td(p_text(c["p_value"]).removeprefix("p = "), True), td(esc(c["verdict"]))]
            )
            classes.append({"a real gain": "good", "a real loss": "bad"}.get(c["verdict"], ""))
        parts += [
            "<h2>Is the difference real?</h2>",
            f"<p class='muted'>The same prompts, answer by answer: {esc(b)} better means {esc(b)} passes where "
            f"{esc(a)} fails. A two-sided sign test on those that changed; p below 0.05 is called real, "
            "anything else could turn the other way in a rerun.</p>",
            table(["metric", "prompts", f"{b} better", f"{b} worse", "p", "verdict"], rows, classes),
        ]
    for field, title, noun in (
        ("by_category", "By category", "category"),
        ("by_generation", "By BBj generation", "BBj generation"),
        ("fim_by_kind", "Fill-in-the-middle, by hole", "hole"),
    ):
        groups = cmp.get(field) or {}
        if not groups:
            continue
        names = list(groups)
        metrics = list(next(iter(groups.values())))
        metric = cmp["primary_metric"] if cmp["primary_metric"] in metrics else metrics[0]
        parts.append(
            bar_chart(
                names,
                {a: [groups[n][metric]["a"] for n in names], b: [groups[n][metric]["b"] for n in names]},
                f"{metric} per {noun}",
            )
        )
        rows, classes = [], []
        for n, g in groups.items():
            row = [td(esc(n))]
            for m in metrics:
                row += [td(percent(g[m]["a"]), True), td(percent(g[m]["b"]), True), delta_cell(g[m]["delta"])]
            rows.append(row)
            classes.append("bad" if any(g[m]["regression"] for m in metrics) else "")
        headers = [field.split("_", 1)[1]] + [h for m in metrics for h in (f"{m} {a}", f"{m} {b}", "Δ")]
        parts += [f"<h2>{title}</h2>", table(headers, rows, classes)]
    if cmp.get("regressions"):
        parts += ["<h2>Regressions</h2><ul>"] + [f"<li>{esc(r)}</li>" for r in cmp["regressions"]] + ["</ul>"]
    if cmp.get("examples"):
        parts.append(f"<h2>Example pairs ({len(cmp['examples'])})</h2>")
        for ex in cmp["examples"]:
            parts.append(
                f"<details><summary><b>{esc(ex['suite'])}/{esc(ex['id'])}</b> "
                f"<span class='muted'>{esc(ex['category'])}</span> — {esc(ex['change'])}</summary>"
                f"<p>{esc(clip(ex['prompt'], 800))}</p><div class='pair'>"
                f"<div><b>{esc(a)}</b> <span class='muted'>{esc(ex['a_verdict'])}</span>"
                f"<pre>{esc(clip(ex['a_output']))}</pre></div>"
                f"<div><b>{esc(b)}</b> <span class='muted'>{esc(ex['b_verdict'])}</span>"
                f"<pre>{esc(clip(ex['b_output']))}</pre></div></div></details>"
            )
    if cmp.get("human_review"):
        review = cmp["human_review"]
        parts += ["<h2>Human review</h2>", f"<pre>{esc(review.get('text') or _pretty(review))}</pre>"]
    return page(f"bbjtune eval: {b} vs {a}", "".join(parts))


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)
