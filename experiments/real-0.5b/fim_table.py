"""The FIM experiment's table: editor completion next to compile@1 and HumanEval, per evaluated model.

    python experiments/real-0.5b/fim_table.py runs/real-0.5b/fim/eval   # prints Markdown, writes summary.md

Reads each <label>/results.json that run.sh's `fim` step wrote (base, stage 1 without and with FIM,
and the full stage 1+2 models); a missing figure prints as "–".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["base", "stage1-no-fim", "stage1-fim", "no-fim", "fim"]
WHAT = {
    "base": "the model as released",
    "stage1-no-fim": "stage 1, plain text",
    "stage1-fim": "stage 1, 50% FIM",
    "no-fim": "stage 1 plain + stage 2",
    "fim": "stage 1 with 50% FIM + stage 2",
}


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def row(label: str, r: dict) -> str:
    f = r.get("fim") or {}
    he = (r.get("humaneval") or {}).get("pass_at_1")
    kinds = f.get("by_kind") or {}
    cells = [
        *(pct(f.get(k)) for k in ("exact_match", "edit_similarity", "compile_at_1", "stop_rate")),
        *(pct(f.get(k)) for k in ("shown_exact_match", "shown_edit_similarity", "shown_compile_at_1")),
        *(pct((kinds.get(k) or {}).get("shown_exact_match")) for k in ("line", "block", "statement")),
        pct((r.get("compile_at_k") or {}).get("1")),
        pct((r.get("clean_at_k") or {}).get("1")),
        pct(he),
    ]
    return f"| {label} | {WHAT.get(label, '')} | " + " | ".join(cells) + " |"


def main(eval_dir: Path) -> str:
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted(eval_dir.glob("*/results.json"))}
    found = {label: r for label, r in found.items() if "tiers" not in r}  # not the compare-* folders
    labels = [x for x in ORDER if x in found] + sorted(set(found) - set(ORDER))
    n = next((r["fim"]["n_cases"] for r in found.values() if r.get("fim")), 0)
    intro = (
        f"FIM: {n} holes in held-out real BBj files (never trained on), in %. Raw: the whole completion "
        "(exact match, edit similarity, compile@1 of the filled file, stops by itself). As shown: cut where "
        "an editor cuts it (before a line repeating the one after the hole); "
        "per-kind columns are exact match as shown. BBj compile@1 / clean@1 (chat) and HumanEval pass@1 as "
        "in the main tables."
    )
    header = (
        "| model | what | exact | edit sim. | compile@1 | stops | shown: exact | shown: edit sim. "
        "| shown: compile@1 | line | block | statement | BBj compile@1 | BBj clean@1 | HumanEval |"
    )
    lines = [intro, "", header, "|" + "---|" * 15]
    lines += [row(label, found[label]) for label in labels]
    text = "\n".join(lines) + "\n"
    (eval_dir / "summary.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: fim_table.py EVAL_DIR   (the eval folder run.sh's fim step wrote)")
    print(main(Path(sys.argv[1])), end="")
