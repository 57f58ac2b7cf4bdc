"""The `gguf` backend: a GGUF file run by llama.cpp through llama-cpp-python, in this process.

This is the model as Ollama or llama.cpp users get it (quantized, llama.cpp's tokenizer). Chat
requests are rendered with Qwen's ChatML (`render_chatml`, the format bbjtune trains with and
writes into exported GGUFs) and continued with `<|im_end|>`/`<|endoftext|>` as stop strings; text
requests are continued as they are. llama.cpp runs one sequence at a time here; use the http
backend against `llama-server` or vLLM for throughput.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import is_gguf_file
from bbjtune.models.chat_template import render_chatml
from bbjtune.models.generate import STOP_TOKENS, Completion, Request, Sampling, truncate_at_stop


class GgufBackend:
    name = "gguf"

    def __init__(
        self, path: str, n_ctx: int = 8192, n_threads: int | None = None, n_gpu_layers: int | None = None
    ):
        try:
            import llama_cpp
        except ImportError:
            raise BbjtuneError(
                "the gguf backend needs llama-cpp-python, which is not installed",
                "pip install 'bbjtune[export]' (it compiles llama.cpp once, a few minutes)",
            ) from None
        p = Path(path)
        if not p.is_file():
            raise BbjtuneError(
                f"GGUF file {path} does not exist",
                "pass the path of a .gguf file (bbjtune export writes them)",
            )
        if not is_gguf_file(p):
            raise BbjtuneError(
                f"{path} is not a GGUF file", "the file may be incomplete; export or download it again"
            )
        if n_threads is None:  # a small model is faster on one thread than on a busy machine's many
            n_threads = 1 if p.stat().st_size < 100_000_000 else os.cpu_count()
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.path = str(p)
        self._llama_cpp = llama_cpp
        try:
            self.llm = llama_cpp.Llama(
                model_path=self.path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_gpu_layers=n_gpu_layers,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise BbjtuneError(
                f"llama.cpp cannot load {path}: {exc}", "check that the file is a complete GGUF model"
            ) from exc
        self.n_ctx = self.llm.n_ctx()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "gguf": self.path,
            "n_ctx": self.n_ctx,
            "llama_cpp": getattr(self._llama_cpp, "__version__", "?"),
        }

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    def generate(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[Completion]]]:
        for i, request in enumerate(requests):
            prompt = (
                request.text
                if request.text is not None
                else render_chatml(request.messages, add_generation_prompt=True)
            )
            yield i, [self._one(prompt, request, sampling, sampling.seed + s) for s in range(sampling.n)]

    def _one(self, prompt: str, request: Request, sampling: Sampling, seed: int) -> Completion:
        stops = [*request.stop, *STOP_TOKENS]
        max_new = request.max_new_tokens or sampling.max_new_tokens
        t0 = time.monotonic()
        try:
            n_prompt = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
            if n_prompt + 1 >= self.n_ctx:
                return Completion.failed(
                    f"the prompt has {n_prompt} tokens, more than the context of {self.n_ctx}"
                )
            self.llm.set_seed(seed)
            self.llm.last_n_tokens_size = sampling.repeat_last_n  # the repeat penalty's window
            out = self.llm.create_completion(
                prompt,
                max_tokens=min(max_new, self.n_ctx - n_prompt - 1),
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=stops,
                seed=seed,
                top_k=0,
                min_p=0.0,
                repeat_penalty=sampling.repeat_penalty,
            )
        except (ValueError, RuntimeError) as exc:
            return Completion.failed(f"llama.cpp failed: {exc}", time.monotonic() - t0)
        choice = out["choices"][0]
        text, hit = truncate_at_stop(choice.get("text") or "", stops)
        finish = "length" if choice.get("finish_reason") == "length" and not hit else "stop"
        tokens = (out.get("usage") or {}).get("completion_tokens")
        return Completion(text, finish, None, round(time.monotonic() - t0, 4), tokens)
