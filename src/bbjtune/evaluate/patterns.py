"""Tier 2: does the answer use the right BBj APIs and idioms, and is it factually right?

`expect.must` patterns must all match the answer, `expect.must_not` patterns must not match
(Python-isms, Visual Basic syntax, APIs of the wrong BBj generation); `answer`, when a case has
one, decides whether a factual question was answered correctly. `must` and `answer` are checked
against the whole answer (fix tasks ask for an explanation too); `must_not` patterns are about
code and look at code only: the answer's fenced code blocks (any language) when it has some, so an
answer that explains "replace the `return` with `METHODRET`" is not punished for quoting the
mistake; else, for a case whose answer is code, the answer without its lines of prose (sentences
around unfenced code); else (explain and factual answers without code) the whole answer.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from bbjtune.bbj import extract_code_blocks
from bbjtune.bbj.extract import without_prose
from bbjtune.evaluate.suite import EvalCase


@dataclass
class PatternScore:
    missing: list[str] = field(default_factory=list)  # must patterns that did not match
    forbidden: list[str] = field(default_factory=list)  # must_not patterns that matched
    factual: bool | None = None  # None: the case has no answer regex
    has_patterns: bool = False

    @property
    def passed(self) -> bool:
        return not self.missing and not self.forbidden


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def fenced_code(text: str) -> str:
    """All fenced code blocks of an answer, joined; "" when it has none."""

    return "\n".join(b.code for b in extract_code_blocks(text) if b.fenced)


def score_patterns(case: EvalCase, text: str) -> PatternScore:
    text = text or ""
    code = fenced_code(text)
    if not code.strip():
        if case.compile:
            code = without_prose(text)
        else:
            code = text
    forbidden_in = code
    score = PatternScore(has_patterns=bool(case.must or case.must_not))
    score.missing = [p for p in case.must if not _compiled(p).search(text)]
    score.forbidden = [p for p in case.must_not if _compiled(p).search(forbidden_in)]
    if case.answer is not None:
        score.factual = bool(text.strip()) and _compiled(case.answer).search(text) is not None
    return score
