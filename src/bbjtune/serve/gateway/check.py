"""The gateway's verdict on one answer: does the BBj in it pass the checker (and, with `checks="clean"`,
the tier 2 checks: BBjAPI methods that exist and get possible argument counts, labels that are
defined, code with a statement, no runaway repetition, and code of the BBj generation the question
names, when it names one)?

Chat answers: the code is taken as evaluation takes it (`compile_answer`: ```bbj fences first,
then unlabelled fences that read as BBj, then bare code) and checked by bbjcpl when installed,
else by the built-in checker. An answer without BBj gets "no-code" and is never retried: a question
about something else must not cost N samples.

Completions (an editor filling in the middle of a file): the inserted text alone is rarely a
whole program, and the file around it may already have errors the model did not cause. So the file
is checked twice, prefix + suffix and prefix + completion + suffix, and the completion fails only
when it adds errors. Only files that read as BBj are checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bbjtune.bbj import check_with
from bbjtune.bbj.api import MENU_SIZE, method_menus
from bbjtune.bbj.compile import FAILING_WARNINGS, compile_answer
from bbjtune.bbj.extract import bbj_line_ratio
from bbjtune.bbj.quality import quality_errors
from bbjtune.models.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

# Qwen2.5-Coder's fill-in-the-middle tokens: an editor may send the whole FIM prompt as `prompt`.
_FIM_RE = re.compile(
    f"{re.escape(FIM_PREFIX)}(.*?){re.escape(FIM_SUFFIX)}(.*?){re.escape(FIM_MIDDLE)}\\s*\\Z", re.DOTALL
)
# A file whose lines read as BBj this often is checked (lower than extract's 0.6: an editor's
# window onto a file often starts or ends inside a comment block).
FILE_BBJ_RATIO = 0.5
MAX_DIAGNOSTICS = 20
CHECKS = ("compile", "clean")  # what an answer must pass: the checker, or the checker and tier 2
# how best-of-N asks again: a new draw, or the answer sent back to be corrected
RETRIES = ("resample", "repair")


@dataclass
class Verdict:
    verdict: str  # pass, fail, no-code
    compiler: str | None = None
    reason: str = ""
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    compiles: bool | None = None  # the checker's own verdict (a "fail" may compile and fail tier 2 only)
    code: str = ""  # the BBj that was checked (a chat answer's code block; diagnostics count its lines)

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"


def check_chat_answer(
    answer: str, compiler: str, checks: str = "clean", generation: str | None = None
) -> Verdict:
    """`generation`: the one the question asks for (`bbj.generation.generation_asked`), when it names
    one; tier 2 then also fails code of the other family (a SYSGUI channel in BBj GUI code, ...)."""
    result = compile_answer(answer, compiler)
    if not result.code.strip():
        return Verdict("no-code")
    if not result.compiles:
        return Verdict("fail", result.compiler, result.reason, result.diagnostics, False, result.code)
    findings = quality_errors(result.code, generation) if checks == "clean" else []
    if not findings:
        return Verdict("pass", result.compiler, "", result.diagnostics, True, result.code)
    first = findings[0]
    reason = f"tier 2, line {first.line}: {first.message}" + (
        f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    )
    diagnostics = [
        {"line": f.line, "column": 1, "severity": "error", "code": f.rule, "message": f.message, "tier": 2}
        for f in findings[:MAX_DIAGNOSTICS]
    ]
    return Verdict("fail", result.compiler, reason, diagnostics, True, result.code)


# the findings a repair request quotes (the first ones: later errors often follow from them)
REPAIR_FINDINGS = 8


def repair_request(v: Verdict) -> str:
    """The user turn that asks the model to correct its failing answer: what the checker found, each
    with the line it found it on (a small model cannot count lines), then what to write."""
    checker = "bbjcpl" if v.compiler == "bbjcpl" else "the BBj checker"
    lines = v.code.splitlines()
    found = []
    for d in v.diagnostics:
        n = int(d.get("line") or 0)
        source = lines[n - 1].strip() if 0 < n <= len(lines) else ""
        quoted = f" `{source[:120]}`" if source else ""
        found.append(f"- line {n}{quoted}: {d['message']}")
        if len(found) == REPAIR_FINDINGS:
            break
    if not found:
        found.append(f"- {v.reason}")
    what = "does not compile" if v.compiles is False else "compiles, but has these problems"
    menus = method_menus(v.code) if v.compiles else {}
    real = [
        f"- instead of {call}: {call.split('.')[0]} has {', '.join(names)}"
        + (" ..." if len(names) == MENU_SIZE else "")
        for call, names in menus.items()
    ]
    return (
        f"The BBj code in your answer {what} ({checker}):\n"
        + "\n".join(found)
        + (
            "\n\nThe real methods of the same kind (name and argument count):\n" + "\n".join(real)
            if real
            else ""
        )
        + "\n\nAnswer my question again with the whole corrected program in one ```bbj code block, "
        "using only BBj statements, functions and BBjAPI methods that exist and doing what I asked. "
        "Answer as you would have the first time: do not mention this correction."
    )


def split_fim(prompt: str, suffix: str | None) -> tuple[str, str]:
    """(prefix, suffix) of a completion request: FIM tokens in the prompt, or prompt + `suffix` field."""
    m = _FIM_RE.search(prompt)
    if m:
        return m.group(1), m.group(2)
    return prompt, suffix or ""


def check_completion(prefix: str, middle: str, suffix: str, compiler: str) -> Verdict:
    whole = prefix + middle + suffix
    if not middle.strip() or bbj_line_ratio(whole) < FILE_BBJ_RATIO:
        return Verdict("no-code")
    before, _ = check_with(compiler, prefix + suffix, "completion.bbj", fragment=True)
    after, used = check_with(compiler, whole, "completion.bbj", fragment=True)
    failing = [d for d in after if d.severity == "error" or d.code in FAILING_WARNINGS]
    n_before = sum(1 for d in before if d.severity == "error" or d.code in FAILING_WARNINGS)
    # errors are matched by count, not position: the completion shifts every line below it
    if len(failing) <= n_before:
        return Verdict("pass", used)
    start = prefix.count("\n") + 1
    end = start + middle.count("\n")
    inside = [d for d in failing if start <= d.line <= end] or failing
    first = inside[0]
    reason = (
        f"line {first.line}: {first.message}" + f" (the completion adds {len(failing) - n_before} "
        f"error{'s' if len(failing) - n_before > 1 else ''})"
    )
    return Verdict("fail", used, reason, [d.to_dict() for d in inside[:MAX_DIAGNOSTICS]])


def comment_text(v: Verdict, attempts: int) -> str:
    """The note appended to a chat answer in `--diagnostics comment` mode (markdown, after the answer)."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if v.verdict == "pass":
        return f"\n\n> BBj check ({v.compiler}): the code passes{tries}."
    lines = [f"\n\n> BBj check ({v.compiler}): the code does not pass{tries}."]
    for d in v.diagnostics[:5]:
        lines.append(f"> - line {d['line']}: {d['message']}")
    return "\n".join(lines)
