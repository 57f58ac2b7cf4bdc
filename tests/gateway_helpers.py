"""Helpers for the gateway tests: run an ASGI app on a real loopback port, a replaying upstream, and
`bbjtune serve ...` as a real process (the gateway, and `serve gguf` for its tests too).

The replaying upstream stands in for a model server where the test needs a model that writes BBj:
the tiny test model cannot, and best-of-N is only observable when some answers pass the checker and
others do not. It speaks OpenAI's wire format (JSON and server-sent events) over real HTTP, answers
from a list in order, and records every request it receives. The gateway's behaviour against a
real model server is tested separately against `bbjtune serve gguf` (test_gateway_openai.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import REPO_ROOT
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

GOOD_BBJ = "Here is the loop:\n```bbj\nfor i=1 to 10\n  print i\nnext i\nend\n```\n"
BAD_BBJ = 'Here is the loop:\n```bbj\nfor i=1 to 10\n  print ("a"\nnext i\nend\n```\n'
WORSE_BBJ = '```bbj\nfor i=1 to 10\n  print ("a"\n  x=(1+\nnext i\nend\n```\n'
PROSE = "Paris is the capital of France."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bbjtune(args: list[str], ready_url: str, timeout: float = 120) -> subprocess.Popen:
    """`python -m bbjtune ARGS` in the background, once `ready_url` answers 200 (the test fails with
    the process's output when it exits or does not get there in time)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bbjtune", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"{args[:2]} did not start: {proc.stdout.read()}")
        time.sleep(0.3)


@contextmanager
def serving(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yields http://host:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # see net.listening_socket
    sock.bind((host, 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class ReplayUpstream:
    """An OpenAI-compatible server that answers from `answers` in turn (the last one repeats); an
    answer given as (text, finish_reason) ends with that reason, e.g. "length" for a runaway."""

    def __init__(
        self,
        answers: list[str],
        model: str = "bbj-replay",
        max_chars: int | None = None,
        down_after: int | None = None,
    ):
        self.answers = list(answers)
        self.model = model
        self.max_chars = max_chars  # a chat longer than this is refused with 400, as a full context is
        self.down_after = down_after  # after this many answers every request gets 503, as a crashed server
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
            ]
        )

    def _next(self) -> tuple[str, str]:
        answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        return answer if isinstance(answer, tuple) else (answer, "stop")

    async def models(self, request: Request):
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "me"}]}
        )

    async def _take(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return body

    async def chat(self, request: Request):
        body = await self._take(request)
        if self.down_after is not None and len(self.requests) > self.down_after:
            self.requests.pop()
            return JSONResponse(
                {"error": {"message": "the model server is down", "type": "server_error"}}, 503
            )
        size = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [])
        if self.max_chars is not None and size > self.max_chars:
            self.requests.pop()  # refused: it draws no answer
            message = f"the request exceeds the available context size ({size} > {self.max_chars})"
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, 400)
        text, finish = self._next()
        head = {"id": f"chatcmpl-{len(self.requests)}", "created": 1, "model": self.model}
        if body.get("stream"):
            pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
            events = [
                {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                }
            ]
            events += [
                {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
                }
                for p in pieces
            ]
            events.append(
                {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                }
            )
            return StreamingResponse(_sse(events), media_type="text/event-stream")
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    async def completions(self, request: Request):
        body = await self._take(request)
        text, finish = self._next()
        head = {
            "id": f"cmpl-{len(self.requests)}",
            "created": 1,
            "model": self.model,
            "object": "text_completion",
        }
        if body.get("stream"):
            events = [
                {**head, "choices": [{"index": 0, "text": text[i : i + 5], "finish_reason": None}]}
                for i in range(0, len(text), 5)
            ]
            events.append({**head, "choices": [{"index": 0, "text": "", "finish_reason": finish}]})
            return StreamingResponse(_sse(events), media_type="text/event-stream")
        return JSONResponse(
            {
                **head,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )


async def _sse(events: list[dict[str, Any]]):
    for e in events:
        yield f"data: {json.dumps(e)}\n\n"
    yield "data: [DONE]\n\n"
