"""A model's architecture without its weights: the shapes that decide parameter counts and memory.

Read from config.json (a local or tiny model, or the hub's config), from a GGUF file's metadata,
or known by name for the Qwen2.5(-Coder) sizes. The training memory estimate (train/memory.py)
and the export's disk-space check both count parameters from here, with one formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Architecture:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (when not tied), norms and the q/k/v biases: never quantized."""
        head = 0 if self.tied else self.vocab * self.hidden
        per_layer = 2 * self.hidden + self.heads * self.head_dim + 2 * self.kv_dim
        return self.vocab * self.hidden + head + self.layers * per_layer + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def config_fields(self) -> dict[str, Any]:
        """The shape-deciding fields of a Qwen2 config.json (the inverse of `from_config`)."""
        return dict(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            vocab_size=self.vocab,
            tie_word_embeddings=self.tied,
            max_window_layers=self.layers,
        )

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        heads = get("num_attention_heads")
        return cls(
            hidden=get("hidden_size"),
            intermediate=get("intermediate_size"),
            layers=get("num_hidden_layers"),
            heads=heads,
            kv_heads=get("num_key_value_heads") or heads,
            vocab=get("vocab_size"),
            tied=bool(get("tie_word_embeddings", False)),
        )


# Qwen2.5(-Coder) architectures, for estimates without downloading a config.
QWEN25 = {
    "0.5b": Architecture(896, 4864, 24, 14, 2, 151936, True),
    "1.5b": Architecture(1536, 8960, 28, 12, 2, 151936, True),
    "3b": Architecture(2048, 11008, 36, 16, 2, 151936, True),
    "7b": Architecture(3584, 18944, 28, 28, 4, 152064, False),
    "14b": Architecture(5120, 13824, 48, 40, 8, 152064, False),
    "32b": Architecture(5120, 27648, 64, 40, 8, 152064, False),
}


def known_architecture(source: str) -> Architecture | None:
    """The architecture of a Qwen2.5 model named like `Qwen/Qwen2.5-Coder-7B-Instruct`."""
    m = re.search(r"qwen2\.5.*?-(0\.5|1\.5|3|7|14|32)b", source.lower())
    return QWEN25[m.group(1) + "b"] if m else None


def is_gguf_file(path: str | Path) -> bool:
    """Whether the file starts with the GGUF signature (a partly copied file or a download that saved an
    error page does not)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF file (token lists are summarised by their length)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = fld.contents()
        out[key] = len(value) if isinstance(value, list) and len(value) > 16 else value
    out["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    out["tensor_count"] = len(reader.tensors)
    return out
