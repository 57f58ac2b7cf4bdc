"""The human review's summary file, `review/results.json`: finding, reading and printing it.

`bbjtune review` writes it (review/results.py builds it from the ratings); `bbjtune eval compare`
shows it in its report. Both stages use this module, so neither imports the other. The fields
are listed in INTERFACES.md and in review/results.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from bbjtune.errors import BbjtuneError

RESULTS_NAME = "results.json"
DB_NAME = "ratings.sqlite"
REVIEW_DIR_NAME = "review"
SUMMARY_KIND = "bbjtune-review"


def candidates(path: Path, name: str) -> list[Path]:
    """Where `name` may be, from the file itself, the review folder, an eval run folder
    (eval/<label>/ -> eval/review/) or the eval folder (eval/ -> eval/review/)."""
    folder = path.parent if path.is_file() else path
    found = [path] if path.is_file() and (path.name == name or name == DB_NAME) else []
    for candidate in (folder / name, folder / REVIEW_DIR_NAME / name, folder.parent / REVIEW_DIR_NAME / name):
        if candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


def load_review_summary(path: str | Path) -> dict | None:
    """The human review summary for an evaluation, or None when nobody has reviewed it.

    `path` may be the review's results.json, the review folder, an evaluation run folder
    (eval/<label>/, or a file in it) or the eval folder: the summary is looked for in the folder
    itself, then in `review/` below it, then in `review/` beside it. The summary's runs.a / runs.b
    labels say which runs were compared; run B is the one whose win rate is reported.
    A review that nobody has rated yet counts as absent. Raises BbjtuneError when a summary file
    exists but cannot be read.
    """
    for candidate in candidates(Path(path), RESULTS_NAME):
        try:
            summary = json.loads(candidate.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BbjtuneError(
                f"{candidate} is not valid JSON (line {exc.lineno})",
                "rewrite it with `bbjtune review export` on its review folder",
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise BbjtuneError(
                f"cannot read {candidate}: {exc}", "check the file and its permissions"
            ) from exc
        if isinstance(summary, dict) and summary.get("kind") == SUMMARY_KIND:
            return summary if summary.get("overall", {}).get("n_ratings") else None
    return None


def _percent(value: float | None) -> str:
    return "   –  " if value is None else f"{100 * value:5.1f}%"


def _row(name: str, r: dict) -> str:
    interval = (
        ""
        if r["win_rate"] is None
        else f"[{_percent(r['ci_low']).strip()} – {_percent(r['ci_high']).strip()}]"
    )
    return (
        f"  {name[:28]:28s} {_percent(r['win_rate'])} {interval:17s} "
        f"{r['wins']:4d} won {r['losses']:4d} lost {r['ties']:4d} tied  ({r['n_prompts']} prompts)"
    )


def format_summary(summary: dict) -> str:
    """The results as a small text table (the terminal; eval compare may show it in its report)."""
    a, b = summary["runs"]["a"]["label"], summary["runs"]["b"]["label"]
    lines = [
        f"{b} vs {a}: win rate of {b} (ties count half), 95% interval",
        f"  {summary['n_rated_items']} of {summary['n_items']} prompts rated by "
        f"{len(summary['reviewers'])} reviewer(s)",
        _row("all prompts", summary["overall"]),
    ]
    for title, key in (
        ("by category", "by_category"),
        ("by generation", "by_generation"),
        ("by reviewer", "by_reviewer"),
    ):
        if summary[key]:
            lines.append(f" {title}:")
            lines.extend(_row(name, r) for name, r in summary[key].items())
    scores = summary["scores"]
    if any(s["n"] for s in scores.values()):
        lines.append(f" mean scores (1-5)  {a} -> {b}:")
        lines.extend(f"  {name:28s} {s['a']:.2f} -> {s['b']:.2f}" for name, s in scores.items() if s["n"])
    return "\n".join(lines)
