"""The rating page: the latest answers, each with up/down buttons and a box for a corrected version.

Plain HTML forms, no script. Every text shown is escaped. Each form carries a CSRF token keyed
with a secret made at start, and a POST the browser marks as coming from another site is refused,
so a web page elsewhere cannot rate on the developer's behalf.
"""

from __future__ import annotations

import html
import secrets
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from bbjtune.gateway_log import MAX_CORRECTION_CHARS, ExchangeLog
from bbjtune.web_security import csrf_ok, csrf_token, read_bounded, same_origin

SHOWN = 50
MAX_FORM_BYTES = 4 * MAX_CORRECTION_CHARS  # form encoding can take 3 bytes per character
_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#222}
article{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
pre{background:#f5f5f5;padding:.5rem;overflow:auto;white-space:pre-wrap}
.pass{color:#176b2c}.fail{color:#a31515}.meta{color:#666;font-size:90%}
textarea{width:100%;min-height:6rem;font-family:monospace}button{margin-right:.5rem}
"""


class FeedbackPage:
    def __init__(self, log: ExchangeLog | None):
        self.log = log
        self.secret = secrets.token_bytes(32)

    def routes(self) -> list[Route]:
        return [
            Route("/feedback", self.show, methods=["GET"]),
            Route("/feedback/{exchange_id}", self.rate, methods=["POST"]),
            Route("/feedback.css", lambda r: Response(_CSS, media_type="text/css"), methods=["GET"]),
        ]

    async def show(self, request: Request) -> Response:
        if self.log is None:
            return PlainTextResponse("This gateway keeps no log (started with --no-log): nothing to rate.\n")
        rows = self.log.recent(SHOWN)
        token = csrf_token(self.secret, "feedback")
        items = "\n".join(_article(r, token) for r in rows) or "<p>No answers yet.</p>"
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>bbjtune gateway: rate answers</title>"
            f"<link rel='stylesheet' href='/feedback.css'></head><body><h1>Rate the model's answers</h1>"
            f"<p>The latest {SHOWN} answers, newest first. Up or down, and paste a corrected answer where the "
            f"model got it wrong: <code>bbjtune data feedback LOG</code> turns them into training data.</p>"
            f"{items}</body></html>"
        )
        return HTMLResponse(page)

    async def rate(self, request: Request) -> Response:
        if self.log is None:
            return PlainTextResponse("no log\n", status_code=404)
        if not same_origin(request):
            return PlainTextResponse("refused: the form was sent from another site\n", status_code=403)
        body = await read_bounded(request, MAX_FORM_BYTES)  # the access guard leaves bodies to us
        if body is None:
            return PlainTextResponse("the correction is too long\n", status_code=413)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        if not csrf_ok(self.secret, "feedback", form.get("csrf")):
            return PlainTextResponse("refused: reload the page and try again\n", status_code=403)
        rating = {"up": 1, "down": -1}.get(form.get("rating", ""))
        correction = form.get("correction", "").replace("\r\n", "\n")
        exchange_id = request.path_params["exchange_id"]
        try:
            found = self.log.rate(exchange_id, rating, correction if correction.strip() else None)
        except ValueError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=413)
        if not found:
            return PlainTextResponse("no such answer\n", status_code=404)
        return RedirectResponse(f"/feedback#{exchange_id}", status_code=303)


def _article(row: dict[str, Any], csrf: str) -> str:
    e = html.escape
    req = row["request"]
    if row["endpoint"] == "chat":
        users = [m.get("content") for m in req.get("messages", []) if m.get("role") == "user"]
        asked = users[-1] if users and isinstance(users[-1], str) else str(users[-1] if users else "")
    else:
        asked = str(req.get("prompt", ""))[-1500:]
    rating = {1: "rated up", -1: "rated down"}.get(row["rating"], "not rated")
    verdict = row["verdict"]
    cls = "pass" if verdict == "pass" else "fail" if verdict == "fail" else ""
    diag = "".join(
        f"<li>line {e(str(d.get('line')))}: {e(str(d.get('message')))}</li>" for d in row["diagnostics"][:5]
    )
    return (
        f"<article id='{e(row['id'])}'><p class='meta'>{e(row['id'])} · {e(row['model'])} · "
        f"{e(row['endpoint'])} · {row['attempts']} attempt(s) · {row['latency_ms']:.0f} ms · {rating}</p>"
        f"<h3>Asked</h3><pre>{e(asked)}</pre><h3>Answer <span class='{cls}'>({e(verdict)})</span></h3>"
        f"<pre>{e(row['answer'])}</pre>{f'<ul>{diag}</ul>' if diag else ''}"
        f"<form method='post' action='/feedback/{e(row['id'])}'>"
        f"<input type='hidden' name='csrf' value='{e(csrf)}'>"
        f"<textarea name='correction' placeholder='A corrected answer (optional)'>"
        f"{e(row['correction'] or '')}</textarea><br>"
        f"<button name='rating' value='up'>👍 Up</button><button name='rating' value='down'>👎 Down</button>"
        f"<button name='rating' value=''>Save correction only</button></form></article>"
    )
