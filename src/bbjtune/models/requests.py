"""What every generation backend shares: a request, the sampling settings, a completion, the backend
interface, and the stops and sampling arguments for transformers' `generate` (generate.py and
generate_refill.py both call it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Request:
    """One prompt: `messages` (chat) or `text` (continue this text as is)."""

    messages: list[dict[str, str]] | None = None
    text: str | None = None
    stop: tuple[str, ...] = ()  # extra stop strings (text continuation)
    max_new_tokens: int | None = None  # None: the sampling default
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 768
    n: int = 1
    seed: int = 42
    # llama.cpp's repetition penalty (Ollama's repeat_penalty / repeat_last_n): the logits of tokens seen in
    # the last `repeat_last_n` tokens are divided by `repeat_penalty` (multiplied when negative); 1.0 = off
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64


def window_repeat_penalty(penalty: float, last_n: int) -> Any:
    """A transformers logits processor with llama.cpp's repetition penalty over the last `last_n` tokens.

    transformers' own `repetition_penalty` looks at the whole context (prompt included), which punishes
    code for reusing its own variable names; llama.cpp, and so Ollama, look at a window only."""
    import torch
    from transformers import LogitsProcessor

    class WindowRepeatPenalty(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            window = input_ids[:, -last_n:] if last_n > 0 else input_ids
            seen = torch.gather(scores, 1, window)
            punished = torch.where(seen > 0, seen / penalty, seen * penalty)
            return scores.scatter(1, window, punished)

    return WindowRepeatPenalty()


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    error: str | None = None
    latency_s: float = 0.0
    tokens: int | None = None
    gateway: dict[str, Any] | None = None  # the checking gateway's verdict, when one answered (http)

    @classmethod
    def failed(cls, reason: str, latency_s: float = 0.0) -> Completion:
        return cls("", "error", reason, latency_s)


class Backend(Protocol):
    name: str

    def describe(self) -> dict[str, Any]: ...

    def generate(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (index into requests, its n completions), in any order, as they finish."""
        ...

    def close(self) -> None: ...


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut text at the earliest stop string; returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generation_kwargs(
    backend: Any,
    sampling: Sampling,
    stop_ids: list[int],
    stops: tuple[str, ...],
    max_new: int,
) -> dict[str, Any]:
    """`model.generate`'s arguments for one sample per row: limit, stops, sampling, repetition penalty."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new,
        "eos_token_id": stop_ids,
        "pad_token_id": backend.tokenizer.pad_token_id,
    }
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if sampling.repeat_penalty != 1.0:
        from transformers import LogitsProcessorList

        kwargs["logits_processor"] = LogitsProcessorList(
            [window_repeat_penalty(sampling.repeat_penalty, sampling.repeat_last_n)]
        )
    if stops:
        kwargs.update(stop_strings=list(stops), tokenizer=backend.tokenizer)
    return kwargs
