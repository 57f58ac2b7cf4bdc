"""BBj library definition files (`.bbl`): signatures of builtin functions, variables and labels.

A file whose first statement is `library` is not a program but a list of declarations, each
optionally preceded by a `/@@ ... @/` documentation block:

    ASC(str:string, ERR?!:lineref): int
    var ARGC: int
    label *NEXT
    eventtype ON_CLOSE
"""

from __future__ import annotations

import re
from typing import Callable

from .lexer import LogicalLine

_FUNCTION_RE = re.compile(
    r"\s*[A-Za-z_]\w*\s*\(\s*(?:[A-Za-z_]\w*\s*\??!?\s*(?::\s*\w+)?\s*"
    r"(?:,\s*[A-Za-z_]\w*\s*\??!?\s*(?::\s*\w+)?\s*)*)?\)\s*:\s*\w+\s*$"
)
_VAR_RE = re.compile(r"\s*var\s+[A-Za-z_]\w*[$%!]?\s*(?::\s*\w+)?\s*$", re.IGNORECASE)
_LABEL_RE = re.compile(r"\s*label\s+\*[A-Za-z_]\w*\s*$", re.IGNORECASE)
_EVENT_RE = re.compile(r"\s*eventtype\s+[A-Za-z_]\w*\s*$", re.IGNORECASE)
_DECLARATIONS = (_FUNCTION_RE, _VAR_RE, _LABEL_RE, _EVENT_RE)


def is_library(lines: list[LogicalLine]) -> bool:
    for line in lines:
        s = line.text.strip()
        if s:
            return s.lower() == "library"
    return False


def check_library(lines: list[LogicalLine], report: Callable[[int, int, str, str, str], None]) -> None:
    in_doc = False
    seen_header = False
    for line in lines:
        text = line.text
        s = text.strip()
        if in_doc:
            if "@/" in s:
                in_doc = False
            continue
        if not s:
            continue
        if not seen_header:
            seen_header = True
            continue
        if s.startswith("/@@"):
            in_doc = "@/" not in s[3:]
            continue
        if s.lower().startswith("rem") and (len(s) == 3 or not (s[3].isalnum() or s[3] == "_")):
            continue
        if not any(rx.match(text) for rx in _DECLARATIONS):
            report(
                line.first,
                len(text) - len(text.lstrip()),
                "not a library declaration (NAME(params): type, var NAME, label *NAME, eventtype NAME)",
                "error",
                "syntax-error",
            )
    if in_doc:
        report(
            lines[-1].first,
            0,
            "documentation block /@@ ... is not closed with @/",
            "error",
            "unterminated-comment",
        )
