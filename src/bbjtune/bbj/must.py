"""What a reference answer's code uses, as `must` patterns for answers to the same prompt.

Eval cases carry hand-written `must` regexes; training prompts have none, but they have a reference
answer. Its BBj code names the statements (OPEN, READ, SQLPREP, ...), built-in and user functions
(`str(`, `cvs(`), BBjAPI methods (`.addWindow(`) and channel options (`END=`, `ERR=`) a correct
answer most likely needs too. `derive_must_patterns` turns those into case-insensitive regexes in
the eval suites' style, so a sampled answer can be scored like an eval answer: the share of the
patterns it matches (`pattern_share`).

Statements every program has (PRINT, END, REM, LET, closing words like WEND) are left out: they
say nothing about the task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bbjtune.bbj.extract import extract_bbj
from bbjtune.bbj.lexer import logical_lines, split_physical_lines, tokenize
from bbjtune.bbj.verbs import BARE_VERBS, CHANNEL_OPTIONS, GENERIC_VERBS, SPECIAL_VERBS

VERBS = frozenset(GENERIC_VERBS | set(SPECIAL_VERBS) | BARE_VERBS)
# In (nearly) every program, or the closing half of a pair whose opening half is already counted.
UNINFORMATIVE = frozenset(
    {
        "PRINT",
        "?",
        "END",
        "STOP",
        "LET",
        "REM",
        "ELSE",
        "FI",
        "ENDIF",
        "WEND",
        "NEXT",
        "SWEND",
        "RETURN",
        "BREAK",
        "CONTINUE",
        "CLASSEND",
        "METHODEND",
        "INTERFACEEND",
        "FNEND",
        "THEN",
        "UNTIL",
        "CASE",
        "DIM",
        "RELEASE",
        "BYE",
        "IF",
        "RECORD",
    }
)
DECLARING_VERBS = frozenset({"METHOD", "CLASS", "INTERFACE", "FIELD", "DECLARE", "USE"})
MAX_PATTERNS = 12


def derive_must_patterns(reference: str, limit: int = MAX_PATTERNS) -> list[str]:
    """Regexes for what the reference's BBj code uses, most telling first (methods, verbs, functions, options).

    The reference may be a whole answer (prose and a ```bbj block) or bare code; no code gives [].
    """
    code = extract_bbj(reference or "")
    if not code.strip():
        return []
    methods: dict[str, None] = {}
    verbs: dict[str, None] = {}
    functions: dict[str, None] = {}
    options: dict[str, None] = {}
    for line in logical_lines(split_physical_lines(code)):
        kinds, texts = tokenize(line.text)
        at_statement_start = True
        declaring = False  # METHOD/CLASS/FIELD lines name things; they do not call them
        for j, (kind, text) in enumerate(zip(kinds, texts)):
            nxt = texts[j + 1] if j + 1 < len(texts) else ""
            upper = text.upper()
            if kind == "id":
                follows_dot = j > 0 and texts[j - 1] == "."
                if follows_dot and nxt == "(":
                    methods.setdefault(text, None)
                elif at_statement_start and upper in VERBS and nxt not in ("=", ".", "["):
                    if upper not in UNINFORMATIVE:
                        verbs.setdefault(upper, None)
                    declaring = upper in DECLARING_VERBS
                elif (
                    nxt == "("
                    and not follows_dot
                    and not declaring
                    and upper not in UNINFORMATIVE
                    and _is_function_name(upper)
                    and (j == 0 or texts[j - 1].upper() != "NEW")
                ):
                    functions.setdefault(text.lower(), None)
                elif nxt == "=" and upper in CHANNEL_OPTIONS and j > 0 and texts[j - 1] in ("(", ","):
                    options.setdefault(upper, None)
            at_statement_start = text in (";", ":") or (kind == "id" and upper in ("THEN", "ELSE"))
    patterns = [rf"(?i)\.{re.escape(m)}\s*\(" for m in methods]
    patterns += [rf"(?i)(?<![\w.]){re.escape(v)}\b" for v in verbs if v != "?"]
    patterns += [rf"(?i)(?<![\w.]){re.escape(f)}\s*\(" for f in functions if f.upper() not in VERBS]
    patterns += [rf"(?i)\b{o}\s*=" for o in options]
    return patterns[:limit]


def _is_function_name(upper: str) -> bool:
    """`x$(1,3)` is a substring of a string variable, `a[...]` an array; only FN... functions carry a suffix."""
    return upper[-1] not in "$%!@" or upper.startswith("FN")


def pattern_share(text: str, patterns: Sequence[str]) -> float:
    """The share of `patterns` that match `text` (1.0 when there are none)."""
    if not patterns:
        return 1.0
    return sum(re.search(p, text or "") is not None for p in patterns) / len(patterns)
