"""Listening addresses for the project's web servers, without the web framework: `bbjtune serve` and the
command line need these even where the review extra (starlette, uvicorn) is not installed."""

from __future__ import annotations

import ipaddress
import secrets
import socket

from bbjtune.errors import BbjtuneError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for uvicorn (port 0 picks a free one); a bad address or a busy
    port is one line with what to do."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise BbjtuneError(
            f"cannot listen on {host!r}: {exc.strerror}", "use an IP address such as 127.0.0.1"
        ) from exc
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets whose protocol says TCP,
    # and with it on every response waited ~40 ms for a delayed ACK (measured on the gateway: 44 ms per
    # request on loopback, 1 ms without; benchmarks/gateway_latency.py)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BbjtuneError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "another program uses this port; pick another with --port (0 picks a free one)",
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
