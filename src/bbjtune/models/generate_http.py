"""The `http` backend: any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, ...).

Chat requests go to `POST {base_url}/chat/completions` (the server applies the model's chat
template, as it will for users); text continuations to `POST {base_url}/completions`. Each sample
is one request (Ollama and llama.cpp ignore `n`), with seed + sample index. Requests run
`concurrency` at a time; connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff. After `max_connect_failures` connection failures in a row the endpoint is
taken as down and the remaining samples are recorded as skipped at once, with the reason, instead
of waiting for every retry of every sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.models.generate import STOP_TOKENS, Completion, Request, Sampling, truncate_at_stop


# what a generation row keeps of the checking gateway's `bbjtune` field
GATEWAY_KEYS = ("verdict", "attempts", "repaired", "loop_cut")


class HttpBackend:
    name = "http"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        timeout_s: float = 120.0,
        retries: int = 3,
        concurrency: int = 8,
        backoff_s: float = 0.5,
        max_connect_failures: int = 5,
        api_key: str | None = None,
    ):
        try:
            import httpx
        except ImportError:
            raise BbjtuneError(
                "the http backend needs httpx, which is not installed", "pip install 'bbjtune[eval]'"
            ) from None
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.backoff_s = backoff_s
        self.max_connect_failures = max_connect_failures
        key = api_key or os.environ.get("BBJTUNE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers=headers
        )
        self._lock = threading.Lock()
        self._connect_failures = 0
        self._down_reason: str | None = None
        self.model = model or self._first_served_model() or "default"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "concurrency": self.concurrency,
        }

    def close(self) -> None:
        self._client.close()

    def _first_served_model(self) -> str | None:
        """The model a server offers when none was named (`GET /models`); None when it cannot tell."""
        try:
            data = self._client.get(f"{self.base_url}/models", timeout=min(10.0, self.timeout_s)).json()
            return data["data"][0]["id"]
        except Exception:  # noqa: BLE001 — only a convenience; requests will report real problems
            return None

    def generate(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[Completion]]]:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="bbjtune-http") as pool:
            futures = {pool.submit(self._samples, r, sampling): i for i, r in enumerate(requests)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()

    def _samples(self, request: Request, sampling: Sampling) -> list[Completion]:
        return [self._one(request, sampling, sampling.seed + s) for s in range(sampling.n)]

    def _one(self, request: Request, sampling: Sampling, seed: int) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": request.max_new_tokens or sampling.max_new_tokens,
            "seed": seed,
        }
        if sampling.repeat_penalty != 1.0:  # llama.cpp's server reads these; others ignore unknown fields
            body.update(repeat_penalty=sampling.repeat_penalty, repeat_last_n=sampling.repeat_last_n)
        stops = list(request.stop)
        if request.text is not None:
            url, body["prompt"] = f"{self.base_url}/completions", request.text
            stops += list(STOP_TOKENS)
        else:
            url, body["messages"] = f"{self.base_url}/chat/completions", request.messages
        if stops:
            body["stop"] = stops[:4]  # OpenAI's limit; the rest are applied below
        t0 = time.monotonic()
        reason = "no attempt made"
        for attempt in range(self.retries + 1):
            if self._down_reason:
                return Completion.failed(f"skipped: {self._down_reason}", time.monotonic() - t0)
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 8.0))
            try:
                resp = self._client.post(url, json=body)
            except self._httpx.ConnectError as exc:
                reason = f"cannot connect to {self.base_url}: {exc}"
                self._note_connect_failure(reason)
                continue
            except self._httpx.TimeoutException:
                reason = f"no answer from {self.base_url} within {self.timeout_s:g} s"
                continue
            except self._httpx.HTTPError as exc:
                reason = f"request to {url} failed: {exc}"
                continue
            self._note_success()
            if resp.status_code == 429 or resp.status_code >= 500:
                reason = f"HTTP {resp.status_code} from {url}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                return Completion.failed(
                    f"HTTP {resp.status_code} from {url}: {resp.text[:300]}", time.monotonic() - t0
                )
            return self._parse(resp, stops, time.monotonic() - t0)
        return Completion.failed(f"{reason} (after {self.retries + 1} attempts)", time.monotonic() - t0)

    def _parse(self, resp: Any, stops: list[str], latency: float) -> Completion:
        try:
            choice = resp.json()["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            finish = choice.get("finish_reason") or "stop"
        except (ValueError, KeyError, IndexError, TypeError):
            return Completion.failed(
                f"the server's answer is not an OpenAI completion: {resp.text[:200]!r}", latency
            )
        text, hit = truncate_at_stop(text or "", stops)
        body = resp.json()
        tokens = (body.get("usage") or {}).get("completion_tokens")
        checked = body.get("bbjtune")  # `bbjtune serve gateway` answered: how it got this answer
        gateway = {k: checked[k] for k in GATEWAY_KEYS if k in checked} if isinstance(checked, dict) else None
        return Completion(
            text,
            "stop" if hit else ("length" if finish == "length" else "stop"),
            None,
            round(latency, 4),
            tokens,
            gateway,
        )

    def _note_connect_failure(self, reason: str) -> None:
        with self._lock:
            self._connect_failures += 1
            if self._connect_failures >= self.max_connect_failures and not self._down_reason:
                self._down_reason = (
                    f"the endpoint looks down ({self._connect_failures} connection failures in a row; "
                    f"last: {reason})"
                )

    def _note_success(self) -> None:
        with self._lock:
            self._connect_failures = 0
