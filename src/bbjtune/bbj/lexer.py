"""Physical lines, logical lines and tokens of BBj source.

BBj is line-oriented: a program is a sequence of lines, each holding one or more statements
separated by `;`. A physical line that starts with `:` in column 0 continues the previous line;
the text after the colon is appended verbatim (it may even split an identifier or a string), so
continuation lines are joined before tokenizing and every token position is mapped back to its
physical line and column for diagnostics.

The tokenizer is one compiled regular expression applied with `findall`; there is no
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

# One alternation, one capturing group: `findall` returns the token texts without building match
# objects, and the kind of each token follows from its first character (`_kind`). The order
# matters where alternatives share a first character: `::` paths before the `:` operator, `.5`
# numbers before the `.` operator, closed strings and mnemonics before unterminated ones.
_TOKEN_RE = re.compile(
    r"""[ \t\f\v\x1a]*(
      [A-Za-z_][A-Za-z0-9_]*[$%!@]?           # identifier with its type suffix
    | ::(?:[^:\n]|:(?!:))+::                   # ::file.bbj:: path
    | (?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[Ee][-+]?[0-9]+)?
    | <>|<=|>=|=<|=>|><|[-+*/^=<>(),;:.\[\]\#@?!]
    | "(?:[^"]|"")*"                          # string, "" is a quote
    | \$[0-9A-Fa-f]*\$                         # hex string
    | '[^'\n]*'                               # mnemonic
    | "[^"]*                                  # unterminated string
    | '[^']*                                  # unterminated mnemonic
    | [^ \t\f\v\x1a]                           # anything else (even a no-break space) is bad
    )""",
    re.VERBOSE,
)
OPERATORS = frozenset("<> <= >= =< => >< - + * / ^ = < > ( ) , ; : . [ ] # @ ? !".split())
_FIRST_CHAR_KIND = {c: "id" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"}
_FIRST_CHAR_KIND.update((c, "num") for c in "0123456789")
_FIRST_CHAR_KIND.update((c, c) for c in "(),;[]#@?!+-*/^")  # operators that begin no longer token


def _kind(token: str) -> str:
    """Kind of a token that is not an operator and whose first character does not decide it."""
    c = token[0]
    closed = len(token) > 1 and token[-1] == c
    if c == '"':
        return "str" if closed else "ustr"
    if c == "'":
        return "mnem" if closed else "umnem"
    if c == "$":
        return "hex" if closed else "bad"
    if c == ".":
        return "num"
    if c == ":":
        return "path"
    return "bad"


_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")


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
    pieces: list[str] = []  # text pieces of the last logical line, joined once it is complete
    for idx, line in enumerate(physical):
        if line[:1] == ":" and out:
            prev = out[-1]
            if prev.segments is None:
                prev.segments = [(0, prev.first, 0)]
                pieces = [prev.text]
            prev.segments.append((prev.segments[-1][0] + len(pieces[-1]), idx, 1))
            pieces.append(line[1:])
        else:
            if out and out[-1].segments is not None and len(pieces) > 1:
                out[-1].text = "".join(pieces)
            pieces = [line]
            out.append(LogicalLine(line, idx))
    if out and out[-1].segments is not None:
        out[-1].text = "".join(pieces)
    return out


def tokenize(text: str) -> tuple[list[str], list[str]]:
    """Tokens of one logical line as parallel lists of kinds and texts, ending with `eol`.

    `REM` as a whole word (not `remark`, `rem$` or a member `x!.rem`) starts a comment: the token
    stream ends there. Offsets are computed only when a diagnostic needs them (`token_starts`).
    """
    texts = _TOKEN_RE.findall(text)
    first = _FIRST_CHAR_KIND.get
    operators = OPERATORS
    kinds = [first(t[0]) or (t if t in operators else _kind(t)) for t in texts]
    if "rem" in text.lower():
        for j, t in enumerate(texts):
            if (
                len(t) == 3
                and kinds[j] == "id"
                and t.upper() == "REM"
                and (j == 0 or texts[j - 1] not in ".#")
            ):
                del texts[j:], kinds[j:]
                break
    kinds.append("eol")
    texts.append("")
    return kinds, texts


def token_starts(text: str) -> list[int]:
    """Offsets of the tokens `tokenize(text)` returns; the last one is where the line ends."""
    count = len(tokenize(text)[0]) - 1
    starts = [m.start(1) for m in _TOKEN_RE.finditer(text)]
    end = starts[count] if count < len(starts) else len(text.rstrip())
    return starts[:count] + [end]
