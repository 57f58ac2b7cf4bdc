"""The diagnostic type every BBj check returns, and the three ways of printing it.

Both the built-in checker and the adapter around the real `bbjcpl` produce `Diagnostic`s, so
evaluation, data audit and `bbjtune check` never care which compiler found a problem.

Output formats:
- `bbjcpl`: exactly the line `bbjcpl -N` writes, `<file>: error at line <bbx_line> (<line>): <source>`.
  bbjcpl has no message text and reports each line once, so this format prints errors only, one
  line per physical line.
- `human`: file:line:column, severity, message and code, then the source line with a caret.
- `json`: one object per file with its diagnostics (`to_dict()`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in BBj source.

    `line` is the physical line (1-based) as an editor shows it; `bbx_line` is the number bbjcpl
    prints: the program's own line number in numbered programs, otherwise 10 x `line`.
    """

    file: str | None
    line: int
    column: int
    message: str
    severity: Severity = "error"
    code: str = "syntax-error"
    source_line: str = ""
    bbx_line: int = 0

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_dict(self) -> dict:
        return asdict(self)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: (d.line, d.column, d.severity != "error"))


def format_bbjcpl(diagnostics: Iterable[Diagnostic], file: str) -> str:
    """The lines `bbjcpl -N` would print on stderr for these diagnostics (errors only)."""
    out, seen = [], set()
    for d in sort_diagnostics(diagnostics):
        if d.severity != "error" or d.line in seen:
            continue
        seen.add(d.line)
        out.append(f"{d.file or file}: error at line {d.bbx_line or 10 * d.line} ({d.line}): {d.source_line}")
    return "".join(line + "\n" for line in out)


def format_human(diagnostics: Iterable[Diagnostic], file: str) -> str:
    """Compiler-style messages with the source line and a caret under the column."""
    out = []
    for d in sort_diagnostics(diagnostics):
        out.append(f"{d.file or file}:{d.line}:{d.column}: {d.severity}: {d.message} [{d.code}]")
        if d.source_line:
            shown = d.source_line.expandtabs(1) if len(d.source_line) <= 300 else d.source_line[:300] + " ..."
            out.append(f"    {shown}")
            if d.column - 1 <= len(shown):
                out.append("    " + " " * (d.column - 1) + "^")
    return "".join(line + "\n" for line in out)
