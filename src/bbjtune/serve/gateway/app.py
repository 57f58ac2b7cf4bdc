"""The checking gateway: OpenAI's API in front of an OpenAI-compatible model server.

Routes: /v1/models (the upstream's list), /v1/chat/completions and /v1/completions (checked, with
best-of-N), /v1/feedback (rate an answer by its id), /feedback (the rating page).

Every checked answer carries a `bbjtune` field: {"id", "verdict", "compiler", "reason",
"diagnostics", "attempts"}; the id also comes in the `X-Bbjtune-Exchange` header. With
`diagnostics="comment"` chat answers also get the verdict appended as a markdown note (never
completions: an editor inserts their text into the code).

Streaming: with best-of 1 the upstream's tokens are passed on as they come and the verdict follows
in one more event before `[DONE]`; with best-of N > 1 nothing can be shown before an answer has
passed, so the chosen answer is sent as a short stream once it is known.

Browsers: API requests must be `application/json`. A web page elsewhere can only send a "simple"
request (form or text/plain) to this server without its permission, and gets 415, so it can neither
spend the model's time nor write into the log.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from bbjtune.gateway_log import Exchange, ExchangeLog, new_id
from bbjtune.web_security import AccessGuard, read_bounded

from .check import Verdict, comment_text
from .page import FeedbackPage
from .sampling import PATHS, answer_text, best_of, check_text
from .upstream import Upstream, UpstreamError, error_body

EXCHANGE_HEADER = "X-Bbjtune-Exchange"
MAX_BEST_OF = 8
UNAUTHORIZED_TEXT = (
    "This gateway needs its access token: use the token `bbjtune serve gateway` printed at start "
    "as the API key (Authorization: Bearer ...).\n"
)
# Request fields the gateway handles itself instead of passing them on.
_OWN_FIELDS = ("stream", "stream_options", "best_of")


@dataclass
class GatewaySettings:
    upstream: str
    upstream_key: str | None = None
    model: str | None = None  # force this upstream model name (editors send their own)
    best_of: int = 1
    diagnostics: str = "field"  # field | comment
    compiler: str = "auto"
    checks: str = "clean"  # compile: the checker alone; clean: the checker and tier 2
    retry_temperature: float = 0.7
    retry: str = "resample"  # resample: draw a new answer; repair: send the answer and its findings back
    max_body_bytes: int = 1_000_000
    timeout: float = 600.0


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message), status_code=self.status)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, refused above `limit` bytes (413) or when not JSON (415/400)."""
    if "application/json" not in request.headers.get("content-type", ""):
        raise Refused(415, "send the request as JSON (Content-Type: application/json)")
    data = await read_bounded(request, limit)
    if data is None:
        raise Refused(413, f"the request is larger than the gateway's limit of {limit:,} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


def _validate(kind: str, body: dict[str, Any]) -> None:
    if kind == "chat":
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise Refused(400, "`messages` must be a non-empty list of {role, content} objects")
    elif not isinstance(body.get("prompt"), str):
        raise Refused(400, "`prompt` must be a string (one prompt per request)")
    if body.get("n", 1) != 1:
        raise Refused(400, "`n` must be 1: the gateway draws more samples itself (best-of-N)")


class Gateway:
    def __init__(self, settings: GatewaySettings, log: ExchangeLog | None):
        self.settings = settings
        self.log = log
        self.upstream = Upstream(settings.upstream, settings.upstream_key, settings.timeout)

    # ----------------------------------------------------------------------------- API routes

    async def models(self, request: Request) -> Response:
        try:
            return JSONResponse(await self.upstream.get("/models"))
        except UpstreamError as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    async def chat(self, request: Request) -> Response:
        return await self._answer("chat", request)

    async def completions(self, request: Request) -> Response:
        return await self._answer("completion", request)

    async def _answer(self, kind: str, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await read_json(request, self.settings.max_body_bytes)
            _validate(kind, body)
        except Refused as exc:
            return exc.response()
        ex_id = new_id() if self.log else None
        headers = {EXCHANGE_HEADER: ex_id} if ex_id else {}
        upstream_body = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
        if self.settings.model:
            upstream_body["model"] = self.settings.model
        if body.get("stream") and self.settings.best_of == 1:
            return StreamingResponse(
                self._live(kind, body, upstream_body, ex_id, started),
                media_type="text/event-stream",
                headers=headers,
            )
        try:
            outcome = await best_of(
                self.upstream,
                kind,
                upstream_body,
                self.settings.best_of,
                self.settings.compiler,
                self.settings.retry_temperature,
                self.settings.checks,
                self.settings.retry,
            )
        except UpstreamError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        chosen = outcome.chosen
        result = copy.deepcopy(chosen.body)
        extra = _extra(ex_id, chosen.verdict, outcome.attempts)
        if chosen.repair_of is not None:  # the model's correction of an earlier answer
            extra["repaired"] = True
        if chosen.runaway is not None:  # cut where its loop starts: it ends there now
            extra["loop_cut"] = True
            for choice in result.get("choices") or []:
                if isinstance(choice, dict):
                    choice["finish_reason"] = "stop"
        shown = chosen.text + self._comment(kind, chosen.verdict, outcome.attempts)
        _set_text(kind, result, shown)
        result["bbjtune"] = extra
        self._record(
            kind,
            body,
            result.get("model"),
            chosen.text,
            chosen.verdict,
            outcome.attempts,
            outcome.rejected,
            started,
            outcome.upstream_s,
            outcome.check_s,
            ex_id,
        )
        headers["X-Bbjtune-Verdict"] = chosen.verdict.verdict
        if body.get("stream"):
            return StreamingResponse(
                _as_events(kind, result), media_type="text/event-stream", headers=headers
            )
        return JSONResponse(result, headers=headers)

    async def _live(
        self,
        kind: str,
        body: dict[str, Any],
        upstream_body: dict[str, Any],
        ex_id: str | None,
        started: float,
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        last: dict[str, Any] = {}
        upstream_start = time.perf_counter()
        try:
            async for event in self.upstream.stream(PATHS[kind], upstream_body):
                last = event
                parts.append(_delta_text(kind, event))
                yield _event(event)
        except UpstreamError as exc:
            yield _event(exc.body)
            yield "data: [DONE]\n\n"
            return
        upstream_s = time.perf_counter() - upstream_start
        text = "".join(parts)
        check_start = time.perf_counter()
        verdict = await check_text(kind, body, text, self.settings.compiler, self.settings.checks)
        check_s = time.perf_counter() - check_start
        final = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
        final["choices"] = []
        comment = self._comment(kind, verdict, 1)
        if comment:
            final["choices"] = [{"index": 0, "delta": {"content": comment}, "finish_reason": None}]
        final["bbjtune"] = _extra(ex_id, verdict, 1)
        # logged before the verdict goes out: a client that reads the exchange id from the last event
        # (an editor's rating button, the feedback page) must find the exchange at once
        self._record(kind, body, last.get("model"), text, verdict, 1, [], started, upstream_s, check_s, ex_id)
        yield _event(final)
        yield "data: [DONE]\n\n"

    def _comment(self, kind: str, verdict: Verdict, attempts: int) -> str:
        if self.settings.diagnostics != "comment" or kind != "chat" or verdict.verdict == "no-code":
            return ""
        return comment_text(verdict, attempts)

    def _record(
        self,
        kind: str,
        request: dict[str, Any],
        model: str | None,
        text: str,
        verdict: Verdict,
        attempts: int,
        rejected: list[dict[str, Any]],
        started: float,
        upstream_s: float,
        check_s: float,
        ex_id: str | None,
    ) -> None:
        if self.log is None or ex_id is None:
            return
        self.log.add(
            Exchange(
                kind,
                model or str(request.get("model") or ""),
                request,
                text,
                verdict.verdict,
                verdict.compiler,
                verdict.diagnostics,
                attempts,
                rejected,
                1000 * (time.perf_counter() - started),
                1000 * upstream_s,
                1000 * check_s,
            ),
            ex_id,
        )

    # ----------------------------------------------------------------------------- ratings

    async def feedback(self, request: Request) -> Response:
        if self.log is None:
            return JSONResponse(
                error_body("this gateway keeps no log (started with --no-log): nothing to rate"),
                status_code=404,
            )
        try:
            body = await read_json(request, self.settings.max_body_bytes)
            ex_id = body.get("id")
            rating = parse_rating(body.get("rating"))
            correction = body.get("correction")
            if not isinstance(ex_id, str):
                raise Refused(400, "`id` must be the exchange id the answer came with")
            if correction is not None and not isinstance(correction, str):
                raise Refused(400, "`correction` must be a string")
            if rating is None and correction is None:
                raise Refused(400, "give a `rating` (up or down) and/or a `correction`")
            found = self.log.rate(ex_id, rating, correction)
        except Refused as exc:
            return exc.response()
        except ValueError as exc:
            return JSONResponse(error_body(str(exc)), status_code=413)
        if not found:
            return JSONResponse(error_body(f"no exchange with id {ex_id!r}"), status_code=404)
        row = self.log.get(ex_id)
        return JSONResponse(
            {"id": ex_id, "rating": row["rating"], "corrected": row["correction"] is not None}
        )


RATINGS = {"up": 1, "down": -1, "+1": 1, "-1": -1}


def parse_rating(value: Any) -> int | None:
    """+1/-1 from "up"/"down"/"+1"/"-1" (any case) or the numbers 1/-1; None when absent."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in RATINGS:
        return RATINGS[value.lower()]
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (1, -1):
        return int(value)
    raise Refused(400, '`rating` must be "up" or "down"')


def _extra(ex_id: str | None, v: Verdict, attempts: int) -> dict[str, Any]:
    return {
        "id": ex_id,
        "verdict": v.verdict,
        "compiler": v.compiler,
        "reason": v.reason,
        "diagnostics": v.diagnostics,
        "attempts": attempts,
    }


def _set_text(kind: str, body: dict[str, Any], text: str) -> None:
    choices = body.setdefault("choices", [{}])
    if not choices:
        choices.append({})
    if kind == "chat":
        message = choices[0].setdefault("message", {"role": "assistant"})
        message["content"] = text
    else:
        choices[0]["text"] = text


def _delta_text(kind: str, event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    if kind == "chat":
        return (choices[0].get("delta") or {}).get("content") or ""
    return choices[0].get("text") or ""


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _as_events(kind: str, result: dict[str, Any]) -> AsyncIterator[str]:
    """A finished answer as the stream of events an OpenAI client expects."""
    head = {k: result[k] for k in ("id", "created", "model") if k in result}
    choice = (result.get("choices") or [{}])[0]
    finish = choice.get("finish_reason") or "stop"
    if kind == "chat":
        head["object"] = "chat.completion.chunk"
        yield _event(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": answer_text(kind, result)},
                        "finish_reason": None,
                    }
                ],
            }
        )
        yield _event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    else:
        head["object"] = "text_completion"
        yield _event(
            {
                **head,
                "choices": [
                    {"index": 0, "text": answer_text(kind, result), "finish_reason": finish, "logprobs": None}
                ],
            }
        )
    yield _event({**head, "choices": [], "bbjtune": result["bbjtune"]})
    yield "data: [DONE]\n\n"


def create_app(
    settings: GatewaySettings,
    log: ExchangeLog | None,
    *,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
):
    """The gateway as an ASGI app, behind the access guard the review page uses too (host check, token).

    The guard leaves request bodies to the gateway (max_body_bytes=None): API requests are bounded by
    settings.max_body_bytes (a prompt may hold a whole file, far above the review page's limit) and
    answered with an OpenAI-style error, the rating form by the page's own limit."""
    if not 1 <= settings.best_of <= MAX_BEST_OF:
        raise ValueError(f"best_of must be between 1 and {MAX_BEST_OF}")
    gw = Gateway(settings, log)
    page = FeedbackPage(log)
    routes = [
        Route("/v1/models", gw.models, methods=["GET"]),
        Route("/v1/chat/completions", gw.chat, methods=["POST"]),
        Route("/v1/completions", gw.completions, methods=["POST"]),
        Route("/v1/feedback", gw.feedback, methods=["POST"]),
        Route("/", lambda r: RedirectResponse("/feedback", status_code=303), methods=["GET"]),
        *page.routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await gw.upstream.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return AccessGuard(
        app,
        token=token,
        allowed_hosts=allowed_hosts,
        unauthorized_text=UNAUTHORIZED_TEXT,
        max_body_bytes=None,
    )
