"""Reading two evaluation runs' `generations.jsonl` and pairing their answers prompt by prompt.

A review item is one prompt with one answer from each run: the rows with the same (suite, id)
and sample 0. Prompts that only one run answered are left out and counted. A line that is not a
usable generation record is reported with its file and line number and skipped, so one bad line
never stops a review.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from bbjtune.errors import BbjtuneError
from bbjtune.models.generations import GENERATIONS_FILE


@dataclass(frozen=True)
class Answer:
    """One model's answer to a prompt: the raw text and the BBj code extracted from it."""

    output: str
    code: str
    failed: bool  # the generation recorded an error (the answer may be empty)


@dataclass(frozen=True)
class Item:
    """One prompt with the answers of run A and run B."""

    suite: str
    prompt_id: str
    category: str
    generation: str
    task: str
    prompt: str
    a: Answer
    b: Answer

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.prompt_id}"

    @property
    def digest(self) -> str:
        """Changes whenever the prompt or either answer changes (ratings belong to one version)."""
        payload = json.dumps(
            [self.suite, self.prompt_id, self.prompt, self.a.output, self.b.output], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass
class Run:
    label: str
    path: Path  # the generations.jsonl file


@dataclass
class ReviewSet:
    """Everything a review needs from the two runs, plus what had to be skipped and why."""

    run_a: Run
    run_b: Run
    items: list[Item]
    problems: list[str] = field(default_factory=list)
    only_in_a: int = 0
    only_in_b: int = 0


def find_generations(path: str | Path) -> Path:
    """Accept an eval run directory (eval/<label>/) or its generations.jsonl file."""
    path = Path(path)
    if path.is_dir():
        path = path / GENERATIONS_FILE
    if not path.is_file():
        raise BbjtuneError(
            f"{path} not found",
            "pass an evaluation run directory (e.g. runs/<name>/eval/tuned) or its "
            "generations.jsonl; run `bbjtune eval` first",
        )
    return path


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def read_generations(path: Path) -> tuple[dict[tuple[str, str], dict], str | None, list[str]]:
    """The sample-0 rows of one generations.jsonl by (suite, id), the run's model label, problems."""
    rows: dict[tuple[str, str], dict] = {}
    problems: list[str] = []
    label = None
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BbjtuneError(
            f"cannot read {path}: {exc.strerror}", "check the path and its permissions"
        ) from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not valid JSON ({exc.msg}); line skipped")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{number}: not a JSON object; line skipped")
                continue
            prompt_id = row.get("id")
            if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool) or str(prompt_id) == "":
                problems.append(f'{path}:{number}: no "id"; line skipped')
                continue
            if row.get("sample", 0) not in (0, None):
                continue
            if not isinstance(row.get("output"), (str, type(None))):
                problems.append(f'{path}:{number}: "output" is not text; line skipped')
                continue
            key = (_text(row.get("suite")), str(prompt_id))
            if key in rows:
                problems.append(
                    f"{path}:{number}: a second sample 0 for {key[0]}/{key[1]}; the first is kept"
                )
                continue
            rows[key] = row
            label = label or (_text(row.get("model")) or None)
    return rows, label, problems


def _answer(row: dict) -> Answer:
    return Answer(output=_text(row.get("output")), code=_text(row.get("code")), failed=bool(row.get("error")))


def pair_runs(run_a: str | Path, run_b: str | Path) -> ReviewSet:
    """Pair the answers of two runs by (suite, id), in run A's order."""
    path_a, path_b = find_generations(run_a), find_generations(run_b)
    if path_a.resolve() == path_b.resolve():
        raise BbjtuneError(f"both runs are the same file ({path_a})", "pass two different evaluation runs")
    rows_a, label_a, problems_a = read_generations(path_a)
    rows_b, label_b, problems_b = read_generations(path_b)
    label_a = label_a or path_a.parent.name
    label_b = label_b or path_b.parent.name
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"

    items = []
    for key, row_a in rows_a.items():
        row_b = rows_b.get(key)
        if row_b is None:
            continue
        items.append(
            Item(
                suite=key[0],
                prompt_id=key[1],
                category=_text(row_a.get("category")) or _text(row_b.get("category")) or "uncategorized",
                generation=_text(row_a.get("generation")) or _text(row_b.get("generation")),
                task=_text(row_a.get("task")) or _text(row_b.get("task")),
                prompt=_text(row_a.get("prompt")) or _text(row_b.get("prompt")),
                a=_answer(row_a),
                b=_answer(row_b),
            )
        )
    review = ReviewSet(
        Run(label_a, path_a),
        Run(label_b, path_b),
        items,
        problems_a + problems_b,
        only_in_a=len(rows_a.keys() - rows_b.keys()),
        only_in_b=len(rows_b.keys() - rows_a.keys()),
    )
    if not items:
        raise BbjtuneError(
            f"{path_a} and {path_b} have no prompt in common (matched by suite and id, sample 0)",
            "review two evaluations of the same suite, e.g. eval/base and eval/tuned of one run",
        )
    return review
