"""Tier 1: does the generated BBj compile?

The code is taken from the answer with `extract_bbj` (fenced ```bbj blocks first) and checked by
the real `bbjcpl -N` when it is installed (compiler "auto" or "bbjcpl"), else by bbjtune's
built-in checker; results say which. An answer without code fails with that reason. compile@k
uses the unbiased estimator in `estimator.py` over the n samples of each prompt.

Scoring is stricter than the checker's defaults in one way: a statement that is only a name
("lone-name", a warning for the language server's sake) fails here, because degenerate output
such as `StaticStaticStatic` would otherwise count as compiling code.

`assess` adds tier 2 (bbj/quality.py) to the compile check: the verdict clean@k counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bbjtune.bbj import check_with, extract_bbj
from bbjtune.bbj.bbjcpl import find_bbjcpl
from bbjtune.bbj.quality import Finding, check_quality

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
    reason = f"line {first.line}: {first.message}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
    return CompileResult(False, used, reason, kept, code)


@dataclass
class Assessment:
    """Tier 1 and tier 2 together: clean = compiles and no tier 2 finding of severity "error"."""
    compiles: bool
    findings: list[Finding] = field(default_factory=list)
    compile_reason: str = ""

    @property
    def clean(self) -> bool:
        return self.compiles and not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def assess(code: str, *, generation: str | None = None, must_not: Sequence[str] = (),
           compiler: str = "builtin") -> Assessment:
    """Compile `code` as evaluation does and run every tier 2 check (bbj/quality.py) on it."""
    result = compile_code(code or "", compiler)
    return Assessment(result.compiles, check_quality(code, generation=generation, must_not=must_not),
                      result.reason)


def resolve_compiler(compiler: str) -> str:
    """What "auto" means on this machine: "bbjcpl" when the real compiler is found, else "builtin"."""
    if compiler != "auto":
        return compiler

    return "bbjcpl" if find_bbjcpl() is not None else "builtin"
