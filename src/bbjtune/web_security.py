"""Who may talk to the project's web servers (the review page, the gateway), and how their forms are protected.

Shared below the stages: `bbjtune review` and `bbjtune serve gateway` both sit behind AccessGuard.

- Access token: when the server listens on anything but the loopback address, every request must
  carry the token printed at start: `?token=` once (it is then kept in an HttpOnly cookie and the
  address bar is cleaned by a redirect), the cookie, or an `Authorization: Bearer` header.
  Anything else gets 401.
- Host check: on loopback, requests must name a loopback host, so a web page elsewhere cannot
  reach the server through DNS rebinding.
- Sessions: a signed cookie (`<session id>.<reviewer id>.<HMAC>`), SameSite=Lax and HttpOnly,
  keyed with the review's secret. Every POST carries a CSRF token derived from the session id
  and is refused without it, or when the browser says the request came from another origin.
- The access cookie holds a value derived from the token (an HMAC), never the token itself, so a
  cookie seen on the wire or in a browser profile does not reveal the token that the printed
  address and `Authorization: Bearer` use. Over plain HTTP the cookie still travels in clear text:
  `--tls-cert/--tls-key` serve HTTPS (and mark every cookie Secure).
- Request bodies: at most MAX_BODY_BYTES, refused with 413 from the Content-Length header or as soon
  as the bytes received pass it, before any form parsing, session or CSRF check; forms may hold at
  most MAX_FORM_FIELDS fields. A server whose requests are larger (the gateway: prompts with whole
  files) passes max_body_bytes=None and bounds every body itself.
- Cookies and form values are compared as bytes, so a non-ASCII value is a mismatch, not an error.
- Headers: a Content-Security-Policy that allows only this server's own scripts and styles (no
  inline script can run, even if some text slipped through unescaped), no framing, and no referrer
  sent to other sites (`same-origin`: with `no-referrer` browsers send `Origin: null` on our own
  POSTs, which the origin check must refuse).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


ACCESS_COOKIE = "bbjtune_access"
MAX_BODY_BYTES = 64 * 1024  # a rating with a full 4000-character comment is under 20 KiB
MAX_FORM_FIELDS = 32  # the rating form has 9
SESSION_COOKIE = "bbjtune_session"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

TOO_LARGE_TEXT = "This request is too large for the review page.\n"
UNAUTHORIZED_TEXT = (
    "This review server needs its access token.\n"
    "Open the address that `bbjtune review` printed when it started (it ends in ?token=...).\n"
)


def _host_name(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8765" -> "::1", "127.0.0.1:80" -> "127.0.0.1")."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessGuard:
    """ASGI middleware: host check, access token, and security headers on every response."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        allowed_hosts: frozenset[str] | None = None,
        unauthorized_text: str = UNAUTHORIZED_TEXT,
        max_body_bytes: int | None = MAX_BODY_BYTES,
    ):
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.unauthorized_text = unauthorized_text
        self.max_body_bytes = max_body_bytes

    def _token_ok(self, supplied: str | None) -> bool:
        return bool(supplied) and equal(supplied, self.token)

    def _cookie_ok(self, supplied: str | None) -> bool:
        return bool(supplied) and equal(supplied, access_cookie_value(self.token))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    h for h in SECURITY_HEADERS if h[0] not in present
                ]
            await send(message)

        request = Request(scope)
        if (
            self.allowed_hosts is not None
            and _host_name(request.headers.get("host", "")) not in self.allowed_hosts
        ):
            await PlainTextResponse("unexpected Host header\n", status_code=400)(
                scope, receive, send_with_headers
            )
            return
        if self.token:
            from_query = request.query_params.get("token")
            if from_query is not None and self._token_ok(from_query) and request.method in ("GET", "HEAD"):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(
                    ACCESS_COOKIE,
                    access_cookie_value(self.token),
                    httponly=True,
                    samesite="lax",
                    secure=scope.get("scheme") == "https",
                )
                await response(scope, receive, send_with_headers)
                return
            bearer = request.headers.get("authorization", "")
            allowed = (
                self._token_ok(bearer[7:])
                if bearer.lower().startswith("bearer ")
                else self._cookie_ok(request.cookies.get(ACCESS_COOKIE))
            )
            if not allowed:
                await PlainTextResponse(self.unauthorized_text, status_code=401)(
                    scope, receive, send_with_headers
                )
                return
        if request.method not in ("GET", "HEAD") and self.max_body_bytes is not None:
            body = await _read_body(scope, receive, send_with_headers, self.max_body_bytes)
            if body is None:
                return
            receive = replay_body(body, receive)
        await self.app(scope, receive, send_with_headers)


async def _read_body(scope: Scope, receive: Receive, send: Send, limit: int) -> bytes | None:
    """The whole request body, or None once a 413 (or nothing, for a client that left) was sent."""
    declared = Request(scope).headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        await PlainTextResponse(TOO_LARGE_TEXT, status_code=413, headers={"connection": "close"})(
            scope, receive, send
        )
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await PlainTextResponse(TOO_LARGE_TEXT, status_code=413, headers={"connection": "close"})(
                scope, receive, send
            )
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The body of a request that AccessGuard left unbounded, or None once it is larger than `limit`
    (declared in Content-Length, or as the bytes arrive): never more than `limit` bytes held."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands an ASGI app the body already read, then passes on what comes after."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def equal(supplied: str, expected: str) -> bool:
    """Constant-time comparison of two strings as UTF-8 bytes (any character is allowed: no TypeError)."""
    return hmac.compare_digest(
        supplied.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def access_cookie_value(token: str) -> str:
    """What the access cookie holds: derived from the token, so the cookie never reveals it."""
    return hmac.new(token.encode(), b"bbjtune review access cookie", hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- sessions and CSRF


def _mac(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:32]


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def sign_session(secret: bytes, session_id: str, reviewer_id: int | None) -> str:
    payload = f"{session_id}.{reviewer_id or 0}"
    return f"{payload}.{_mac(secret, 'session|' + payload)}"


def read_session(secret: bytes, cookie: str | None) -> tuple[str, int | None] | None:
    """(session id, reviewer id or None) from a session cookie, or None when it is missing or forged."""
    if not cookie or cookie.count(".") != 2:
        return None
    session_id, reviewer, mac = cookie.split(".")
    if (
        not equal(mac, _mac(secret, f"session|{session_id}.{reviewer}"))
        or not reviewer.isascii()
        or not reviewer.isdigit()
        or len(reviewer) > 18
    ):
        return None
    return session_id, (int(reviewer) or None)


def csrf_token(secret: bytes, session_id: str) -> str:
    return _mac(secret, "csrf|" + session_id)


def csrf_ok(secret: bytes, session_id: str, supplied: str | None) -> bool:
    return bool(supplied) and isinstance(supplied, str) and equal(supplied, csrf_token(secret, session_id))


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site (Origin / Sec-Fetch-Site)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"
