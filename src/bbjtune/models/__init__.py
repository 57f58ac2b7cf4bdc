"""Model and tokenizer loading for every source bbjtune accepts (hub id, directory, .gguf, tiny)."""

from bbjtune.models.loading import ModelSource, load_model, load_tokenizer, resolve_source
from bbjtune.models.tiny import build_tiny

__all__ = ["ModelSource", "build_tiny", "load_model", "load_tokenizer", "resolve_source"]
