"""Talking to the upstream model server (Ollama, `bbjtune serve gguf`, vLLM: all speak OpenAI's API).

The gateway connects to this one address and nowhere else: the client ignores proxy settings from
the environment (`trust_env=False`), so a proxy variable cannot route prompts off the machine.
The client's own Authorization header is never forwarded; the upstream gets the gateway's
`--upstream-key`, if any.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

UPSTREAM_ERROR = "upstream_error"  # the error type of what the upstream did, not the client


class UpstreamError(Exception):
    """The upstream answered with an error, or could not be reached."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"upstream error {status}")
        self.status = status
        self.body = body


@dataclass
class Reply:
    body: dict[str, Any]
    seconds: float


class Upstream:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, path: str) -> dict[str, Any]:
        return _json_or_raise(await self._send("GET", path))

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        start = time.perf_counter()
        res = await self._send("POST", path, json={**body, "stream": False})
        return Reply(_json_or_raise(res), time.perf_counter() - start)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._lost(exc, "cannot be reached") from exc

    def _lost(self, exc: httpx.HTTPError, what: str) -> UpstreamError:
        return UpstreamError(
            502,
            error_body(
                f"the upstream model server at {self.base_url} {what} ({type(exc).__name__})", UPSTREAM_ERROR
            ),
        )

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The upstream's server-sent events as dicts, until `[DONE]`."""
        try:
            async with self.client.stream("POST", path, json={**body, "stream": True}) as res:
                if res.status_code != 200:
                    await res.aread()
                    _json_or_raise(res)
                async for line in res.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except json.JSONDecodeError:
                        continue  # a keep-alive or a malformed event: the answer goes on
        except httpx.HTTPError as exc:
            raise self._lost(exc, "stopped answering") from exc


def _json_or_raise(res: httpx.Response) -> dict[str, Any]:
    try:
        body = res.json()
    except ValueError:
        body = error_body(
            res.text[:500] or f"the upstream answered {res.status_code} without a body", UPSTREAM_ERROR
        )
    if res.status_code != 200:
        raise UpstreamError(res.status_code, body)
    if not isinstance(body, dict):
        raise UpstreamError(
            502, error_body("the upstream answered with something other than a JSON object", UPSTREAM_ERROR)
        )
    return body


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """An error in OpenAI's shape, which OpenAI clients show to their users."""
    return {"error": {"message": message, "type": kind}}
