"""Models, below every stage: loading every source bbjtune accepts (hub id, directory, .gguf, tiny),
the chat template, generation backends (generate*.py, backend.py, generations.py), the trained-model
handle (trained.py), the one adapter merge (merge.py), architectures and parameter counts
(architecture.py)."""

from bbjtune.models.loading import ModelSource, load_model, load_tokenizer, resolve_source
from bbjtune.models.tiny import build_tiny

__all__ = ["ModelSource", "build_tiny", "load_model", "load_tokenizer", "resolve_source"]
