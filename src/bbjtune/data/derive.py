"""Derive instruction pairs from real BBj source, for stage 2 when hand-written pairs are few.

Real BBj libraries document their methods with javadoc-style `rem /** ... rem */` blocks. From
each documented method we derive two ChatML examples:

- write:   "Write a BBj method ... that <doc>" → the method's code inside its class (so the answer
           compiles on its own, as a complete BBj file must);
- explain: "Explain what this BBj method does" + the code → the doc text as prose;

and from each small program one "complete this program" pair (its first part → the whole program).
Everything derived keeps its provenance (`source`, `derived`), so the data stage can deduplicate it
and decontaminate it against the evaluation suite like any other example.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bbjtune.data.cpt import SourceProblem, decode_source

METHOD_RE = re.compile(r"^\s*method\s+(?P<sig>.*)$", re.IGNORECASE)
METHODEND_RE = re.compile(r"^\s*methodend\b", re.IGNORECASE)
CLASS_RE = re.compile(
    r"^\s*class\s+(?:(?:public|private|protected|static|final)\s+)*"
    r"(?!(?:public|private|protected|static|final)\b)(?P<name>[\w.]+)",
    re.IGNORECASE,
)
CLASSEND_RE = re.compile(r"^\s*classend\b", re.IGNORECASE)
DOC_END_RE = re.compile(r"^\s*rem\s*(?:/\*\*.*)?\*/\s*$", re.IGNORECASE)
DOC_START_RE = re.compile(r"^\s*rem\s*/\*\*(?P<rest>.*)$", re.IGNORECASE)
DOC_LINE_RE = re.compile(r"^\s*rem\s?\s*\*?\s?(?P<text>.*)$", re.IGNORECASE)

MIN_DOC_CHARS = 25
MAX_METHOD_LINES = 60
COMPLETE_MIN_LINES, COMPLETE_MAX_LINES = 16, 140


@dataclass
class DocumentedMethod:
    path: str
    class_name: str | None
    signature: str  # the `method ...` line, stripped
    code: str  # from the method line to methodend, original indentation removed
    description: str  # the doc comment's prose
    tags: list[tuple[str, str]]  # (@param/@return/@throws, text)


def _dedent(lines: list[str]) -> str:
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] if line.strip() else "" for line in lines).rstrip() + "\n"


def _parse_doc(lines: list[str]) -> tuple[str, list[tuple[str, str]]]:
    prose: list[str] = []
    tags: list[tuple[str, str]] = []
    for raw in lines:
        m = DOC_START_RE.match(raw) or DOC_LINE_RE.match(raw)
        text = m.group("rest") if "rest" in m.re.groupindex else m.group("text")
        text = re.sub(r"\s*\*?/\s*$", "", text.replace("*/", "")).strip()
        if text.startswith("@"):
            tag, _, rest = text.partition(" ")
            tags.append((tag, rest.strip()))
        elif tags and text:
            tags[-1] = (tags[-1][0], f"{tags[-1][1]} {text}".strip())
        else:
            prose.append(text)
    description = re.sub(r"\s+", " ", " ".join(p for p in prose if p)).strip()
    description = re.sub(r"\{@(?:link|code) ([^}]*)\}", r"`\1`", description)
    return description, tags


def documented_methods(text: str, path: str) -> Iterator[DocumentedMethod]:
    lines = text.split("\n")
    class_name: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := CLASS_RE.match(line):
            class_name = m.group("name")
        elif CLASSEND_RE.match(line):
            class_name = None
        elif METHOD_RE.match(line) and i > 0 and DOC_END_RE.match(lines[i - 1]):
            start = i - 1
            while start > 0 and not DOC_START_RE.match(lines[start]) and DOC_LINE_RE.match(lines[start]):
                start -= 1
            end = i
            while end < len(lines) and not METHODEND_RE.match(lines[end]):
                end += 1
            if end < len(lines) and DOC_START_RE.match(lines[start]):
                description, tags = _parse_doc(lines[start:i])
                yield DocumentedMethod(
                    path, class_name, line.strip(), _dedent(lines[i : end + 1]), description, tags
                )
                i = end
        i += 1


def _method_name(signature: str) -> str:
    m = re.search(r"(\w+)\s*\(", signature)
    return m.group(1) if m else signature


def guess_generation(code: str) -> str:
    low = code.lower()
    if (
        "getwebmanager" in low
        or "getwebcomponent" in low
        or "dwc" in low
        or "setstyle(" in low
        or "addstyle(" in low
    ):
        return "dwc"
    if "'window'" in low or "'button'" in low:
        return "vpro5"
    if "'cs'" in low or re.search(r"@\(\s*\d", low):
        return "character"
    return "gui"


def _example(system: str, user: str, assistant: str, **meta: str) -> dict:
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]
    return {"messages": messages, **meta}


def _sentence(text: str) -> str:
    """End a doc phrase with a full stop, as prose answers do."""
    text = text.rstrip()
    return text + "." if text and text[-1].isalnum() or text.endswith(("`", ")", "'", '"')) else text


def in_class(method_code: str, class_name: str | None) -> str:
    """A method inside its class, so the code is a whole BBj file (continuation lines stay in column 0)."""
    if not class_name:
        return method_code
    body = "".join(
        "\n" if not line else (line + "\n" if line.startswith(":") else f"    {line}\n")
        for line in method_code.rstrip("\n").split("\n")
    )
    return f"class public {class_name}\n\n{body}\nclassend\n"


def pairs_from_method(m: DocumentedMethod, system: str) -> list[dict]:
    if len(m.description) < MIN_DOC_CHARS or "{@inheritDoc}" in m.description:
        return []
    body_lines = m.code.count("\n")
    if body_lines < 3 or body_lines > MAX_METHOD_LINES:
        return []
    owner = f" of the class `{m.class_name}`" if m.class_name else ""
    params = [
        f"- `{text.split()[0]}`: {' '.join(text.split()[1:])}"
        for tag, text in m.tags
        if tag == "@param" and text.split()
    ]
    returns = [text for tag, text in m.tags if tag == "@return" and text]
    spec = m.description
    if params:
        spec += "\n\nParameters:\n" + "\n".join(params)
    if returns:
        spec += f"\n\nReturns: {returns[0]}"
    meta = {"category": "oop", "generation": guess_generation(m.code), "source": m.path}
    code = in_class(m.code, m.class_name)
    write = _example(
        system,
        f"Write the BBj method `{_method_name(m.signature)}`{owner} with the signature `{m.signature}`. "
        f"It should do the following: {spec}",
        f"```bbj\n{code}```",
        task="write",
        derived="method-write",
        **meta,
    )
    explanation = _sentence(m.description)
    if params:
        explanation += "\n\nIts parameters:\n" + "\n".join(_sentence(p) for p in params)
    if returns:
        explanation += f"\n\nIt returns {_sentence(returns[0][0].lower() + returns[0][1:])}"
    explain = _example(
        system,
        f"Explain what this BBj method does:\n\n```bbj\n{code}```",
        explanation,
        task="explain",
        derived="method-explain",
        **meta,
    )
    return [write, explain]


def completion_pair(text: str, path: str, system: str) -> dict | None:
    """First part of a small program → the rest, split at a blank line near the middle."""
    lines = text.rstrip("\n").split("\n")
    if not COMPLETE_MIN_LINES <= len(lines) <= COMPLETE_MAX_LINES:
        return None
    mid = len(lines) // 2
    blanks = [
        i
        for i in range(len(lines) // 3, 2 * len(lines) // 3)
        if not lines[i].strip() and not lines[i + 1].startswith(":")
    ]
    cut = min(blanks, key=lambda i: abs(i - mid)) if blanks else mid
    if lines[cut].startswith(":") or (cut + 1 < len(lines) and lines[cut + 1].startswith(":")):
        return None
    head = "\n".join(lines[:cut]).rstrip() + "\n"
    return _example(
        system,
        f"Complete this BBj program:\n\n```bbj\n{head}```",
        f"Here is the complete program:\n\n```bbj\n{text.strip(chr(10))}\n```",
        task="write",
        derived="complete-program",
        category="program-structure",
        generation=guess_generation(text),
        source=path,
    )


def derive_pairs(files: Iterable[Path], system: str) -> Iterator[dict]:
    """All derived pairs from the given source files, each with a stable id."""
    for path in files:
        try:
            text, _ = decode_source(Path(path).read_bytes())
        except SourceProblem:
            continue  # binary or empty: nothing to learn from
        derived = [p for m in documented_methods(text, str(path)) for p in pairs_from_method(m, system)]
        if (pair := completion_pair(text, str(path), system)) is not None:
            derived.append(pair)
        for pair in derived:
            key = "\n".join(msg["content"] for msg in pair["messages"][1:])
            pair["id"] = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
            yield pair


def default_system_prompt() -> str:
    """The system prompt of the project's examples (the fixed prompt used in training)."""
    import json

    examples = Path(__file__).resolve().parents[3] / "examples" / "chatml" / "bbj-instructions.jsonl"
    if examples.exists():
        with open(examples, encoding="utf-8") as fh:
            return json.loads(fh.readline())["messages"][0]["content"]
    return "You are a BBj expert. Answer with correct, idiomatic BBj code."
