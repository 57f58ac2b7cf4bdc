"""Tier 2: static checks beyond syntax. Code that compiles can still be wrong in ways a BBj
developer sees at once; these checks find the common ones in model answers:

- `unknown-method`, `bad-arity`: calls on BBjAPI objects (and the program's own classes) that the
  API does not have, or with an impossible number of arguments (see `api.py`); `bad-arity` also for
  builtin functions (`STR(n,"###",3)`, `CVS(a$)`; the language server's builtins reference);
- `undefined-label`: GOTO/GOSUB/EXITTO/SETERR/SETESC/ON..GOTO targets, ERR=/END=/DOM= options,
  CALLBACK(...) and setCallback(event, "label") targets that no label in the code answers;
- `type-mismatch`: a string, a number or a BBj object mixed where BBj stops with error 26:
  `"Total: " + total`, `name$ = 5`, `n < "5"`, `sysgui = BBjAPI().openSysGui("X0")`,
  `date("YYYY-MM-DD")` (see `mismatch.py`; only values whose type the text makes plain);
- `no-statement`: code with no executable statement (only REM lines);
- `repetition`: the same line or block repeated over and over (a model running to its token limit);
- `generation-mismatch`: the suite's `must_not` patterns, and for a known BBj generation the
  other generation's hallmarks (a SysGui window in a character program, mnemonic windows where
  BBjAPI is asked for), matched against the code.

`assess` adds the syntax check as evaluation runs it (`compile.compile_code`, built-in checker by
default). `clean` = compiles and no finding of severity "error".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .api import body_start, check_api_calls, tokenized
from .compile import compile_code
from .lexer import LogicalLine, logical_lines, split_physical_lines
from .mismatch import check_type_mismatch

Severity = Literal["error", "warning"]

# Verbs followed by a label (ON ... GOTO/GOSUB takes a list).
LABEL_VERBS = frozenset({"goto", "gosub", "exitto", "seterr", "setesc"})
LABEL_OPTIONS = frozenset({"err", "end", "dom"})
# Hallmarks of the other BBj generation, for code whose generation is known. Derived from the
# suites' own must_not patterns (evals/*.jsonl): character and Visual PRO/5 answers must not open
# a BBjAPI SysGui window; GUI/DWC answers must not build windows with Visual PRO/5 mnemonics.
SYSGUI_WINDOW = (r"(?i)\bopenSysGui\b", r"(?i)\.addWindow\s*\(")
MNEMONIC_WINDOW = (r"(?i)'window'\s*\(", r"(?i)\bctrl\s*\(\s*sysgui", r"(?i)\btmpl\s*\(\s*sysgui")
GENERATION_NAMES = {"character": "character-UI", "vpro5": "Visual PRO/5", "gui": "BBj GUI", "dwc": "DWC"}
# what the generation uses instead, for the finding's message (and a model asked to repair)
GENERATION_WAYS = {
    "character": "a terminal program prints and reads on the screen, with no SysGui window",
    "vpro5": "windows come from a SYSGUI channel and mnemonics ('WINDOW', 'BUTTON', READ RECORD), not BBjAPI",
    "gui": "windows and controls are BBjAPI objects (openSysGui, addWindow, addButton), not mnemonics",
    "dwc": "windows and controls are BBjAPI objects (openSysGui, addWindow, addButton), not mnemonics",
}
GENERATION_PATTERNS: dict[str, tuple[str, ...]] = {
    "character": SYSGUI_WINDOW,
    "vpro5": SYSGUI_WINDOW,
    "gui": MNEMONIC_WINDOW,
    "dwc": MNEMONIC_WINDOW,
}
# Repetition: a block of up to MAX_BLOCK lines repeated back to back this many times.
MAX_BLOCK = 12
MIN_REPEATS_LINE = 8  # one line eight times in a row
MIN_REPEATS_BLOCK = 4  # a block of 2+ lines four times in a row
MIN_REPEATED_CHARS = 12  # lines shorter than this (ENDIF, NEXT I, PRINT "") repeat in real code
_LINE_NUMBER_RE = re.compile(r"^\d+ ")  # numbered programs: 0010 PRINT X and 0020 PRINT X repeat


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    message: str
    severity: Severity = "error"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Assessment:
    """Tier 1 and tier 2 together: clean = compiles and no tier 2 finding of severity "error"."""

    compiles: bool
    findings: list[Finding] = field(default_factory=list)
    compile_reason: str = ""
    compiler: str = ""  # the compiler that decided `compiles` ("builtin" or "bbjcpl")
    diagnostics: list[Any] = field(default_factory=list)  # the compiler's, as CompileResult has them

    @property
    def clean(self) -> bool:
        return self.compiles and not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def assess(
    code: str,
    *,
    generation: str | None = None,
    must_not: Sequence[str] = (),
    compiler: str = "builtin",
    filename: str = "answer.bbj",
) -> Assessment:
    """Compile `code` as evaluation does and run every tier 2 check on it."""
    result = compile_code(code or "", compiler, filename)
    findings = check_quality(code, generation=generation, must_not=must_not)
    return Assessment(result.compiles, findings, result.reason, result.compiler, result.diagnostics)


def check_quality(code: str, *, generation: str | None = None, must_not: Sequence[str] = ()) -> list[Finding]:
    """The tier 2 findings of a piece of BBj code, sorted by line (no syntax check)."""
    code = (code or "").removeprefix("\ufeff")
    lines = logical_lines(split_physical_lines(code))
    findings: list[Finding] = []
    if code.strip():
        toks = tokenized(lines)
        if not any(_has_statement(K, T) for _line, K, T in toks):
            findings.append(
                Finding("no-statement", 1, "the code has no executable statement (only comments or labels)")
            )
        findings += _label_findings(toks)
        findings += [Finding(p.rule, p.line, p.message, p.severity) for p in check_api_calls(lines)]
        findings += [Finding(m.rule, m.line, m.message) for m in check_type_mismatch(toks)]
        findings += _repetition(lines)
    findings += _pattern_findings(code, generation, must_not)
    return sorted(findings, key=lambda f: (f.line, f.rule))


def quality_errors(code: str, generation: str | None = None) -> list[Finding]:
    """The tier 2 findings that fail code (warnings left out); the generation's patterns only when
    it is given (evaluation cases know it; the gateway reads it from the question when it is named)."""
    return [f for f in check_quality(code, generation=generation) if f.severity == "error"]


def _has_statement(K: list[str], T: list[str]) -> bool:
    return K[body_start(K, T)] != "eol"


# ----------------------------------------------------------------------------- labels
def _label_findings(toks: list[tuple[LogicalLine, list[str], list[str]]]) -> list[Finding]:
    labels: set[str] = set()
    numbers: set[str] = set()
    refs: list[tuple[int, str]] = []  # (physical line, label as written)
    for line, K, T in toks:
        i = 0
        if K[0] == "num" and T[0].isdigit():
            numbers.add(str(int(T[0])))
            i = 1
        if K[i] == "id" and K[i + 1] == ":" and T[i][-1] not in "$%!@":
            labels.add(T[i].lower())
        refs += [(line.first + 1, ref) for ref in _label_refs(K, T)]
    out = []
    for where, ref in refs:
        if ref[0].isdigit():
            # SETERR 0 / SETESC 0 switch the handler off; 0 is never a line reference
            if numbers and int(ref) != 0 and str(int(ref)) not in numbers:
                out.append(Finding("undefined-label", where, f"line number {ref} is not in the program"))
        elif ref.lower() not in labels:
            out.append(Finding("undefined-label", where, f"no label '{ref}:' in the code"))
    return out


def _label_refs(K: list[str], T: list[str]) -> list[str]:
    refs = []
    n = len(K)
    # look-ahead past the last token (code that ends in `GOTO`, `ERR=`, ...) reads end-of-line
    K, T = [*K, "eol", "eol", "eol"], [*T, "", "", ""]
    for i in range(n - 1):
        if K[i] != "id":
            continue
        low = T[i].lower()
        prev = K[i - 1] if i else ";"
        if low in LABEL_VERBS and prev not in (".", "#"):
            j = i + 1
            while True:
                if K[j] == "id" and K[j + 1] in (",", ";", "eol") or K[j] == "num":
                    refs.append(T[j])
                if low not in ("goto", "gosub") or K[j + 1] != ",":
                    break  # only ON ... GOTO/GOSUB take a list
                j += 2
        elif low in LABEL_OPTIONS and prev in (",", "(") and K[i + 1] == "=":
            j = i + 2
            if (K[j] == "id" and K[j + 1] in (",", ")")) or (K[j] == "num" and T[j].isdigit()):
                refs.append(T[j])
        elif low == "callback" and K[i + 1] == "(" and prev not in (".", "#"):
            # CALLBACK(event, label{, context{, control}})
            args = _args(K, T, i + 1)
            if len(args) >= 2 and len(args[1]) == 1 and args[1][0][0] == "id":
                refs.append(args[1][0][1])
        elif low == "setcallback" and prev == "." and K[i + 1] == "(":
            args = _args(K, T, i + 1)
            if len(args) == 2 and len(args[1]) == 1 and args[1][0][0] == "str":
                name = args[1][0][1][1:-1]
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    refs.append(name)
    return refs


def _args(K: list[str], T: list[str], i: int) -> list[list[tuple[str, str]]]:
    """The argument token lists of the call whose '(' is at i."""
    args: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for j in range(i, len(K)):
        k = K[j]
        if k == "(":
            depth += 1
            if depth == 1:
                continue
        elif k == ")":
            depth -= 1
            if depth == 0:
                return args if args != [[]] else []
        elif k == "," and depth == 1:
            args.append([])
            continue
        elif k == "eol":
            break
        args[-1].append((k, T[j]))
    return args


# ----------------------------------------------------------------------------- repetition
def _repetition(lines: list[LogicalLine]) -> list[Finding]:
    """The first block of 1..MAX_BLOCK lines repeated back to back (blank and REM lines ignored)."""
    body = [(ln.first + 1, _LINE_NUMBER_RE.sub("", " ".join(ln.text.split()).lower())) for ln in lines]
    body = [(n, t) for n, t in body if t and not t.startswith("rem")]
    texts = [t for _, t in body]
    total = len(texts)
    for size in range(1, MAX_BLOCK + 1):
        need = MIN_REPEATS_LINE if size == 1 else MIN_REPEATS_BLOCK
        if size * need > total:
            break
        start = 0
        while start + size * need <= total:
            block = texts[start : start + size]
            if sum(len(t) for t in block) < MIN_REPEATED_CHARS * size:
                start += 1
                continue
            reps = 1
            while texts[start + reps * size : start + (reps + 1) * size] == block:
                reps += 1
            if reps >= need:
                what = "line" if size == 1 else f"block of {size} lines"
                return [
                    Finding(
                        "repetition",
                        body[start][0],
                        f"the same {what} is repeated {reps} times in a row (runaway generation)",
                    )
                ]
            start += 1
    return []


# ----------------------------------------------------------------------------- patterns
@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _pattern_findings(code: str, generation: str | None, must_not: Sequence[str]) -> list[Finding]:
    patterns = list(dict.fromkeys([*must_not, *GENERATION_PATTERNS.get(generation or "", ())]))
    out = []
    for pattern in patterns:
        rx = _compiled(pattern)
        m = rx.search(code) if rx is not None else None
        if m is None:
            continue
        line = code.count("\n", 0, m.start()) + 1
        found = m.group(0).strip()[:60]
        if pattern in GENERATION_PATTERNS.get(generation or "", ()):
            message = f"{found!r} does not belong in {GENERATION_NAMES[generation]} code: {GENERATION_WAYS[generation]}"
        else:
            message = f"{found!r} does not belong here (must_not): matches {pattern}"
        out.append(Finding("generation-mismatch", line, message))
    return out
