"""The fill-in-the-middle suite: completion the way an editor asks for it, on BBj the model never saw.

Cases come from the data stage's held-out source files (`heldout_sources.jsonl`: files kept out of
stage 1 and out of every derived conversation). Only files that compile as they are make cases, so a
filled-in file that fails to compile is the completion's fault. A case masks

- `line`: one whole statement line (with its line end),
- `block`: 2 to `max_block_lines` consecutive lines,
- `statement`: the rest of a line from a token boundary after its first word (the cursor stands
  inside the statement; the line end stays in the suffix);

never a comment line, never a `:` continuation line or the line before one. The model sees the
PSM prompt (models/fim.py) with `context_lines_before`/`after` lines around the hole, as editors send
a window of the file rather than all of it.

Per sample: exact match (trailing blanks of each line and blank lines around ignored), edit
similarity (1 - Levenshtein distance / longer length, on the same normalised texts), compile@1 of
the whole file with the completion put in the hole, and `stopped`: the completion ended by itself
(an end or FIM token, not the length limit) without running on into the suffix (writing the
suffix's next line once more than the expected middle holds it). The same three again for what an
editor shows (`shown`: editors cut a completion before a line that repeats the one below the cursor):
a model that writes the right middle and then runs on into the code below fails the raw exact match
but not this one.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_jsonl
from bbjtune.bbj.compile import compile_code
from bbjtune.errors import BbjtuneError
from bbjtune.models.fim import FIM_STOP_TOKENS, contains_fim_token, fim_prompt
from bbjtune.models.generate import Request

SUITE_NAME = "fim"
CASES_FILE = "fim_cases.jsonl"
KINDS = ("line", "block", "statement")
MAX_LINE_CHARS = 240
_BOUNDARY_AFTER = " =(,+-*/<>;"


@dataclass
class FimCase:
    id: str
    source: str
    kind: str
    before: str  # the file before the prompt's window (not sent)
    prefix: str  # sent: the window's lines before the hole
    middle: str  # expected
    suffix: str  # sent: the window's lines after the hole
    after: str  # the file after the window (not sent)
    line: int  # 1-based line of the hole's start

    def prompt(self) -> str:
        return fim_prompt(self.prefix, self.suffix)

    def filled(self, completion: str) -> str:
        """The whole file with `completion` in the hole."""
        return self.before + self.prefix + completion + self.suffix + self.after

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FimCase:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


# ----------------------------------------------------------------------------- building the suite


def read_heldout_sources(path: Path) -> list[dict[str, str]]:
    """The data stage's held-out source files ({"source", "text"} per line)."""
    if not path.exists():
        raise BbjtuneError(
            f"{path} not found (the FIM suite is built from the held-out source files)",
            "run `bbjtune data prepare CONFIG` with data.sources (from 10 files on, "
            "data.heldout_sources_ratio of them are held out), or set eval.fim.enabled: false",
        )
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BbjtuneError(
                f"{path}:{n}: not valid JSON ({exc.msg})", "re-run `bbjtune data prepare CONFIG`"
            ) from None
        if isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("source"), str):
            records.append(row)
    return records


def _is_code(line: str) -> bool:
    s = line.strip()
    return (
        bool(s) and not s.lower().startswith("rem") and not s.startswith(":") and len(line) <= MAX_LINE_CHARS
    )


def _hole_lines(lines: list[str], start: int, count: int) -> bool:
    """Whether lines[start:start+count] can be masked: starting on a code line, holding code, and not
    ending before a `:` continuation line (that would cut a statement in two)."""
    end = start + count
    if (
        end > len(lines)
        or not _is_code(lines[start])
        or any(len(ln) > MAX_LINE_CHARS for ln in lines[start:end])
    ):
        return False
    if sum(_is_code(ln) for ln in lines[start:end]) < min(count, 2):
        return False
    return not (end < len(lines) and lines[end].startswith(":"))


def _statement_cuts(line: str) -> list[int]:
    """Offsets inside a line where an editor's cursor may stand: after a token boundary past the first word."""
    body = line.rstrip("\n")
    first = len(body) - len(body.lstrip())
    word_end = first
    while word_end < len(body) and not body[word_end].isspace() and body[word_end] not in "=(":
        word_end += 1
    return [
        i + 1 for i in range(word_end, len(body) - 2) if body[i] in _BOUNDARY_AFTER and body[i + 1 :].strip()
    ]


def build_cases(
    records: Sequence[dict[str, str]],
    samples: int,
    seed: int,
    kinds: Sequence[str] = KINDS,
    max_block_lines: int = 4,
    context_lines_before: int = 40,
    context_lines_after: int = 20,
    compiler: str = "auto",
) -> tuple[list[FimCase], dict[str, Any]]:
    """`samples` cases spread over the files and kinds (deterministic for a seed); and what was used."""
    usable, skipped = [], []
    for r in sorted(records, key=lambda r: r["source"]):
        if (
            contains_fim_token(r["text"])
            or not compile_code(r["text"], compiler, Path(r["source"]).name).compiles
        ):
            skipped.append(r["source"])
        else:
            usable.append(r)
    info = {"files": len(records), "files_used": len(usable), "files_not_compiling": skipped}
    if not usable or samples <= 0:
        return [], info
    rng = random.Random(f"{seed}:fim-suite")
    cases: list[FimCase] = []
    taken: set[tuple[str, str, int]] = set()
    attempts = 0
    while len(cases) < samples and attempts < samples * 20:
        attempts += 1
        kind = kinds[len(cases) % len(kinds)]
        record = usable[(len(cases) // len(kinds) + attempts) % len(usable)]
        case = _make_case(record, kind, rng, max_block_lines, context_lines_before, context_lines_after)
        if case is None or (case.source, case.kind, case.line) in taken:
            continue
        taken.add((case.source, case.kind, case.line))
        cases.append(case)
    return cases, info


def _make_case(
    record: dict[str, str],
    kind: str,
    rng: random.Random,
    max_block_lines: int,
    before_lines: int,
    after_lines: int,
) -> FimCase | None:
    lines = record["text"].splitlines(keepends=True)
    count = rng.randint(2, max(2, max_block_lines)) if kind == "block" else 1
    starts = [i for i in range(len(lines)) if _is_code(lines[i]) and _hole_lines(lines, i, count)]
    if kind == "statement":
        starts = [i for i in starts if _statement_cuts(lines[i])]
    if not starts:
        return None
    start = rng.choice(starts)
    head = "".join(lines[:start])
    if kind == "statement":
        line = lines[start]
        cut = rng.choice(_statement_cuts(line))
        end_of_text = len(line.rstrip("\n"))
        head, middle, tail_first = head + line[:cut], line[cut:end_of_text], line[end_of_text:]
    else:
        middle, tail_first = "".join(lines[start : start + count]), ""
    tail = tail_first + "".join(lines[start + count :])
    window_start = max(0, start - before_lines)
    before = "".join(lines[:window_start])
    prefix = head[len(before) :]
    after_cut = _nth_line_end(tail, after_lines)
    return FimCase(
        id=f"{Path(record['source']).name}:{start + 1}:{kind}",
        source=record["source"],
        kind=kind,
        before=before,
        prefix=prefix,
        middle=middle,
        suffix=tail[:after_cut],
        after=tail[after_cut:],
        line=start + 1,
    )


def _nth_line_end(text: str, n: int) -> int:
    pos = 0
    for _ in range(n):
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        pos = nl + 1
    return pos


def write_cases(path: Path, cases: Sequence[FimCase]) -> None:
    atomic_write_jsonl(path, [c.to_dict() for c in cases])


def read_cases(path: Path) -> list[FimCase]:
    if not path.exists():
        return []
    return [
        FimCase.from_dict(json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def fim_requests(cases: Sequence[FimCase], max_new_tokens: int) -> list[Request]:
    return [
        Request(
            text=c.prompt(),
            stop=FIM_STOP_TOKENS,
            max_new_tokens=max_new_tokens,
            meta={
                "suite": SUITE_NAME,
                "id": c.id,
                "prompt": _readable(c),
                "category": c.kind,
                "generation": None,
                "task": "fim",
            },
        )
        for c in cases
    ]


def _readable(case: FimCase) -> str:
    """The hole in its context, for people reading generations.jsonl (the model got case.prompt())."""
    head = "".join(case.prefix.splitlines(keepends=True)[-4:])
    tail = "".join(case.suffix.splitlines(keepends=True)[:3])
    return f"{case.source} line {case.line} ({case.kind}):\n{head}⟨fill⟩{tail}"


# ----------------------------------------------------------------------------- scoring


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1.0 for equal texts, 0.0 for nothing in common."""
    if not a and not b:
        return 1.0
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1.0 - previous[-1] / len(a)


def ran_past_suffix(case: FimCase, completion: str) -> bool:
    """True when the completion writes the suffix's next line more often than the expected middle does."""
    following = next((ln.strip() for ln in case.suffix.split("\n") if ln.strip()), "")
    if len(following) < 3:
        return False
    return completion.count(following) > case.middle.count(following)


def shown(case: FimCase, completion: str) -> str:
    """The part of a completion an editor shows: the completion cut before the first line that repeats
    the suffix's next non-blank line (the model has run on into code that is already below the cursor).

    Editor completion tools stop a multi-line completion there (Continue stops at a line similar to the
    one after the cursor; this takes exact repeats only, so it cuts no more than an editor would); the
    raw metrics score the whole completion instead. The rule is the same
    for every kind of hole: a statement hole's completion may go on past its line, as it may in an editor
    when the cursor stands at the end of the line.
    """
    following = next((ln.strip() for ln in case.suffix.split("\n") if ln.strip()), "")
    kept = []
    for line in completion.splitlines(keepends=True):
        if following and line.strip() == following:
            break
        kept.append(line)
    return "".join(kept)


def score_fim(
    rows: Sequence[dict[str, Any]], cases: Sequence[FimCase], n_samples: int, compiler: str = "auto"
) -> list[dict[str, Any]]:
    """One score per (case, sample); a missing or failed sample fails every check."""
    by_key = {(r["id"], r["sample"]): r for r in rows if r.get("suite") == SUITE_NAME}
    scores = []
    for case in cases:
        for s in range(n_samples):
            row = by_key.get((case.id, s))
            error = "no generation for this sample" if row is None else row.get("error")
            out = "" if row is None or error else row.get("output") or ""
            score = {
                "suite": SUITE_NAME,
                "id": case.id,
                "sample": s,
                "category": case.kind,
                "generation": None,
                "task": "fim",
                "error": error,
                "exact": False,
                "edit_similarity": 0.0,
                "compiles": False,
                "compiler": None,
                "compile_reason": f"no answer: {error}" if error else "",
                "diagnostics": [],
                "stopped": False,
                "ran_past_suffix": False,
                "shown_exact": False,
                "shown_edit_similarity": 0.0,
                "shown_compiles": False,
                "patterns_ok": None,
                "factual": None,
            }
            if not error:
                got, want = normalise(out), normalise(case.middle)
                result = compile_code(case.filled(out), compiler, Path(case.source).name)
                past = ran_past_suffix(case, out)
                view = shown(case, out)
                as_shown = (
                    result
                    if view == out
                    else compile_code(case.filled(view), compiler, Path(case.source).name)
                )
                score.update(
                    exact=got == want,
                    edit_similarity=round(edit_similarity(got, want), 4),
                    compiles=result.compiles,
                    compiler=result.compiler,
                    compile_reason=result.reason,
                    diagnostics=result.diagnostics,
                    ran_past_suffix=past,
                    stopped=row.get("finish_reason") == "stop" and not past,
                    shown_exact=normalise(view) == want,
                    shown_edit_similarity=round(edit_similarity(normalise(view), want), 4),
                    shown_compiles=as_shown.compiles,
                )
            scores.append(score)
    return scores


def summarize_fim(scores: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """results.json's "fim": the four rates overall and per kind."""
    if not scores:
        return None

    def rates(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        n = len(group)
        return {
            "n_samples": n,
            "exact_match": round(sum(s["exact"] for s in group) / n, 4),
            "edit_similarity": round(sum(s["edit_similarity"] for s in group) / n, 4),
            "compile_at_1": round(sum(bool(s["compiles"]) for s in group) / n, 4),
            "stop_rate": round(sum(s["stopped"] for s in group) / n, 4),
            # what an editor shows (`shown`); None for scores written before it was measured
            **{
                key: (
                    round(sum(float(s[field]) for s in group) / n, 4)
                    if all(field in s for s in group)
                    else None
                )
                for key, field in (
                    ("shown_exact_match", "shown_exact"),
                    ("shown_edit_similarity", "shown_edit_similarity"),
                    ("shown_compile_at_1", "shown_compiles"),
                )
            },
        }

    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        kinds[s["category"]].append(s)
    return {
        **rates(scores),
        "n_cases": len({s["id"] for s in scores}),
        "by_kind": {k: rates(v) for k, v in sorted(kinds.items())},
    }


FIM_METRICS = (
    ("exact_match", "FIM exact match"),
    ("edit_similarity", "FIM edit similarity"),
    ("compile_at_1", "FIM compile@1"),
    ("stop_rate", "FIM stop rate"),
    ("shown_exact_match", "FIM exact match, as an editor shows it"),
    ("shown_edit_similarity", "FIM edit similarity, as an editor shows it"),
    ("shown_compile_at_1", "FIM compile@1, as an editor shows it"),
)
