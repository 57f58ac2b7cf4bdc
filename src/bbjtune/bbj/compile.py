"""Tier 1: does a piece of generated BBj compile?

The code is taken from the answer with `extract_bbj` (fenced ```bbj blocks first) and checked by
the real `bbjcpl -N` when it is installed (compiler "auto" or "bbjcpl"), else by bbjtune's
built-in checker; results say which. An answer without code fails with that reason. Evaluation
(compile@k, through evaluate/scoring.py), the tier 2 verdict (`quality.assess`) and self-training's
judge all call this one check, so "compiles" means the same everywhere.

Scoring is stricter than the checker's defaults in one way: a statement that is only a name
("lone-name", a warning for the language server's sake) fails here, because degenerate output
such as `StaticStaticStatic` would otherwise count as compiling code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BbjtuneError
from .bbjcpl import find_bbjcpl
from .checker import check_with
from .extract import extract_bbj

MAX_DIAGNOSTICS_KEPT = 20
FAILING_WARNINGS = frozenset({"lone-name"})


@dataclass
class CompileResult:
    compiles: bool
    compiler: str
    reason: str = ""
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    code: str = ""


def compile_answer(answer: str, compiler: str = "auto", filename: str = "answer.bbj") -> CompileResult:
    """Extract the BBj code of an answer and check it; errors are listed, warnings do not fail it."""

    code = extract_bbj(answer or "")
    return compile_code(code, compiler, filename)


def compile_code(code: str, compiler: str = "auto", filename: str = "answer.bbj") -> CompileResult:
    if not code.strip():
        used = resolve_compiler(compiler)
        return CompileResult(False, used, "no BBj code found in the answer", [], code)
    diagnostics, used = check_with(compiler, code, filename)
    errors = [d for d in diagnostics if d.severity == "error" or d.code in FAILING_WARNINGS]
    kept = [d.to_dict() for d in errors[:MAX_DIAGNOSTICS_KEPT]]
    if not errors:
        return CompileResult(True, used, "", kept, code)
    first = errors[0]
    reason = f"line {first.line}: {first.message}" + (
        f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    )
    return CompileResult(False, used, reason, kept, code)


COMPILERS = ("auto", "builtin", "bbjcpl")


def check_compiler(compiler: str) -> str:
    """`compiler` when it names one of COMPILERS, else the one-line error every --compiler option gives."""
    if compiler not in COMPILERS:
        raise BbjtuneError(f"unknown --compiler {compiler!r}", f"use one of: {', '.join(COMPILERS)}")
    return compiler


def resolve_compiler(compiler: str) -> str:
    """What "auto" means on this machine: "bbjcpl" when the real compiler is found, else "builtin"."""
    if compiler != "auto":
        return compiler

    return "bbjcpl" if find_bbjcpl() is not None else "builtin"
