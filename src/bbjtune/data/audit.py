"""The figures of a data audit (audit.json): what is in the data, what is wrong with it, what was done.

The same figures serve `bbjtune data audit` (before anything is changed) and `bbjtune data prepare`
(with the split, the decontamination and the stage 1 corpus added). report.py draws them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from bbjtune.data.clean import DEDUPE_REASONS, FILTER_REASONS
from bbjtune.data.outcome import Analysis, Written

MAX_SHOWN = 20
HISTOGRAM_BINS = 30


def flagged_summary(code: dict[str, Any]) -> tuple[str, str]:
    """(the tier 2 rules broken, with their answer counts; what happened to those answers), as the CLI
    summary and the report say them, from the audit's `code` section."""
    rules = ", ".join(f"{rule} {n}" for rule, n in code["flagged_by_rule"].items())
    fate = (
        "set aside"
        if code["quality_check"] == "reject"
        else "kept (data.quality_check: reject sets them aside)"
    )
    return rules, fate


def build_audit(a: Analysis, written: Written | None = None) -> dict[str, Any]:
    scan, infos = a.scan, a.scan.infos
    decisions_by_reason: dict[str, list] = defaultdict(list)
    for dec in a.decisions:
        decisions_by_reason[dec.reason].append(dec)
    by_index = {info.index: info for info in infos}

    rejected = Counter(r.reason for r in scan.rejections)
    rejected.update(dec.reason for dec in a.decisions)
    if written is not None:
        rejected.update(dec.reason for dec in written.contaminated)
        rejected.update(r.reason for r in written.cpt.rejections)
        if written.replay is not None:
            rejected.update(r.reason for r in written.replay.rejections)

    report: dict[str, Any] = {
        "inputs": {"chatml": scan.files},
        "tokenizer": a.tokens.describe(),
        "tokens_exact": a.tokens.exact,
        "max_length": a.max_length,
        "lines": scan.lines,
        "blank_lines": scan.blank_lines,
        "examples": len(infos),
        "rejected": {"total": sum(rejected.values()), "by_reason": dict(rejected.most_common())},
        "steps": _steps(a, written),
        "system_prompts": _system_prompts(a),
        "tokens": _distribution([i.n_tokens for i in infos], over=a.max_length),
        "answer_chars": _distribution([i.answer_chars for i in infos]),
        "answers": {
            "too_short": sum(i.answer_chars <= a.cfg.data.min_answer_chars for i in infos),
            "truncated": sum(bool(i.truncated) for i in infos),
            "escapes_found": scan.escapes_found,
            "escapes_fixed": scan.escapes_fixed,
        },
        "duplicates": _duplicates(a),
        "code": {
            **{
                k: v
                for k, v in scan.code.__dict__.items()
                if k not in ("failures", "flags", "flagged_by_rule")
            },
            "check": a.cfg.data.code_check,
            "failures": scan.code.failures,
            "quality_check": a.cfg.data.quality_check,
            "flagged_by_rule": dict(scan.code.flagged_by_rule.most_common()),
            "flags": scan.code.flags,
        },
        "scrubbed": {
            "examples": scan.scrubbed_count,
            "by_kind": dict(scan.scrubbed),
            "where": scan.scrubbed_examples,
        },
        "balance": {
            key: dict(Counter(getattr(i, key) or "(none)" for i in infos).most_common())
            for key in ("category", "generation", "task")
        },
        "findings": {},
    }
    for r in scan.rejections:
        _show(report["findings"], r.reason, {"where": r.where, "detail": r.detail, "raw": _clip(r.raw)})
    for reason, decs in decisions_by_reason.items():
        for dec in decs[:MAX_SHOWN]:
            _show(report["findings"], reason, {"where": by_index[dec.index].where, "detail": dec.detail})
    if written is not None:
        _add_prepare_figures(report, a, written, by_index)
    return report


def _steps(a: Analysis, written: Written | None) -> list[dict[str, Any]]:
    """Counts per step, in pipeline order: what went in, what each removed, what came out."""
    scan = a.scan
    reasons = Counter(dec.reason for dec in a.decisions)
    schema = Counter(r.reason for r in scan.rejections)
    steps = [
        {
            "step": "read",
            "in": scan.lines - scan.blank_lines,
            "removed": dict(schema),
            "out": len(scan.infos),
            "note": f"{scan.blank_lines} blank line(s) skipped",
        },
        {
            "step": "repair",
            "in": len(scan.infos),
            "removed": {},
            "out": len(scan.infos),
            "note": f"{scan.escapes_fixed} with literal \\n escapes fixed; {scan.scrubbed_count} scrubbed of "
            f"secrets/PII; {a.system_prompt_added} given the system prompt",
        },
    ]
    n = len(scan.infos)
    for name, group in (("filter", FILTER_REASONS), ("deduplicate", DEDUPE_REASONS)):
        removed = {r: reasons[r] for r in group if reasons[r]}
        steps.append({"step": name, "in": n, "removed": removed, "out": n - sum(removed.values())})
        n -= sum(removed.values())
    if written is not None:
        removed = Counter(dec.reason for dec in written.contaminated)
        eval_removed = {"overlaps-eval": removed["overlaps-eval"]} if removed["overlaps-eval"] else {}
        steps.append(
            {
                "step": "decontaminate-eval",
                "in": n,
                "removed": eval_removed,
                "out": n - sum(eval_removed.values()),
                "note": f"against {written.eval_prompts} evaluation prompts",
            }
        )
        n -= sum(eval_removed.values())
        steps.append(
            {
                "step": "split",
                "in": n,
                "removed": {},
                "out": n,
                "note": f"{len(written.heldout_indexes)} held out (ratio {a.cfg.data.heldout_ratio}, "
                f"seed {a.cfg.data.seed})",
            }
        )
        held = {r: removed[r] for r in ("overlaps-heldout", "from-heldout-source") if removed[r]}
        steps.append(
            {
                "step": "decontaminate-heldout",
                "in": n,
                "removed": held,
                "out": n - sum(held.values()),
                "note": "training prompts against the held-out prompts; examples derived from held-out "
                "source files",
            }
        )
        n -= sum(held.values())
        steps.append(
            {
                "step": "write",
                "in": n,
                "removed": {},
                "out": written.train + written.heldout,
                "note": f"train.jsonl {written.train}, heldout.jsonl {written.heldout}",
            }
        )
    return steps


def _system_prompts(a: Analysis) -> dict[str, Any]:
    scan = a.scan
    common = [{"text": scan.system_texts[k], "count": n} for k, n in scan.system_prompts.most_common(5)]
    chosen_key = next((k for k, t in scan.system_texts.items() if t == a.system_prompt), None)
    return {
        "distinct": len(scan.system_prompts),
        "missing": scan.missing_system,
        "most_common": common,
        "chosen": a.system_prompt,
        "added": a.system_prompt_added,
        "different": sum(n for k, n in scan.system_prompts.items() if k != chosen_key),
    }


def _duplicates(a: Analysis) -> dict[str, int]:
    def repeats(keys) -> int:
        seen: set = set()
        count = 0
        for k in keys:
            count += k in seen
            seen.add(k)
        return count

    infos = a.scan.infos
    near = sum(dec.reason == "near-duplicate" for dec in a.decisions)
    return {
        "exact_examples": repeats(i.example_key for i in infos),
        "repeated_prompts": repeats(i.prompt_key for i in infos),
        "repeated_answers": repeats(i.answer_key for i in infos),
        "near_duplicates": near,
        "near_duplicate_threshold": a.cfg.data.near_duplicate_threshold,
    }


def _distribution(values: list[int], over: int | None = None) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values)
    counts, edges = np.histogram(arr, bins=min(HISTOGRAM_BINS, max(1, len(set(values)))))
    out = {
        "count": len(values),
        "min": int(arr.min()),
        "median": float(np.median(arr)),
        "mean": round(float(arr.mean()), 1),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": counts.tolist()},
    }
    if over is not None:
        out["limit"] = over
        out["over_limit"] = int((arr > over).sum())
    return out


def _add_prepare_figures(report: dict[str, Any], a: Analysis, w: Written, by_index: dict) -> None:
    report["split"] = {
        "train": w.train,
        "heldout": w.heldout,
        "ratio": a.cfg.data.heldout_ratio,
        "seed": a.cfg.data.seed,
        "by_category": w.split_by_category,
        "prompts_on_both_sides": w.straddling_prompts,
    }
    report["decontamination"] = {
        "ngram": a.cfg.data.decontaminate_ngram,
        "threshold": a.cfg.data.decontaminate_threshold,
        "eval_prompts": w.eval_prompts,
        "removed": dict(Counter(dec.reason for dec in w.contaminated)),
    }
    for dec in w.contaminated[:MAX_SHOWN]:
        _show(report["findings"], dec.reason, {"where": by_index[dec.index].where, "detail": dec.detail})
    cpt = w.cpt.stats
    report["cpt"] = {
        **cpt.to_dict(),
        "chunk_token_limit": w.cpt.chunk_tokens,
        "chunk_tokens_distribution": _distribution(cpt.chunk_tokens),
    }
    for r in w.cpt.rejections[:MAX_SHOWN]:
        _show(report["findings"], r.reason, {"where": r.where, "detail": r.detail})
    report["inputs"]["sources"] = cpt.files
    report["selftrain_prompts"] = w.selftrain_prompts
    if w.replay is not None:
        report["replay"] = w.replay.counts()
        for r in w.replay.rejections[:MAX_SHOWN]:
            _show(report["findings"], r.reason, {"where": r.where, "detail": r.detail})


def _show(findings: dict[str, list], reason: str, item: dict[str, Any]) -> None:
    shown = findings.setdefault(reason, [])
    if len(shown) < MAX_SHOWN:
        shown.append(item)


def _clip(text: str | None, limit: int = 300) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f" … ({len(text) - limit} more characters)"
