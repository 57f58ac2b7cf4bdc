"""The built-in BBj syntax checker: source text or a file in, diagnostics out.

`check_source` never raises on bad input: binary data, empty text, enormous lines and
undecodable bytes each come back as a diagnostic. `check_with` picks between this checker and
the real `bbjcpl` (see `bbjcpl.py`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from bbjtune.errors import BbjtuneError

from .bbjcpl import find_bbjcpl, run_bbjcpl
from .diagnostics import Diagnostic, sort_diagnostics
from .lexer import logical_lines, split_physical_lines
from .library import check_library, is_library
from .parser import Parser

Compiler = Literal["builtin", "bbjcpl", "auto"]

MAX_LINE_CHARS = 65_536
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$%!@")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x19\x1b-\x1f]")


def _diagnostic(file, physical, line, col, message, severity, code, numbers=None) -> Diagnostic:
    source = physical[line] if 0 <= line < len(physical) else ""
    bbx = numbers.get(line) if numbers else None
    return Diagnostic(
        file=file,
        line=line + 1,
        column=col + 1,
        message=message,
        severity=severity,
        code=code,
        source_line=source,
        bbx_line=bbx if bbx is not None else 10 * (line + 1),
    )


# BBj saves programs tokenized (binary) unless told to save them as text; its bbjlst utility lists
# a tokenized program as text, which is what a checker (ours or bbjcpl) reads.
BINARY_MESSAGE = (
    "binary data, not BBj source text: a tokenized (saved) program? list it as text with BBj's bbjlst first"
)


def looks_binary(text: str) -> bool:
    """NUL characters, or many control characters in the first 8 KiB, mean this is not source."""
    head = text[:8192]
    if "\x00" in head:
        return True
    return len(_CONTROL_RE.findall(head)) > max(8, len(head) // 20)


def check_source(text: str, filename: str | None = None, *, fragment: bool = False) -> list[Diagnostic]:
    """Check BBj source text; returns errors and warnings sorted by position.

    Any diagnostic with severity "error" means bbjcpl would (very likely) reject the program.
    `fragment=True` checks a piece of a class, such as a single METHOD ... METHODEND answer:
    METHOD and FIELD may then stand outside CLASS ... CLASSEND.
    """
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark decoded as text
    if looks_binary(text):
        return [Diagnostic(filename, 1, 1, BINARY_MESSAGE, "error", "binary-file", "", 10)]
    if not text.strip():
        return [
            Diagnostic(filename, 1, 1, "empty source: no BBj statements", "warning", "empty-source", "", 10)
        ]
    physical = split_physical_lines(text)
    out: list[Diagnostic] = []
    numbers: dict[int, int] = {}

    def report(line: int, col: int, message: str, severity: str, code: str) -> None:
        out.append(_diagnostic(filename, physical, line, col, message, severity, code, numbers))

    lines = logical_lines(physical)
    if is_library(lines):
        check_library(lines, report)
        return sort_diagnostics(out)

    parser = Parser(report, fragment)
    numbers = parser.line_numbers
    for line in lines:
        text_ = line.text
        if len(text_) > MAX_LINE_CHARS:
            report(
                line.first,
                0,
                f"line is {len(text_):,} characters long; the checker handles lines up to {MAX_LINE_CHARS:,}",
                "error",
                "line-too-long",
            )
            continue
        s = text_.lstrip()
        if not s:
            continue
        if (
            (s[0] == "r" or s[0] == "R")
            and s[:3].lower() == "rem"
            and (len(s) == 3 or s[3] not in _IDENT_CHARS)
        ):
            continue
        parser.parse_line(line)
    parser.finish()
    return sort_diagnostics(out)


def decode_source(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to Latin-1, which decodes any byte sequence."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def not_utf8_at(data: bytes) -> tuple[int, int] | None:
    """(line, byte) of the first byte that is not UTF-8, or None when `data` is valid UTF-8
    (then `decode_source` reads it as UTF-8, else as Latin-1)."""
    try:
        data.decode("utf-8-sig")
        return None
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, data[exc.start]


def check_bytes(data: bytes, filename: str | None = None, *, fragment: bool = False) -> list[Diagnostic]:
    if b"\x00" in data[:8192]:
        return [Diagnostic(filename, 1, 1, BINARY_MESSAGE, "error", "binary-file", "", 10)]
    return check_source(decode_source(data), filename, fragment=fragment)


def check_file(path: str | os.PathLike) -> list[Diagnostic]:
    """Check a file; unreadable files come back as a diagnostic, not an exception."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return [
            Diagnostic(
                name, 1, 1, f"cannot read the file: {exc.strerror or exc}", "error", "unreadable-file", "", 10
            )
        ]
    return check_bytes(data, name)


def check_with(
    compiler: Compiler,
    text: str,
    filename: str | None = None,
    timeout: float = 60.0,
    path: str | os.PathLike | None = None,
    fragment: bool = False,
) -> tuple[list[Diagnostic], str]:
    """Check with the built-in checker or the real bbjcpl; returns (diagnostics, compiler used).

    `auto` uses bbjcpl when it can be found (PATH or $BBJ_HOME/bin), else the built-in checker.
    When `path` names the file `text` was read from, bbjcpl compiles that file itself (its
    original bytes and encoding) instead of a temporary copy. `fragment=True` accepts METHOD and
    FIELD outside a CLASS (see `check_source`); bbjcpl then compiles the text inside a class.
    """

    if compiler not in ("builtin", "bbjcpl", "auto"):
        raise BbjtuneError(f"unknown compiler {compiler!r}", "use builtin, bbjcpl or auto")
    if compiler == "builtin":
        return check_source(text, filename, fragment=fragment), "builtin"
    exe = find_bbjcpl()
    if exe is None:
        if compiler == "bbjcpl":
            raise BbjtuneError(
                "bbjcpl was not found on PATH or in $BBJ_HOME/bin",
                "set BBJ_HOME to your BBj installation or install BBj; or use --compiler builtin",
            )
        return check_source(text, filename, fragment=fragment), "builtin"
    if fragment and _TOP_LEVEL_MEMBER_RE.search(text) and not _CLASS_RE.search(text):
        return _run_bbjcpl_in_class(text, timeout, filename, exe), "bbjcpl"
    source = Path(path) if path is not None else text
    return run_bbjcpl(source, timeout=timeout, filename=filename, executable=exe), "bbjcpl"


_TOP_LEVEL_MEMBER_RE = re.compile(r"^[ \t]*(?:method|field)\b", re.IGNORECASE | re.MULTILINE)
_CLASS_RE = re.compile(r"^[ \t]*(?:class|interface)\b", re.IGNORECASE | re.MULTILINE)
FRAGMENT_CLASS = "BbjtuneFragment"


def _run_bbjcpl_in_class(text: str, timeout: float, filename: str | None, exe) -> list[Diagnostic]:
    """bbjcpl on a class member fragment: wrapped in a class, line numbers mapped back."""
    from dataclasses import replace

    body = text if text.endswith("\n") else text + "\n"
    wrapped = f"class public {FRAGMENT_CLASS}\n{body}classend\n"
    lines = body.splitlines()
    last = len(lines)
    out = []
    for d in run_bbjcpl(wrapped, timeout=timeout, filename=filename, executable=exe):
        if d.code != "bbjcpl":
            out.append(d)
            continue
        line = min(max(d.line - 1, 1), last)  # an error on a wrapper line goes to the nearest line
        out.append(replace(d, line=line, bbx_line=10 * line, source_line=lines[line - 1]))
    return out
