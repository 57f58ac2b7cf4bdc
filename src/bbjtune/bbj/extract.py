"""Pull BBj code out of markdown and model answers.

Evaluation compiles the code of a model's answer; data audit checks the code inside training
answers. Answers come in three shapes: fenced and labelled (```bbj), fenced without a label,
and bare code with no fence at all. `extract_bbj` takes them in that order of trust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Info strings that mean "this is BBj".
BBJ_LANGUAGES = frozenset(
    {"bbj", "bbx", "bbjt", "bbl", "basis", "bbj-source", "bbjsrc", "pro5", "visualpro5"}
)
# Info strings under which models often put BBj anyway; used only when the code looks like BBj.
LOOSE_LANGUAGES = frozenset({"", "basic", "vb", "vbnet", "text", "txt", "plain", "plaintext", "code"})

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`\n]*$")

# A line that reads as BBj: a verb at the start, an assignment, a method call, a label or a
# continuation. Prose rarely matches; English sentences ending in '.' are counted against.
_BBJ_LINE_RE = re.compile(
    r"""^\s*(?:\d+\s+)?(?:
        (?:rem|print|let|if|then|else|fi|endif|for|next|while|wend|repeat|until|switch|case|swend
          |break|continue|goto|gosub|return|on|exitto|seterr|setesc|class|classend|interface
          |interfaceend|method|methodend|methodret|field|declare|use|dim|redim|open|close|read
          |write|input|extract|find|remove|call|enter|exit|release|run|end|stop|bye|def|fnend
          |process_events|callback|throw|sqlopen|sqlprep|sqlexec|sqlclose|precision|data|dread
          |restore|execute|wait|lock|unlock|begin|select)\b(?!\s+(?:is|are|the|a|an|of|to)\s)
      | \?
      | [A-Za-z_#][\w.]*[$%!]?\s*(?:\[[^\]]*\]\s*)?=
      | \#?[A-Za-z_][\w]*[$%!@]?(?:\.[A-Za-z_]\w*[$%!]?)*\s*\(.*\)\s*$
      | [A-Za-z_]\w*:\s*$
    )""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class CodeBlock:
    code: str
    language: str | None  # the fence's info string, lower-case; None when unfenced or unlabeled
    fenced: bool
    start_line: int  # 1-based line of the first code line in the input text


def extract_code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced code block (``` or ~~~) in order; an unclosed fence runs to the end.

    Text without any fence comes back as one unfenced block (surrounding blank lines removed),
    or as no block at all when it is blank.
    """
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).lower()
        body_start = i + 1
        j = body_start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            j += 1
        blocks.append(CodeBlock("\n".join(lines[body_start:j]), info or None, True, body_start + 1))
        i = j + 1
    if blocks:
        return blocks
    stripped = text.strip("\n")
    if not stripped.strip():
        return []
    leading = len(text[: len(text) - len(text.lstrip("\n"))].splitlines()) if text.startswith("\n") else 0
    return [CodeBlock(stripped, None, False, leading + 1)]


def bbj_line_ratio(code: str) -> float:
    """Share of non-blank lines that read as BBj (0.0 for blank text)."""
    lines = [ln for ln in code.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    return sum(1 for ln in lines if _is_bbj_line(ln)) / len(lines)


def _is_bbj_line(line: str) -> bool:
    return bool(_BBJ_LINE_RE.match(line)) and not _looks_like_prose(line)


def looks_like_bbj(code: str, threshold: float = 0.6) -> bool:
    return bbj_line_ratio(code) >= threshold


def without_prose(text: str) -> str:
    """`text` minus the lines that read as English sentences (for answers whose code is unfenced)."""
    return "\n".join(ln for ln in text.splitlines() if not _looks_like_prose(ln))


def _looks_like_prose(line: str) -> bool:
    s = line.strip()
    words = s.split()
    return len(words) >= 6 and s.endswith((".", ":", "!", "?")) and '"' not in s and "(" not in s


def extract_bbj(text: str) -> str:
    """The BBj code of a model answer or markdown document; "" when there is none.

    1. all ```bbj (or bbx, bbjt, ...) fences, joined;
    2. otherwise unlabeled (or ```basic, ```text, ...) fences that look like BBj, joined;
    3. otherwise, for an answer without fences, its code lines (from the first to the last line
       that reads as BBj) when they look like code.
    """
    blocks = extract_code_blocks(text)
    fenced = [b for b in blocks if b.fenced]
    labelled = [b.code for b in fenced if b.language in BBJ_LANGUAGES]
    if labelled:
        return _join(labelled)
    loose = [b.code for b in fenced if (b.language or "") in LOOSE_LANGUAGES and looks_like_bbj(b.code)]
    if loose:
        return _join(loose)
    if not fenced and blocks:
        return _bare_code(blocks[0].code)
    return ""


def _bare_code(text: str) -> str:
    """The code of an unfenced answer: from its first to its last BBj-looking line, when those
    lines read as BBj (a sentence before or after the code is dropped)."""
    lines = text.splitlines()
    flags = [bool(ln.strip()) and _is_bbj_line(ln) for ln in lines]
    if not any(flags):
        return ""
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    code = "\n".join(lines[first : last + 1])
    return code + "\n" if looks_like_bbj(code) else ""


def _join(codes: list[str]) -> str:
    parts = [c.strip("\n") for c in codes if c.strip()]
    return "\n\n".join(parts) + "\n" if parts else ""
