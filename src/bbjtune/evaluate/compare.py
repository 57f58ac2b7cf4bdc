"""`bbjtune eval compare A B`: two evaluated models side by side (usually base vs tuned).

Deltas (B − A, in points) per tier, category and BBj generation; every drop is listed as a
regression, and a tier where both models score zero is named as one without signal. The HumanEval
gate passes when B's pass@1 is at most `max_drop_points` below A's, and says "no signal" instead
when the measurement could not have failed (both zero, or too few problems).
Example pairs show the same prompt answered by both, those whose verdict changed first. When the
human review (bbjtune review) has exported results next to the eval directories, their summary is
included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bbjtune.artifacts import StageRun, atomic_write_json, atomic_write_text, read_complete_jsonl
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate.fim import FIM_METRICS
from bbjtune.evaluate.metrics import PRIMARY, Metric, flat, metric_of, percent, present
from bbjtune.evaluate.paired import counts, paired_changes
from bbjtune.evaluate.report import compare_report_html
from bbjtune.evaluate.run import GENERATIONS_FILE, RESULTS_FILE, SCORES_FILE
from bbjtune.review_summary import format_summary, load_review_summary

MAX_EXAMPLES = 12


def _load(directory: Path) -> dict[str, Any]:
    path = directory / RESULTS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BbjtuneError(
            f"{path} not found",
            f"evaluate that model first (bbjtune eval ... --label {directory.name}) "
            "or pass an eval/<label>/ directory",
        ) from None
    except json.JSONDecodeError as exc:
        raise BbjtuneError(
            f"{path} is not valid JSON (line {exc.lineno})", "re-score it: bbjtune eval score DIR"
        ) from None


def _cell(a: float | None, b: float | None, metric: Metric | None = None) -> dict[str, Any]:
    delta = None if a is None or b is None else round(b - a, 4)
    worse = metric.worse(a, b) if metric and delta is not None else delta is not None and delta < 0
    return {"a": a, "b": b, "delta": delta, "regression": worse}


def compare_results(
    ra: dict[str, Any],
    rb: dict[str, Any],
    max_drop_points: float = 5.0,
    paired: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The comparison of two results.json contents (A is the reference, B the candidate).

    `paired` (paired.paired_changes on both score files) says which tier differences are real; a
    regression within noise says so."""
    paired = paired or {}
    a, b = ra["model"], rb["model"]
    if a == b:
        a, b = f"{a} (A)", f"{b} (B)"
    ks = sorted(set(ra.get(PRIMARY.key, {})) & set(rb.get(PRIMARY.key, {})), key=int) or ["1"]
    shown = present(ra, rb)  # clean@k only when either side has it (results before tier 2 lack it)
    fa, fb = flat(ra, ks, metrics=shown), flat(rb, ks, metrics=shown)
    tiers = {name: _cell(fa[name], fb[name], metric_of(name)) for name in fa}
    hea, heb = ra.get("humaneval") or {}, rb.get("humaneval") or {}
    for key in sorted(set(hea) & set(heb)):
        if key.startswith("pass_at_"):
            tiers[f"HumanEval {key.replace('pass_at_', 'pass@')}"] = _cell(hea[key], heb[key])
    fim_a, fim_b = ra.get("fim") or {}, rb.get("fim") or {}
    if fim_a and fim_b:  # editor completion on held-out files (fim.py)
        for key, name in FIM_METRICS:
            tiers[name] = _cell(fim_a.get(key), fim_b.get(key))
    breakdowns = {}
    for field in ("by_category", "by_generation"):
        ga, gb = ra.get(field) or {}, rb.get(field) or {}
        names = sorted(set(ga) | set(gb))
        pairs = {
            n: (
                flat(ga.get(n), ks, short=True, metrics=shown),
                flat(gb.get(n), ks, short=True, metrics=shown),
            )
            for n in names
        }
        metrics = [
            m
            for m in flat({}, ks, short=True, metrics=shown)
            if any(ma[m] is not None or mb[m] is not None for ma, mb in pairs.values())
        ]
        breakdowns[field] = {
            n: {m: _cell(ma[m], mb[m], metric_of(m)) for m in metrics} for n, (ma, mb) in pairs.items()
        }
    regressions = [
        f"{name}: {percent(c['a'])} → {percent(c['b'])} ({100 * c['delta']:+.1f} points)"
        + _noise_note(paired.get(name))
        for name, c in tiers.items()
        if c["regression"]
    ]
    if fim_a and fim_b:
        kinds = sorted(set(fim_a.get("by_kind") or {}) & set(fim_b.get("by_kind") or {}))
        breakdowns["fim_by_kind"] = {
            k: {
                name: _cell(fim_a["by_kind"][k].get(key), fim_b["by_kind"][k].get(key))
                for key, name in FIM_METRICS
            }
            for k in kinds
        }
    for field, label in (
        ("by_category", "category"),
        ("by_generation", "generation"),
        ("fim_by_kind", "FIM hole"),
    ):
        for name, g in breakdowns.get(field, {}).items():
            regressions += [
                f"{label} {name}, {m}: {percent(c['a'])} → {percent(c['b'])} ({100 * c['delta']:+.1f} points)"
                for m, c in g.items()
                if c["regression"]
            ]
    n_tasks = min((h["n_tasks"] for h in (hea, heb) if h.get("n_tasks")), default=None)
    return {
        "a": a,
        "b": b,
        "compiler": ra.get("compiler")
        if ra.get("compiler") == rb.get("compiler")
        else f"{a}: {ra.get('compiler')}, {b}: {rb.get('compiler')}",
        "primary_metric": next(iter(PRIMARY.values({}, ks))),
        "tiers": tiers,
        **breakdowns,
        "regressions": regressions,
        "paired": paired,
        "no_signal": no_signal(tiers, ra.get("n_prompts")),
        "humaneval_gate": humaneval_gate(
            hea.get("pass_at_1"), heb.get("pass_at_1"), max_drop_points, a, b, n_tasks
        ),
        "n_prompts": {"a": ra.get("n_prompts"), "b": rb.get("n_prompts")},
    }


def _noise_note(change: dict[str, Any] | None) -> str:
    if change is None or change["verdict"] != "within noise":
        return ""
    return f" — within noise: {counts(change)}"


def no_signal(tiers: dict[str, dict[str, Any]], n_prompts: int | None) -> list[str]:
    """The BBj tiers where both models scored zero, in words: a 0.0 → 0.0 row says nothing about either
    model. HumanEval rows are left to the gate, which says the same of them (`humaneval_gate`)."""
    notes = []
    for name, t in tiers.items():
        if name.startswith("HumanEval") or t["a"] != 0 or t["b"] != 0:
            continue
        metric = metric_of(name)
        if metric is not None and not metric.higher_is_better:  # zero is then the best score
            continue
        of = f" of the {n_prompts} prompts" if n_prompts and metric is not None and metric.per_k else ""
        notes.append(
            f"no signal in {name}: both models score {percent(0.0)}{of}, so this comparison cannot tell them apart"
        )
    return notes


def humaneval_gate(
    pa: float | None,
    pb: float | None,
    max_drop_points: float,
    a: str = "A",
    b: str = "B",
    n_tasks: int | None = None,
) -> dict[str, Any]:
    """Pass when B lost at most `max_drop_points` points of HumanEval pass@1 against A.

    A pass needs a measurement that could have failed: when both models solve nothing, or one
    problem of the `n_tasks` is worth more than the allowed drop (8 problems: 12.5 points each), the
    status is "no_signal" and the message says why instead of PASS."""
    if pa is None or pb is None:
        return {
            "status": "not_run",
            "a": pa,
            "b": pb,
            "drop_points": None,
            "max_drop_points": max_drop_points,
            "message": "HumanEval was not run for both models, so forgetting was not measured",
        }
    drop = round(100 * (pa - pb), 2)
    ok = drop <= max_drop_points + 1e-9
    change = (
        f"lost {drop:.1f} points"
        if drop > 0
        else f"gained {-drop:.1f} points"
        if drop < 0
        else "kept its score"
    )
    scores = f"({100 * pa:.1f}% → {100 * pb:.1f}%"
    status, message = (
        ("pass" if ok else "fail"),
        (
            f"{b} {change} of HumanEval pass@1 against {a} {scores}); the gate "
            f"allows a drop of {max_drop_points:g} points"
        ),
    )
    problems = f"{n_tasks} HumanEval problems" if n_tasks else "the HumanEval problems"
    if ok and pa == 0 and pb == 0:
        status, message = (
            "no_signal",
            (
                f"no signal: neither {a} nor {b} solves any of {problems} {scores}), so "
                "forgetting was not measured; HumanEval needs a model that solves some"
            ),
        )
    elif ok and n_tasks and 100 / n_tasks > max_drop_points:
        status, message = (
            "no_signal",
            (
                f"no signal: {b} {change} {scores}), but with {problems} one problem is "
                f"{100 / n_tasks:.1f} points, more than the {max_drop_points:g}-point drop the "
                "gate allows; raise eval.humaneval.limit"
            ),
        )
    return {
        "status": status,
        "a": pa,
        "b": pb,
        "drop_points": drop,
        "max_drop_points": max_drop_points,
        "n_tasks": n_tasks,
        "message": message,
    }


def example_pairs(a_dir: Path, b_dir: Path, limit: int = MAX_EXAMPLES) -> list[dict[str, Any]]:
    """Sample 0 of prompts both models answered, those whose verdict changed first."""

    def index(d: Path) -> tuple[dict, dict]:
        rows = {
            (r["suite"], r["id"]): r for r in read_complete_jsonl(d / GENERATIONS_FILE) if r["sample"] == 0
        }
        scores = {
            (s["suite"], s["id"]): s for s in read_complete_jsonl(d / SCORES_FILE) if s.get("sample") == 0
        }
        return rows, scores

    rows_a, scores_a = index(a_dir)
    rows_b, scores_b = index(b_dir)
    pairs = []
    for key in rows_a.keys() & rows_b.keys():
        if key[0] == "humaneval":
            continue
        va, vb = _verdict(scores_a.get(key)), _verdict(scores_b.get(key))
        change = "fixed" if vb[0] > va[0] else "broke" if vb[0] < va[0] else "same verdict"
        pairs.append(
            {
                "suite": key[0],
                "id": key[1],
                "category": rows_a[key].get("category"),
                "prompt": rows_a[key].get("prompt"),
                "change": change,
                "a_output": rows_a[key].get("output") or rows_a[key].get("error") or "",
                "b_output": rows_b[key].get("output") or rows_b[key].get("error") or "",
                "a_verdict": va[1],
                "b_verdict": vb[1],
            }
        )
    order = {"fixed": 0, "broke": 1, "same verdict": 2}
    pairs.sort(key=lambda p: (order[p["change"]], p["suite"], p["id"]))
    return pairs[:limit]


def _verdict(score: dict[str, Any] | None) -> tuple[int, str]:
    """(number of checks passed, words) for a sample's score."""
    if score is None:
        return 0, "not scored"
    checks = [
        (name, score.get(field))
        for name, field in (
            ("compiles", "compiles"),
            ("clean", "clean"),
            ("patterns", "patterns_ok"),
            ("factual", "factual"),
        )
        if score.get(field) is not None
    ]
    passed = sum(bool(v) for _, v in checks)
    words = ", ".join(f"{name} {'✓' if v else '✗'}" for name, v in checks) or "no checks"
    return passed, words


def _scores(directory: Path) -> list[dict[str, Any]]:
    """The per-answer scores ([] for an eval directory without scores.jsonl: no paired tests then)."""
    return read_complete_jsonl(directory / SCORES_FILE)


def load_review(a_dir: Path) -> dict[str, Any] | None:
    """The human review (bbjtune review) summary exported beside the eval directories, if any."""
    summary = load_review_summary(a_dir)
    if summary is None:
        return None
    return {"summary": summary, "text": format_summary(summary)}


def compare_dirs(
    a_dir: str | Path, b_dir: str | Path, out_dir: str | Path, max_drop_points: float = 5.0
) -> dict[str, Any]:
    """Compare two eval/<label>/ directories; writes results.json and report.html into out_dir."""

    a_dir, b_dir, out = Path(a_dir), Path(b_dir), Path(out_dir)
    ra, rb = _load(a_dir), _load(b_dir)
    with StageRun(
        out,
        stage="eval-compare",
        config={"a": str(a_dir), "b": str(b_dir), "max_drop_points": max_drop_points},
    ) as run:
        run.add_inputs([a_dir / RESULTS_FILE, b_dir / RESULTS_FILE])
        paired = paired_changes(_scores(a_dir), _scores(b_dir))
        cmp = compare_results(ra, rb, max_drop_points, paired)
        cmp.update(a_dir=str(a_dir), b_dir=str(b_dir), examples=example_pairs(a_dir, b_dir))
        review = load_review(a_dir)
        if review is not None:
            cmp["human_review"] = review
        atomic_write_json(out / RESULTS_FILE, cmp)
        atomic_write_text(out / "report.html", compare_report_html(cmp))
        run.outputs += [RESULTS_FILE, "report.html"]
        run.metrics.update(
            humaneval_gate=cmp["humaneval_gate"]["status"], regressions=len(cmp["regressions"])
        )
    return cmp
