"""ChatML instruction files: read them line by line and check the shape of every line.

A ChatML JSONL file holds one conversation per line:

    {"messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...},
                  {"role": "assistant", "content": ...}], "category": ..., "generation": ..., "task": ...}

A line is usable when it is UTF-8, valid JSON, an object with a `messages` list, every message has
a known role (`system`, `user`, `assistant`) and non-empty text content, an optional system message
comes first, and user/assistant turns alternate, starting with the user and ending with the
assistant. Anything else becomes a `Rejection` that names the file, the line and what is wrong;
the original line is kept so nothing is lost.

Files are read as bytes and never held in memory as a whole: a 100 MB file costs one line at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError

ROLES = ("system", "user", "assistant")
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Rejection reasons found while reading (the filters in clean.py add their own).
MALFORMED_JSON = "malformed-json"
NOT_UTF8 = "not-utf8"
NOT_AN_OBJECT = "not-an-object"
MISSING_MESSAGES = "missing-messages"
BAD_MESSAGE = "bad-message"
UNKNOWN_ROLE = "unknown-role"
BAD_ROLE_ORDER = "bad-role-order"
EMPTY_PROMPT = "empty-prompt"
EMPTY_ANSWER = "empty-answer"
EMPTY_SYSTEM = "empty-system-prompt"
SCHEMA_REASONS = (
    NOT_UTF8,
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_MESSAGES,
    BAD_MESSAGE,
    UNKNOWN_ROLE,
    BAD_ROLE_ORDER,
    EMPTY_PROMPT,
    EMPTY_ANSWER,
    EMPTY_SYSTEM,
)


@dataclass
class Example:
    """One well-formed conversation and where it came from."""

    file: str
    line: int
    offset: int  # byte offset of the line in its file (to fetch the original text again)
    messages: list[dict[str, str]]
    extra: dict[str, Any] = field(default_factory=dict)  # category, generation, task, ...

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages[0]["role"] == "system" else None

    @property
    def prompt(self) -> str:
        """The user's side of the conversation (every user turn)."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def answer(self) -> str:
        """The assistant's side of the conversation (every assistant turn)."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "assistant")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Rejection:
    """A line or example that does not go into training, and why."""

    file: str
    line: int | None
    reason: str
    detail: str
    offset: int | None = None
    raw: str | None = None  # filled from the file when written out, if not known yet
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
            **self.extra,
        }


class LineProblem(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_raw(raw: bytes) -> str:
    """A line's text for reports: UTF-8 where it is, `\\xNN` for the bytes that are not."""
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def read_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw bytes without the line end) for every line of a file."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BbjtuneError(
            f"cannot read {path}: {exc.strerror}", "check that the file exists and is readable"
        ) from exc
    with fh:
        head = fh.read(4)
        if head.startswith(UTF16_BOMS):
            raise BbjtuneError(f"{path} is UTF-16 text", "save it as UTF-8 (one JSON object per line)")
        fh.seek(0)
        offset = 0
        for number, raw in enumerate(fh, 1):
            start = offset
            offset += len(raw)
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
                start += len(UTF8_BOM)
            yield number, start, raw.rstrip(b"\r\n")


def read_raw_line(path: str | Path, offset: int) -> str:
    """The original text of the line that starts at `offset` (for rejected.jsonl)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return decode_raw(fh.readline())


def parse_line(raw: bytes) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The messages and the other keys of one JSONL line; raises LineProblem when it is unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineProblem(
            NOT_UTF8,
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); save the file as UTF-8",
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineProblem(MALFORMED_JSON, f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise LineProblem(MALFORMED_JSON, "malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise LineProblem(
            NOT_AN_OBJECT, f"the line is a JSON {type(obj).__name__}, not an object with 'messages'"
        )
    if "messages" not in obj:
        keys = ", ".join(sorted(map(str, obj))[:6]) or "none"
        raise LineProblem(MISSING_MESSAGES, f"no 'messages' key (keys: {keys})")
    messages = obj.pop("messages")
    if not isinstance(messages, list) or not messages:
        raise LineProblem(MISSING_MESSAGES, "'messages' must be a non-empty list of {role, content} objects")
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise LineProblem(BAD_MESSAGE, f"message {i} is not an object with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise LineProblem(
                UNKNOWN_ROLE, f"message {i} has role {str(role)[:40]!r}; use system, user or assistant"
            )
        if not isinstance(content, str):
            raise LineProblem(
                BAD_MESSAGE, f"message {i} ({role}) content is a {type(content).__name__}, not text"
            )
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise LineProblem(
                NOT_UTF8, f"message {i} ({role}) contains an invalid \\u escape (a lone surrogate)"
            ) from None
        clean.append({"role": role, "content": content})
    _check_order(clean)
    return clean, obj


def _check_order(messages: list[dict[str, str]]) -> None:
    roles = [m["role"] for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        raise LineProblem(BAD_ROLE_ORDER, "a system message may only come first")
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    if not turns or turns != expected[: len(turns)] or turns[-1] != "assistant":
        raise LineProblem(
            BAD_ROLE_ORDER,
            f"roles are {' → '.join(roles)}; expected [system →] user → assistant "
            "(alternating, ending with the assistant)",
        )
    for i, m in enumerate(messages, 1):
        if not m["content"].strip():
            reason = {"system": EMPTY_SYSTEM, "user": EMPTY_PROMPT, "assistant": EMPTY_ANSWER}[m["role"]]
            raise LineProblem(reason, f"message {i} ({m['role']}) is empty")


def iter_chatml(path: Path, label: str | None = None) -> Iterator[Example | Rejection | None]:
    """Every line of one file as an Example or a Rejection (None for a blank line)."""
    name = label or str(path)
    for number, offset, raw in read_lines(path):
        if not raw.strip():
            yield None
            continue
        try:
            messages, extra = parse_line(raw)
        except LineProblem as problem:
            yield Rejection(name, number, problem.reason, problem.detail, offset, decode_raw(raw))
            continue
        yield Example(name, number, offset, messages, extra)
