"""Choosing a generation backend by name: transformers (local weights), http (an OpenAI-compatible
server such as Ollama or vLLM), gguf (llama.cpp in-process). Each lives in its own module; they
share the request and completion types of `generate.py`.
"""

from __future__ import annotations

from bbjtune.errors import BbjtuneError
from bbjtune.models.generate import Backend, TransformersBackend
from bbjtune.models.generate_gguf import GgufBackend
from bbjtune.models.generate_http import HttpBackend


def make_backend(
    kind: str,
    *,
    model: str | None = None,
    adapter: str | None = None,
    trained: str | None = None,
    tokenizer: str | None = None,
    dtype: str = "auto",
    batch_size: int = 16,
    base_url: str | None = None,
    api_model: str | None = None,
    timeout_s: float = 120.0,
    retries: int = 3,
    concurrency: int = 8,
    n_ctx: int = 8192,
    threads: int | None = None,
    refill_segment: int | None = None,
) -> Backend:
    """Build the backend a config or the command line asks for (loading the model when local)."""
    if kind == "transformers":
        if trained:
            return TransformersBackend.from_trained(
                trained, dtype=dtype, batch_size=batch_size, refill_segment=refill_segment
            )
        if not model:
            raise BbjtuneError(
                "no model to evaluate", "pass --model (a hub id, directory, .gguf or tiny:demo) or a config"
            )
        return TransformersBackend.load(
            model,
            adapter=adapter,
            tokenizer=tokenizer,
            dtype=dtype,
            batch_size=batch_size,
            refill_segment=refill_segment,
        )
    if kind == "http":
        if not base_url:
            raise BbjtuneError(
                "the http backend needs a server address",
                "pass --base-url, e.g. http://127.0.0.1:11434/v1 (Ollama) or http://127.0.0.1:8000/v1 (vLLM)",
            )
        return HttpBackend(
            base_url, api_model or model, timeout_s=timeout_s, retries=retries, concurrency=concurrency
        )
    if kind == "gguf":
        if not model:
            raise BbjtuneError("the gguf backend needs a .gguf file", "pass --model path/to/model.gguf")
        return GgufBackend(model, n_ctx=n_ctx, n_threads=threads)
    raise BbjtuneError(f"unknown backend '{kind}'", "use transformers, http or gguf")
