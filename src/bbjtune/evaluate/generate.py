"""Generation backends behind one interface, and the local transformers backend.

A backend turns `Request`s (a chat conversation, or a raw text to continue) into `Completion`s:
n samples per request, with the same sampling settings everywhere. Three backends:

- `transformers` (this file): a model loaded in this process, optionally with a LoRA adapter on
  top of a base; prompts are rendered with the model's chat template, batched by similar length
  with left padding, and generation stops on `<|im_end|>` and `<|endoftext|>`.
- `http` (generate_http.py): any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server).
- `gguf` (generate_gguf.py): a GGUF file through llama-cpp-python.

Backends yield results as they finish so the caller can write them to disk at once: a killed
run loses at most one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, render_chatml

STOP_TOKENS = (IM_END, ENDOFTEXT)
SMALL_MODEL_PARAMS = 100_000_000  # below this, CPU generation runs single-threaded


@dataclass
class Request:
    """One prompt: `messages` (chat) or `text` (continue this text as is)."""

    messages: list[dict[str, str]] | None = None
    text: str | None = None
    stop: tuple[str, ...] = ()          # extra stop strings (text continuation)
    max_new_tokens: int | None = None   # None: the sampling default
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 768
    n: int = 1
    seed: int = 42


@dataclass
class Completion:
    text: str
    finish_reason: str               # "stop" | "length" | "error"
    error: str | None = None
    latency_s: float = 0.0
    tokens: int | None = None

    @classmethod
    def failed(cls, reason: str, latency_s: float = 0.0) -> Completion:
        return cls("", "error", reason, latency_s)


class Backend(Protocol):
    name: str

    def describe(self) -> dict[str, Any]: ...

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (index into requests, its n completions), in any order, as they finish."""
        ...

    def close(self) -> None: ...


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut text at the earliest stop string; returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ----------------------------------------------------------------------------- transformers

class TransformersBackend:
    """A causal LM in this process; batched generation with left padding."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, description: dict[str, Any] | None = None):
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = ENDOFTEXT if ENDOFTEXT in self.tokenizer.get_vocab() else self.tokenizer.eos_token
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.stop_ids = self._stop_ids()
        self._description = description or {}
        self._torch = torch
        self.generated_tokens = 0

    @classmethod
    def load(cls, source: str, adapter: str | None = None, tokenizer: str | None = None, dtype: str = "auto",
             batch_size: int = 16) -> TransformersBackend:
        """A model from any source bbjtune accepts, with an optional LoRA adapter applied on top."""
        import torch

        from bbjtune.models import load_model, load_tokenizer

        device_map = "auto" if torch.cuda.is_available() else None
        model = load_model(source, dtype=dtype, device_map=device_map)
        tok_source = tokenizer or (adapter if adapter and _has_tokenizer(adapter) else source)
        tok = load_tokenizer(tok_source)
        if adapter:
            model = apply_adapter(model, adapter)
        return cls(model, tok, batch_size, {"source": source, "adapter": adapter, "tokenizer": str(tok_source)})

    @classmethod
    def from_trained(cls, trained: str | Path, dtype: str = "auto", batch_size: int = 16) -> TransformersBackend:
        """The fine-tuned model described by a train run's trained.json (or its run directory)."""
        import torch

        from bbjtune.train.trained import load_trained

        device_map = "auto" if torch.cuda.is_available() else None
        model, tok = load_trained(trained, dtype=dtype, device_map=device_map, merge=True)
        return cls(model, tok, batch_size, {"trained": str(trained)})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "batch_size": self.batch_size, "device": str(self.device),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""), **self._description}

    def close(self) -> None:
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    def _stop_ids(self) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in STOP_TOKENS if t in vocab}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return sorted(ids)

    def render(self, request: Request) -> str:
        if request.text is not None:
            return request.text
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return render_chatml(request.messages, add_generation_prompt=True)

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, list[Completion]]]:
        torch = self._torch
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and sum(p.numel() for p in self.model.parameters()) < SMALL_MODEL_PARAMS:
            # Small matrices: thread start-up costs more than it saves (20x slower on a busy 2-core box).
            torch.set_num_threads(1)
        try:
            yield from self._generate_all(requests, sampling)
        finally:
            torch.set_num_threads(threads)

    def _generate_all(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, list[Completion]]]:
        prompts = [self.render(r) for r in requests]
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        # Same settings together, then longest first: similar lengths share a batch (little padding)
        # and an out-of-memory batch shows up at the start, not after an hour.
        order = sorted(range(len(requests)), key=lambda i: (requests[i].max_new_tokens or sampling.max_new_tokens,
                                                             requests[i].stop, -lengths[i]))
        for batch_no, start in enumerate(range(0, len(order), self.batch_size)):
            batch = order[start:start + self.batch_size]
            groups = _split_by_settings(batch, requests)
            for group in groups:
                yield from self._generate_batch(group, prompts, requests, sampling, seed=sampling.seed + batch_no)

    def _generate_batch(self, batch: list[int], prompts: list[str], requests: Sequence[Request],
                        sampling: Sampling, seed: int) -> Iterator[tuple[int, list[Completion]]]:
        torch = self._torch
        req = requests[batch[0]]
        max_new = req.max_new_tokens or sampling.max_new_tokens
        t0 = time.monotonic()
        try:
            texts = self._run_generate([prompts[i] for i in batch], req.stop, max_new, sampling, seed)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                yield batch[0], [Completion.failed("out of GPU memory for this prompt; lower max_new_tokens")] * sampling.n
                return
            torch.cuda.empty_cache()
            half = len(batch) // 2
            yield from self._generate_batch(batch[:half], prompts, requests, sampling, seed)
            yield from self._generate_batch(batch[half:], prompts, requests, sampling, seed)
            return
        share = (time.monotonic() - t0) / len(batch)
        for j, i in enumerate(batch):
            yield i, [Completion(text, finish, None, round(share, 4), n_tok)
                      for text, finish, n_tok in texts[j * sampling.n:(j + 1) * sampling.n]]

    def _run_generate(self, prompts: list[str], stops: tuple[str, ...], max_new: int, sampling: Sampling,
                      seed: int) -> list[tuple[str, str, int]]:
        torch = self._torch
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        # A stop that is one special token (the FIM suite's <|fim_prefix|>, <|file_sep|>, ...) ends generation
        # as a stop id: decoding skips special tokens, so as a stop string it would never be seen. Added
        # tokens count too: Qwen's tokenizer read from a GGUF lists the FIM tokens as added, not special.
        special = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        vocab = self.tokenizer.get_vocab()
        stop_ids = sorted(set(self.stop_ids) | {vocab[s] for s in stops if s in special and s in vocab})
        stops = tuple(s for s in stops if s not in special)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "num_return_sequences": sampling.n,
                                  "eos_token_id": stop_ids, "pad_token_id": self.tokenizer.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stops:
            kwargs.update(stop_strings=list(stops), tokenizer=self.tokenizer)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
        results = []
        stop_set = set(stop_ids)
        for ids in new_tokens:
            end = next((k for k, t in enumerate(ids) if t in stop_set), None)
            finish = "stop" if end is not None else "length"
            ids = ids if end is None else ids[:end]
            self.generated_tokens += len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            text, hit = truncate_at_stop(text, stops)
            results.append((text, "stop" if hit else finish, len(ids)))
        return results


def _split_by_settings(batch: list[int], requests: Sequence[Request]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i in batch:
        groups.setdefault((requests[i].max_new_tokens, requests[i].stop), []).append(i)
    return list(groups.values())


def _has_tokenizer(path: str) -> bool:
    p = Path(path)
    return (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists()


def apply_adapter(model: Any, adapter: str) -> Any:
    """Put a PEFT LoRA adapter on a loaded base; merged into 16-bit weights for faster generation."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").exists():
        raise BbjtuneError(f"'{adapter}' is not a LoRA adapter directory (no adapter_config.json)",
                           "pass the adapter directory a training run wrote, e.g. runs/<name>/sft/adapter")
    try:
        peft_model = PeftModel.from_pretrained(model, str(path))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise BbjtuneError(f"cannot apply adapter {adapter}: {str(exc).splitlines()[0]}",
                           "the adapter must have been trained on this base model") from exc
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return peft_model
    return peft_model.merge_and_unload()


# ----------------------------------------------------------------------------- choosing a backend

def make_backend(kind: str, *, model: str | None = None, adapter: str | None = None, trained: str | None = None,
                 tokenizer: str | None = None, dtype: str = "auto", batch_size: int = 16,
                 base_url: str | None = None, api_model: str | None = None, timeout_s: float = 120.0,
                 retries: int = 3, concurrency: int = 8, n_ctx: int = 8192, threads: int | None = None) -> Backend:
    """Build the backend a config or the command line asks for (loading the model when local)."""
    if kind == "transformers":
        if trained:
            return TransformersBackend.from_trained(trained, dtype=dtype, batch_size=batch_size)
        if not model:
            raise BbjtuneError("no model to evaluate", "pass --model (a hub id, directory, .gguf or tiny:demo) or a config")
        return TransformersBackend.load(model, adapter=adapter, tokenizer=tokenizer, dtype=dtype, batch_size=batch_size)
    if kind == "http":
        from bbjtune.evaluate.generate_http import HttpBackend

        if not base_url:
            raise BbjtuneError("the http backend needs a server address",
                               "pass --base-url, e.g. http://127.0.0.1:11434/v1 (Ollama) or http://127.0.0.1:8000/v1 (vLLM)")
        return HttpBackend(base_url, api_model or model, timeout_s=timeout_s, retries=retries, concurrency=concurrency)
    if kind == "gguf":
        from bbjtune.evaluate.generate_gguf import GgufBackend

        if not model:
            raise BbjtuneError("the gguf backend needs a .gguf file", "pass --model path/to/model.gguf")
        return GgufBackend(model, n_ctx=n_ctx, n_threads=threads)
    raise BbjtuneError(f"unknown backend '{kind}'", "use transformers, http or gguf")


ProgressCallback = Callable[[int], None]
