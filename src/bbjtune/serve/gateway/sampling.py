"""Best-of-N: ask the upstream, check the BBj, ask again until it passes or N answers are drawn.

"Passes" means the checker and, with `checks="clean"` (the default), the tier 2 checks too: an answer
that compiles but calls a BBjAPI method that does not exist is asked again. When none passes, an
answer that compiles is preferred to one that does not.

Retries sample at `retry_temperature` at least: with the client's temperature 0 (greedy, what
editors often send) every retry would return the same failing answer. With `retry="repair"` a chat
answer that fails goes back to the model instead, with what the checker found (each finding with
the line it is on; for a BBjAPI method that does not exist, the class's real methods of the same
verb) and a request for the whole corrected program; each version of the code is sent back once,
the best failing one first, and when none is left a new answer is drawn. A retry the upstream fails
(it went down, or a repair no longer fits its context and a new draw fails too) ends the search
with the answers already drawn, instead of failing the request.

When no attempt passes, the one with the fewest checker errors is returned (the first among
equals), and the others are kept in the log as rejected answers. An answer without BBj passes as
the first answer (a question that needs no code is not asked again) but not as a later one: after
code that failed, a prose answer answers nothing, and the failing code is returned with its
diagnostics instead.

An answer the upstream ended at its token limit (`finish_reason: length`) that loops (a line,
block or sentence written again and again; `models/loops.py`) is cut after the loop's first copy,
its code fence closed, and checked as cut: that is the answer the model meant to give, and on the
fine-tuned 0.5B's q8_0 file the cut fixes 13 of 188 evaluation answers and breaks 1. The cut
answer is used unless the whole one passes and the cut does not; the runaway is logged as rejected.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from bbjtune.bbj.generation import generation_of_chat
from bbjtune.models.loops import loop_cut

from .check import Verdict, check_chat_answer, check_completion, repair_request, split_fim
from .upstream import Upstream, UpstreamError

PATHS = {"chat": "/chat/completions", "completion": "/completions"}


@dataclass
class Attempt:
    body: dict[str, Any]
    text: str
    verdict: Verdict
    runaway: str | None = None  # the whole answer, when `text` is it cut where its loop starts
    repair_of: int | None = None  # the attempt (0-based) this answer corrects (`--retry repair`)


@dataclass
class Outcome:
    chosen: Attempt
    attempts: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    upstream_s: float = 0.0
    check_s: float = 0.0


def finish_reason(body: dict[str, Any]) -> str | None:
    choices = body.get("choices") or [{}]
    return choices[0].get("finish_reason") if isinstance(choices[0], dict) else None


def answer_text(kind: str, body: dict[str, Any]) -> str:
    """The text of the first choice of an upstream response (chat message or completion text)."""
    choices = body.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    if kind == "chat":
        return ((first.get("message") or {}).get("content")) or ""
    return first.get("text") or ""


async def check_text(
    kind: str, request: dict[str, Any], text: str, compiler: str, checks: str = "clean"
) -> Verdict:
    """The checker runs in a worker thread: bbjcpl is a separate process and the built-in
    checker takes milliseconds to tens of milliseconds, either of which would stall other clients.
    Completions get the checker only: tier 2 on a file the editor shows in part would flag what the
    rest of the file defines."""
    if kind == "chat":
        generation = generation_of_chat(request.get("messages")) if checks == "clean" else None
        return await anyio.to_thread.run_sync(check_chat_answer, text, compiler, checks, generation)
    prefix, suffix = split_fim(str(request.get("prompt") or ""), request.get("suffix"))
    return await anyio.to_thread.run_sync(check_completion, prefix, text, suffix, compiler)


async def best_of(
    upstream: Upstream,
    kind: str,
    request: dict[str, Any],
    n: int,
    compiler: str,
    retry_temperature: float,
    checks: str = "clean",
    retry: str = "resample",
) -> Outcome:
    tried: list[Attempt] = []
    outcome = Outcome(chosen=None, attempts=0)  # type: ignore[arg-type]
    resample = dict(request)
    resample["temperature"] = max(float(request.get("temperature") or 0.0), retry_temperature)
    resample.pop("seed", None)  # a fixed seed would draw the same answer again
    repaired: set[str] = set()  # code already sent back for repair (each version once)
    for i in range(n):
        body, repair_of = request, None
        if i:
            body = resample
            target = _repair_target(tried, repaired) if retry == "repair" and kind == "chat" else None
            if target is not None:
                repaired.add(tried[target].verdict.code)
                body, repair_of = repair_body(request, tried[target]), target
        try:
            reply = await upstream.post(PATHS[kind], body)
        except UpstreamError as exc:
            if not tried:
                raise
            reply = None
            if repair_of is not None and exc.status < 500:
                # the conversation grew past what the upstream takes (its context): draw afresh instead
                repair_of = None
                with contextlib.suppress(UpstreamError):
                    reply = await upstream.post(PATHS[kind], resample)
            if reply is None:  # a retry the upstream could not answer: the answers drawn so far stand
                break
        outcome.upstream_s += reply.seconds
        text = answer_text(kind, reply.body)
        start = time.perf_counter()
        verdict = await check_text(kind, request, text, compiler, checks)
        attempt = Attempt(reply.body, text, verdict, repair_of=repair_of)
        cut = (
            await anyio.to_thread.run_sync(loop_cut, text) if finish_reason(reply.body) == "length" else None
        )
        if cut is not None:
            cut_verdict = await check_text(kind, request, cut, compiler, checks)
            if cut_verdict.passed or not verdict.passed:
                attempt = Attempt(reply.body, cut, cut_verdict, runaway=text, repair_of=repair_of)
        outcome.check_s += time.perf_counter() - start
        tried.append(attempt)
        if _class(attempt.verdict, i) == 0:
            break
    outcome.attempts = len(tried)
    best = min(range(len(tried)), key=lambda j: _rank(tried, j))
    outcome.chosen = tried[best]
    outcome.rejected = [
        {
            "answer": a.text,
            "verdict": a.verdict.verdict,
            "reason": a.verdict.reason,
            "diagnostics": a.verdict.diagnostics,
            **({"repair_of": a.repair_of + 1} if a.repair_of is not None else {}),
        }
        for j, a in enumerate(tried)
        if j != best
    ]
    outcome.rejected += [  # the loops themselves: `data feedback --checker-pairs` pairs them with the cut
        {
            "answer": a.runaway,
            "verdict": "loop",
            "reason": "ran to the token limit in a loop",
            "diagnostics": [],
        }
        for a in tried
        if a.runaway is not None
    ]
    return outcome


def _class(v: Verdict, j: int) -> int:
    """0 passes; 1 compiles but fails tier 2; 2 does not compile; 3 holds no BBj although an earlier
    answer did (a question that needs no code passes with its first answer, but once the model wrote
    code that failed, a prose answer drawn after it answers nothing)."""
    if v.verdict == "no-code":
        return 3 if j else 0
    if v.passed:
        return 0
    return 1 if v.compiles else 2


def _rank(tried: list[Attempt], j: int) -> tuple[int, int, int]:
    """Passing first; then answers that compile (failing tier 2 only); then the fewest findings."""
    v = tried[j].verdict
    return (_class(v, j), len(v.diagnostics), j)


def _repair_target(tried: list[Attempt], repaired: set[str]) -> int | None:
    """The best failing answer whose code has not been sent back yet (None: draw a new answer)."""
    open_ = [j for j, a in enumerate(tried) if a.verdict.code.strip() and a.verdict.code not in repaired]
    return min(open_, key=lambda j: _rank(tried, j)) if open_ else None


def repair_body(request: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
    """The chat request again, with the failing answer and what the checker found appended: the
    model corrects its own answer (`--retry repair`). The client's temperature is kept: the
    conversation is new, so even a greedy client gets a new answer."""
    body = dict(request)
    body["messages"] = [
        *request["messages"],
        {"role": "assistant", "content": attempt.text},
        {"role": "user", "content": repair_request(attempt.verdict)},
    ]
    return body
