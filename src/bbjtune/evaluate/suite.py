"""Eval suites: BBj prompts with the checks their answers must pass.

A suite is a JSONL file (one case per line) or a YAML file (a list of cases, or `cases:` holding
one). A case:

    id          unique within the suite
    prompt      what the user asks
    category    file-io, strings, oop, gui, dwc, sql, errors, character-ui, conversion, ...
    generation  character | vpro5 | gui | dwc (the BBj generation the answer should use) or mixed
    task        write | fix | convert | explain | factual | ...
    expect      {"must": [regex, ...], "must_not": [regex, ...]}  checked against the whole answer
    answer      optional regex: the answer is factually right when it matches
    reference   optional reference answer (the suite's own tests check every pattern against it)
    compile     optional true/false: whether the answer's code is compiled (default: yes for tasks
                other than explain/factual whose reference holds BBj code)
    system      optional system prompt for this case

Patterns are Python regular expressions compiled without flags; write `(?i)` for
case-insensitive matching. A bad line never stops an evaluation: it is reported (file, line,
reason) and skipped.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bbjtune.bbj import extract_bbj
from bbjtune.errors import BbjtuneError

PROSE_TASKS = frozenset({"explain", "factual"})
KNOWN_GENERATIONS = frozenset({"character", "vpro5", "gui", "dwc", "mixed"})
REQUIRED_KEYS = ("id", "prompt", "category", "generation", "task")
OPTIONAL_KEYS = ("expect", "answer", "reference", "compile", "system")


@dataclass
class EvalCase:
    suite: str
    id: str
    prompt: str
    category: str
    generation: str
    task: str
    must: list[str] = field(default_factory=list)
    must_not: list[str] = field(default_factory=list)
    answer: str | None = None
    reference: str | None = None
    compile: bool = True
    system: str | None = None
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.suite, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "id": self.id,
            "prompt": self.prompt,
            "category": self.category,
            "generation": self.generation,
            "task": self.task,
            "expect": {"must": self.must, "must_not": self.must_not},
            "answer": self.answer,
            "reference": self.reference,
            "compile": self.compile,
            "system": self.system,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalCase:
        expect = d.get("expect") or {}
        return cls(
            suite=d["suite"],
            id=d["id"],
            prompt=d["prompt"],
            category=d["category"],
            generation=d["generation"],
            task=d["task"],
            must=list(expect.get("must", [])),
            must_not=list(expect.get("must_not", [])),
            answer=d.get("answer"),
            reference=d.get("reference"),
            compile=bool(d.get("compile", True)),
            system=d.get("system"),
        )


@dataclass(frozen=True)
class SuiteProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class Suite:
    name: str
    path: Path
    cases: list[EvalCase]
    problems: list[SuiteProblem]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; bad cases become `problems`, the rest are kept."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BbjtuneError(
            f"eval suite {path} does not exist",
            "check eval.suites in the config (or --suite); the project's suites are in evals/",
        ) from None
    except UnicodeDecodeError as exc:
        raise BbjtuneError(
            f"eval suite {path} is not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise BbjtuneError(
            f"cannot read eval suite {path}: {exc.strerror}", "check the file's permissions"
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        raw, problems = _read_yaml(text, str(path))
    else:
        raw, problems = _read_jsonl(text, str(path))
    suite_name = path.stem
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    for line, obj in raw:
        case, reason = _make_case(obj, suite_name, line)
        if reason is None and case.id in seen:
            reason = f"duplicate id '{case.id}' (first used on line {seen[case.id]})"
        if reason is not None:
            problems.append(SuiteProblem(str(path), line, reason))
            continue
        seen[case.id] = line
        cases.append(case)
    if not cases and not problems:
        problems.append(SuiteProblem(str(path), 1, "the suite holds no cases"))
    return Suite(suite_name, path, cases, problems)


def _read_jsonl(text: str, name: str) -> tuple[list[tuple[int, Any]], list[SuiteProblem]]:
    rows, problems = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            rows.append((i, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(SuiteProblem(name, i, f"not valid JSON ({exc.msg} at column {exc.colno})"))
    return rows, problems


def _read_yaml(text: str, name: str) -> tuple[list[tuple[int, Any]], list[SuiteProblem]]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None and isinstance(root, yaml.MappingNode):
            for key, value in root.value:
                if key.value == "cases":
                    root = value
                    break
        if root is None:
            return [], []
        if not isinstance(root, yaml.SequenceNode):
            return [], [
                SuiteProblem(
                    name,
                    root.start_mark.line + 1,
                    "a YAML suite must be a list of cases (or hold one under 'cases:')",
                )
            ]
        return [
            (node.start_mark.line + 1, loader.construct_object(node, deep=True)) for node in root.value
        ], []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [], [
            SuiteProblem(name, mark.line + 1 if mark else 1, f"invalid YAML: {getattr(exc, 'problem', exc)}")
        ]
    finally:
        loader.dispose()


def _make_case(obj: Any, suite: str, line: int) -> tuple[EvalCase | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"a case must be an object, got {type(obj).__name__}"
    unknown = sorted(set(obj) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        return (
            None,
            f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}",
        )
    for key in REQUIRED_KEYS:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            return None, f"'{key}' is missing or not a non-empty string"
    expect = obj.get("expect") or {}
    if not isinstance(expect, dict) or set(expect) - {"must", "must_not"}:
        return None, "'expect' must be an object with the lists 'must' and/or 'must_not'"
    patterns: dict[str, list[str]] = {}
    for kind in ("must", "must_not"):
        items = expect.get(kind) or []
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            return None, f"'expect.{kind}' must be a list of regular expressions"
        for p in items:
            if (err := regex_error(p)) is not None:
                return None, f"bad regex in expect.{kind}: {p!r}: {err}"
        patterns[kind] = items
    answer = obj.get("answer")
    if answer is not None and (not isinstance(answer, str) or regex_error(answer) is not None):
        return (
            None,
            f"'answer' must be a valid regular expression: {regex_error(answer) if isinstance(answer, str) else answer!r}",
        )
    for key in ("reference", "system"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return None, f"'{key}' must be a string"
    if "compile" in obj and not isinstance(obj["compile"], bool):
        return None, "'compile' must be true or false"
    reference = obj.get("reference")
    compile_it = obj["compile"] if "compile" in obj else default_compile(obj["task"], reference)
    return EvalCase(
        suite=suite,
        id=obj["id"].strip(),
        prompt=obj["prompt"],
        category=obj["category"].strip(),
        generation=obj["generation"].strip(),
        task=obj["task"].strip(),
        must=patterns["must"],
        must_not=patterns["must_not"],
        answer=answer,
        reference=reference,
        compile=compile_it,
        system=obj.get("system"),
        line=line,
    ), None


def regex_error(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def default_compile(task: str, reference: str | None) -> bool:
    """Compile the answer's code unless the task asks for prose or the reference has no code."""
    if task.strip().lower() in PROSE_TASKS:
        return False
    if reference is None:
        return True

    return bool(extract_bbj(reference).strip())


def limit_cases(cases: list[EvalCase], limit: int | None) -> list[EvalCase]:
    """At most `limit` cases, taken round-robin over the categories so a short run still covers them all."""
    if limit is None or limit >= len(cases):
        return list(cases)
    by_category: dict[str, list[EvalCase]] = defaultdict(list)
    for case in cases:
        by_category[case.category].append(case)
    queues = list(by_category.values())
    picked: list[EvalCase] = []
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    order = {id(c): i for i, c in enumerate(cases)}
    return sorted(picked, key=lambda c: order[id(c)])
