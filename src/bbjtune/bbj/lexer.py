"""Physical lines, logical lines and tokens of BBj source.

BBj is line-oriented: a program is a sequence of lines, each holding one or more statements
separated by `;`. A physical line that starts with `:` in column 0 continues the previous line;
the text after the colon is appended verbatim (it may even split an identifier or a string), so
continuation lines are joined before tokenizing and every token position is mapped back to its
physical line and column for diagnostics.

The tokenizer is one compiled regular expression applied with `finditer`; there is no
per-character Python loop. Keywords are not reserved in BBj, so the lexer only produces
identifiers; the parser decides from context whether `release` is a verb or a variable.

Token kinds: `id` (identifier, with its `$ % ! @` suffix), `num`, `str`, `hex` (`$0D0A$`),
`mnem` (`'CS'`), `path` (`::file.bbj::`), `eol` (end of the logical line, also where a `REM`
comment starts), the operator text itself for operators and punctuation (`(`, `=`, `<>`, ...),
and `bad` for a character BBj does not allow outside strings. Unterminated strings and
mnemonics come back as `ustr` and `umnem`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

# The most frequent kinds come first; `::` paths and `.5` numbers before the operators. `rem` is recognised
# after matching, as an identifier that spells REM (see `tokenize`).
_TOKEN_RE = re.compile(
    r"""[ \t\f\v\x1a]*(?:
     (?P<id>[A-Za-z_][A-Za-z0-9_]*[$%!@]?)
    |(?P<path>::(?:[^:\n]|:(?!:))+::)
    |(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[Ee][-+]?[0-9]+)?)
    |(?P<op><>|<=|>=|=<|=>|><|[-+*/^=<>(),;:.\[\]\#@?!])
    |(?P<str>"(?:[^"]|"")*")
    |(?P<hex>\$[0-9A-Fa-f]*\$)
    |(?P<mnem>'[^'\n]*')
    |(?P<ustr>"[^"]*)
    |(?P<umnem>'[^']*)
    |(?P<bad>\S)
    )""",
    re.VERBOSE,
)
_GROUP_KIND = [""] * (_TOKEN_RE.groups + 1)
for _name, _index in _TOKEN_RE.groupindex.items():
    _GROUP_KIND[_index] = _name
_ID, _OP = _TOKEN_RE.groupindex["id"], _TOKEN_RE.groupindex["op"]

_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")
_CONTINUATION_RE = re.compile(r"^:", re.MULTILINE)


def split_physical_lines(text: str) -> list[str]:
    """Split on CRLF, LF or CR (mixed endings occur in real files).

    `str.splitlines` is not used on purpose: it also splits on characters such as U+0085 that
    occur inside Latin-1 text and that BBj does not treat as line ends.
    """
    lines = _LINE_SPLIT_RE.split(text)
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()
    return lines


@dataclass
class LogicalLine:
    """One BBj line after joining `:` continuation lines.

    `segments` is None for a line that is a single physical line; otherwise it lists, for each
    joined piece, (offset in `text`, physical line index, column offset of the piece).
    """

    text: str
    first: int  # index of the first physical line (0-based)
    segments: list[tuple[int, int, int]] | None = None

    def locate(self, offset: int) -> tuple[int, int]:
        """Map an offset in `text` to (physical line index, 0-based column)."""
        if self.segments is None:
            return self.first, offset
        starts = [s[0] for s in self.segments]
        k = bisect_right(starts, offset) - 1
        start, phys, col0 = self.segments[max(k, 0)]
        return phys, col0 + offset - start


def logical_lines(physical: list[str]) -> list[LogicalLine]:
    """Join every line that starts with `:` in column 0 onto the line before it."""
    if not any(line[:1] == ":" for line in physical):
        return [LogicalLine(line, idx) for idx, line in enumerate(physical)]
    out: list[LogicalLine] = []
    for idx, line in enumerate(physical):
        if line[:1] == ":" and out:
            prev = out[-1]
            if prev.segments is None:
                prev.segments = [(0, prev.first, 0)]
            prev.segments.append((len(prev.text), idx, 1))
            prev.text += line[1:]
        else:
            out.append(LogicalLine(line, idx))
    return out


def has_continuations(text: str) -> bool:
    return _CONTINUATION_RE.search(text) is not None


def tokenize(text: str) -> tuple[list[str], list[str], list[int]]:
    """Tokens of one logical line as parallel lists: kinds, texts, start offsets.

    The lists always end with an `eol` token. `REM` as a whole word (not `remark`, `rem$` or a
    member `x!.rem`) starts a comment: the token stream ends there.
    """
    kinds: list[str] = []
    texts: list[str] = []
    starts: list[int] = []
    add_kind, add_text, add_start = kinds.append, texts.append, starts.append
    group_kind = _GROUP_KIND
    for m in _TOKEN_RE.finditer(text):
        index = m.lastindex
        if index is None:  # only trailing whitespace matched
            break
        a, b = m.span(index)
        value = text[a:b]
        if index == _ID:
            if b - a == 3 and value.upper() == "REM" and (a == 0 or text[a - 1] not in ".#"):
                break
            add_kind("id")
        elif index == _OP:
            add_kind(value)
        else:
            add_kind(group_kind[index])
        add_text(value)
        add_start(a)
    else:
        a = len(text.rstrip())
    add_kind("eol")
    add_text("")
    add_start(a)
    return kinds, texts, starts
