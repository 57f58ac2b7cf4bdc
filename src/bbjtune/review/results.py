"""Review results: the summary `bbjtune eval compare` merges, and exports of every rating.

Reading and printing the summary is `bbjtune.review_summary` (evaluation reads it too).
`results.json` (in the review folder, `eval/review/` beside the evaluated runs) looks like

    {"kind": "bbjtune-review", "version": 1, "updated": "...",
     "runs": {"a": {"label": "base", "generations": "..."}, "b": {"label": "tuned", ...}},
     "n_items": 150, "n_rated_items": 40, "reviewers": ["Ann", "Bob"],
     "overall": {"win_rate": 0.62, "ci_low": 0.47, "ci_high": 0.75, "n_prompts": 40, "n_ratings": 55,
                 "wins": 30, "losses": 17, "ties": 8, "decisive_rate": 0.638},
     "by_category": {name: {same keys}}, "by_generation": {...}, "by_reviewer": {...},
     "scores": {"correctness": {"a": 3.1, "b": 3.9, "delta": 0.8, "n": 55}, "idiom": ..., "generation_fit": ...},
     "position_bias": {...}, "agreement": {...}, "method": "..."}

`win_rate` is run B's (the tuned model's) share of prompts won against run A, ties counting half,
with a 95% Wilson interval; see `stats.py` for why.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from bbjtune.artifacts import atomic_open, atomic_write_json, atomic_write_jsonl
from bbjtune.review import stats
from bbjtune.review.storage import CRITERIA, ReviewStore
from bbjtune.review_summary import DB_NAME, RESULTS_NAME, SUMMARY_KIND, candidates

METHOD = (
    "win_rate: share of prompts where reviewers preferred run B's answer over run A's; a tie counts "
    "half; several reviewers of one prompt are averaged; 95% Wilson score interval over prompts. "
    "decisive_rate: B's share of the ratings that were not ties."
)


def build_summary(store: ReviewStore) -> dict:
    """The summary of every counted rating in the store."""
    ratings = store.rating_records(active_only=True)
    label_a, label_b = store.labels()
    return {
        "kind": SUMMARY_KIND,
        "version": 1,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": {
            "a": {"label": label_a, "generations": store.meta("path_a")},
            "b": {"label": label_b, "generations": store.meta("path_b")},
        },
        "n_items": len(store.active_items()),
        "n_rated_items": len({r["item_id"] for r in ratings}),
        "reviewers": sorted({r["reviewer"] for r in ratings}, key=str.casefold),
        "overall": stats.win_rate(ratings),
        "by_category": stats.grouped_win_rates(ratings, lambda r: r["category"]),
        "by_generation": stats.grouped_win_rates(ratings, lambda r: r["generation"]),
        "by_reviewer": stats.grouped_win_rates(ratings, lambda r: r["reviewer"]),
        "scores": stats.mean_scores(ratings, CRITERIA),
        "position_bias": stats.position_bias(ratings),
        "agreement": stats.agreement(ratings),
        "method": METHOD,
    }


def write_results(store: ReviewStore, review_dir: str | Path) -> dict:
    """Write results.json into the review folder (atomically) and return the summary."""
    summary = build_summary(store)
    atomic_write_json(Path(review_dir) / RESULTS_NAME, summary)
    return summary


# ----------------------------------------------------------------------------- export

EXPORT_COLUMNS = (
    [
        "reviewer",
        "suite",
        "id",
        "category",
        "generation",
        "task",
        "preferred",
        "preferred_label",
        "left_label",
    ]
    + [f"{side}_{c}" for side in "ab" for c in CRITERIA]
    + ["comment", "prompt", "created", "updated", "counted"]
)


def export_rows(store: ReviewStore, include_set_aside: bool = False) -> list[dict]:
    """One dict per rating with the run labels spelled out (for JSONL and CSV)."""
    label_a, label_b = store.labels()
    labels = {"a": label_a, "b": label_b, "tie": "tie"}
    rows = []
    for r in store.rating_records(active_only=not include_set_aside):
        row = {
            "reviewer": r["reviewer"],
            "suite": r["suite"],
            "id": r["prompt_id"],
            "category": r["category"],
            "generation": r["generation"],
            "task": r["task"],
            "preferred": r["preferred"],
            "preferred_label": labels[r["preferred"]],
            "left_label": labels[r["left_side"]],
        }
        row.update({f"{side}_{c}": r[f"{side}_{c}"] for side in "ab" for c in CRITERIA})
        row.update(
            {
                "comment": r["comment"],
                "prompt": r["prompt"],
                "created": r["created"],
                "updated": r["updated"],
                "counted": r["active"],
            }
        )
        rows.append(row)
    return rows


def _csv_cell(value: object) -> object:
    """Keep spreadsheets from running reviewer or model text as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_ratings(
    store: ReviewStore,
    out_dir: str | Path,
    formats: tuple[str, ...] = ("jsonl", "csv"),
    include_set_aside: bool = False,
) -> list[Path]:
    """Write ratings.jsonl and/or ratings.csv into out_dir; returns the files written."""
    rows = export_rows(store, include_set_aside)
    out_dir = Path(out_dir)
    written = []
    if "jsonl" in formats:
        atomic_write_jsonl(out_dir / "ratings.jsonl", rows)
        written.append(out_dir / "ratings.jsonl")
    if "csv" in formats:
        with atomic_open(out_dir / "ratings.csv", "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _csv_cell(value) for key, value in row.items()})
        written.append(out_dir / "ratings.csv")
    return written


def find_database(path: str | Path) -> Path | None:
    """The review database for a ratings.sqlite path, a review folder, an eval run folder or eval folder."""
    path = Path(path)
    if path.is_file():
        return path
    found = candidates(path, DB_NAME)
    return found[0] if found else None
