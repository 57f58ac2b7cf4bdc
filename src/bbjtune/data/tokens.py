"""Token counts with the run's own tokenizer (what training will see), or an estimate without one."""

from __future__ import annotations

from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.models import load_tokenizer

CHARS_PER_TOKEN = 3.5  # the estimate used when the model's tokenizer cannot be loaded


class TokenCounter:
    """Counts tokens of many texts at once. `exact` is False when counts are estimates."""

    def __init__(self, tokenizer: Any | None, source: str):
        self.tokenizer = tokenizer
        self.source = source
        self.exact = tokenizer is not None
        # fast tokenizers: call the Rust backend directly (same ids, without the per-call Python work)
        backend = (
            getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        )
        self._encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)

    @classmethod
    def for_model(cls, source: str, warn: Any = None) -> TokenCounter:
        """The tokenizer of `source` (see bbjtune.models); an estimate if it cannot be loaded."""

        try:
            return cls(load_tokenizer(source), source)
        except BbjtuneError as exc:
            if warn:
                warn(f"token counts are estimates ({CHARS_PER_TOKEN} characters per token): {exc.message}")
            return cls(None, source)

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.tokenizer is None:
            return [max(1, round(len(t) / CHARS_PER_TOKEN)) for t in texts]
        if self._encode is not None:
            return [len(e.ids) for e in self._encode(texts, add_special_tokens=False)]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def describe(self) -> str:
        return (
            f"{self.source} tokenizer" if self.exact else f"estimate ({CHARS_PER_TOKEN} characters per token)"
        )
