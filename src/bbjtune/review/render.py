"""Model answers as safe HTML: prose as text, BBj code highlighted, checker diagnostics inline.

Everything a model wrote is untrusted. Every piece of it passes through `markupsafe.escape`
before it is wrapped in our own `<span>`s; nothing here ever emits model text unescaped. The
templates mark nothing as safe themselves: only this module's `Markup` passes through unescaped.

The highlighter is a small line-by-line tokenizer (one regular expression) that knows just enough
BBj for reading: keywords and verbs, built-in functions, strings, mnemonics, numbers, `REM`
comments and labels on a line of their own. Keywords are not reserved in BBj, so it only marks a
word as a keyword when it has no type suffix (`release` yes, `release$` no). It never fails: any
text comes out, some of it plain.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from bbjtune.bbj import check_source

KEYWORDS = frozenset(
    """
    and begin break bye call callback case cast chdir class classend close continue data declare def
    default delete dim disable dread drop dump else enable end endif enter erase escape execute exit
    exitto extends extract field fi file find fnend for from gosub goto if implements input interface
    interfaceend iolist key let lock method methodend methodret mkdir new next not null on open or
    precision print private process_events protected public read record redim release remove repeat
    restore retry return run select seterr setesc sqlclose sqlexec sqlfetch sqlopen sqlprep static
    step stop swend switch then this throw to unlock until use void wait wend where while write
""".split()
)

BUILTINS = frozenset(
    """
    abs asc atn bbjapi bin chr cos cvs date day dec dims err fid fin fpt hta ath ind int ipt len lcs lst
    mask max min mod num pos rnd round sgn sin sqlunt sqr stbl str tbl tcb tsk ucs unt
""".split()
)

_TOKEN_RE = re.compile(
    r"""(?P<label>^\s*[A-Za-z_][A-Za-z0-9_]*:(?=\s*$))
    |(?P<comment>(?<![\w$%!@.#])[Rr][Ee][Mm](?![\w$%!@]).*)
    |(?P<string>"(?:[^"]|"")*"?)
    |(?P<hex>\$[0-9A-Fa-f]*\$)
    |(?P<mnemonic>'[A-Za-z][A-Za-z0-9]*')
    |(?P<word>\#?[A-Za-z_][A-Za-z0-9_]*[$%!@]?)
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[Ee][-+]?\d+)?)
    """,
    re.VERBOSE,
)

# Fence info strings under which an answer's code is treated (and checked) as BBj.
BBJ_FENCE_LANGUAGES = frozenset({"", "bbj", "bbx", "bbjt", "bbl", "basis", "pro5", "visualpro5", "basic"})
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`\n]*$")


def _span(kind: str, text: str) -> str:
    return f'<span class="tok-{kind}">{escape(text)}</span>'


def highlight_line(line: str) -> Markup:
    """One line of BBj source as escaped HTML with token spans."""
    out, pos = [], 0
    for match in _TOKEN_RE.finditer(line):
        kind, text = match.lastgroup, match.group()
        if match.start() > pos:
            out.append(str(escape(line[pos : match.start()])))
        if kind == "word":
            bare = text.lower()
            if bare in KEYWORDS:
                out.append(_span("keyword", text))
            elif bare.rstrip("$%") in BUILTINS and not text.startswith("#"):
                out.append(_span("builtin", text))
            else:
                out.append(str(escape(text)))
        elif kind == "hex":
            out.append(_span("string", text))
        else:
            out.append(_span(kind, text))
        pos = match.end()
    out.append(str(escape(line[pos:])))
    return Markup("".join(out))


# ----------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Segment:
    kind: str  # "prose" or "code"
    text: str
    language: str = ""


def split_answer(output: str, code: str = "") -> list[Segment]:
    """Prose and code segments of an answer: fenced blocks are code; with no fence at all, the
    extracted `code` (when the answer contains it) is the code and the rest is prose."""
    text = output.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    segments: list[Segment] = []
    prose: list[str] = []
    i = 0
    fenced = False
    while i < len(lines):
        match = _FENCE_RE.match(lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        fenced = True
        fence, language = match.group(1), match.group(2).lower()
        if any(line.strip() for line in prose):
            segments.append(Segment("prose", "\n".join(prose).strip("\n")))
        prose = []
        body = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence[0] * len(fence)) and not lines[i].strip().strip(fence[0])
        ):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence (or the end of an unclosed block)
        segments.append(Segment("code", "\n".join(body), language))
    if any(line.strip() for line in prose):
        segments.append(Segment("prose", "\n".join(prose).strip("\n")))
    if fenced:
        return segments
    code = code.replace("\r\n", "\n").strip("\n")
    if code.strip() and code in text:
        before, after = text.split(code, 1)
        parts = [
            Segment("prose", before.strip("\n")),
            Segment("code", code, "bbj"),
            Segment("prose", after.strip("\n")),
        ]
        return [s for s in parts if s.kind == "code" or s.text.strip()]
    return segments


@functools.lru_cache(maxsize=4096)
def _diagnostics(code: str) -> tuple | None:
    """The checker's diagnostics for a code block."""
    return tuple(check_source(code))


@dataclass(frozen=True)
class RenderedAnswer:
    html: Markup
    errors: int
    warnings: int
    checked: bool  # at least one BBj block went through the checker


def _render_code(segment: Segment) -> tuple[str, int, int, bool]:
    is_bbj = segment.language in BBJ_FENCE_LANGUAGES
    diagnostics = _diagnostics(segment.text) if is_bbj and segment.text.strip() else None
    by_line: dict[int, list] = {}
    for diag in diagnostics or ():
        by_line.setdefault(diag.line, []).append(diag)
    rows = []
    for number, line in enumerate(segment.text.split("\n"), start=1):
        content = highlight_line(line) if is_bbj else escape(line)
        found = by_line.get(number, [])
        worst = "error" if any(d.severity == "error" for d in found) else ("warning" if found else "")
        rows.append(f'<span class="code-line{" has-" + worst if worst else ""}">{content}</span>')
        for diag in found:
            rows.append(
                f'<span class="diag diag-{escape(diag.severity)}">line {diag.line}, column {diag.column}: '
                f"{escape(diag.severity)}: {escape(diag.message)}</span>"
            )
    label = escape(segment.language or "bbj") if is_bbj else escape(segment.language or "text")
    html = (
        f'<div class="code-block"><div class="code-lang">{label}</div>'
        f"<pre><code>{''.join(rows)}</code></pre></div>"
    )
    errors = sum(d.severity == "error" for d in diagnostics or ())
    warnings = sum(d.severity != "error" for d in diagnostics or ())
    return html, errors, warnings, diagnostics is not None


def render_answer(output: str, code: str = "") -> RenderedAnswer:
    """An answer as HTML: prose paragraphs as text, code blocks highlighted with diagnostics."""
    if not output.strip():
        return RenderedAnswer(
            Markup('<p class="no-answer">(no answer: the model returned nothing)</p>'), 0, 0, False
        )
    parts, errors, warnings, checked = [], 0, 0, False
    for segment in split_answer(output, code):
        if segment.kind == "prose":
            parts.append(f'<div class="prose">{escape(segment.text)}</div>')
            continue
        html, n_errors, n_warnings, was_checked = _render_code(segment)
        parts.append(html)
        errors, warnings, checked = errors + n_errors, warnings + n_warnings, checked or was_checked
    return RenderedAnswer(Markup("".join(parts)), errors, warnings, checked)
