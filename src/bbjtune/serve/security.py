"""Who may talk to the review server, and how its forms are protected.

- Access token: when the server listens on anything but the loopback address, every request must
  carry the token printed at start: `?token=` once (it is then kept in an HttpOnly cookie and the
  address bar is cleaned by a redirect), the cookie, or an `Authorization: Bearer` header.
  Anything else gets 401.
- Host check: on loopback, requests must name a loopback host, so a web page elsewhere cannot
  reach the server through DNS rebinding.
- Sessions: a signed cookie (`<session id>.<reviewer id>.<HMAC>`), SameSite=Lax and HttpOnly,
  keyed with the review's secret. Every POST carries a CSRF token derived from the session id
  and is refused without it, or when the browser says the request came from another origin.
- Headers: a Content-Security-Policy that allows only this server's own scripts and styles (no
  inline script can run, even if some text slipped through unescaped), no framing, and no referrer
  sent to other sites (`same-origin`: with `no-referrer` browsers send `Origin: null` on our own
  POSTs, which the origin check must refuse).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_COOKIE = "bbjtune_access"
SESSION_COOKIE = "bbjtune_session"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

UNAUTHORIZED_TEXT = ("This review server needs its access token.\n"
                     "Open the address that `bbjtune review` printed when it started (it ends in ?token=...).\n")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _host_name(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8765" -> "::1", "127.0.0.1:80" -> "127.0.0.1")."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessGuard:
    """ASGI middleware: host check, access token, and security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None = None, allowed_hosts: frozenset[str] | None = None,
                 unauthorized_text: str = UNAUTHORIZED_TEXT):
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.unauthorized_text = unauthorized_text

    def _token_ok(self, supplied: str | None) -> bool:
        return bool(supplied) and hmac.compare_digest(supplied.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [h for h in SECURITY_HEADERS if h[0] not in present]
            await send(message)

        request = Request(scope)
        if self.allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in self.allowed_hosts:
            await PlainTextResponse("unexpected Host header\n", status_code=400)(scope, receive, send_with_headers)
            return
        if self.token:
            from_query = request.query_params.get("token")
            if from_query is not None and self._token_ok(from_query) and request.method in ("GET", "HEAD"):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(ACCESS_COOKIE, self.token, httponly=True, samesite="lax")
                await response(scope, receive, send_with_headers)
                return
            bearer = request.headers.get("authorization", "")
            supplied = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(ACCESS_COOKIE)
            if not self._token_ok(supplied):
                await PlainTextResponse(self.unauthorized_text, status_code=401)(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


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
    if not hmac.compare_digest(mac, _mac(secret, f"session|{session_id}.{reviewer}")) or not reviewer.isdigit():
        return None
    return session_id, (int(reviewer) or None)


def csrf_token(secret: bytes, session_id: str) -> str:
    return _mac(secret, "csrf|" + session_id)


def csrf_ok(secret: bytes, session_id: str, supplied: str | None) -> bool:
    return bool(supplied) and hmac.compare_digest(supplied, csrf_token(secret, session_id))


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site (Origin / Sec-Fetch-Site)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"
