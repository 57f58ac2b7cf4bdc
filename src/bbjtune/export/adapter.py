"""What a LoRA adapter directory holds, and whether it fits a base model — read from small files only.

Export checks an adapter before any model is loaded or any large file is written: the PEFT type,
rank, DoRA, extra trained modules (`modules_to_save`, `trainable_token_indices`, LoRA on the
embeddings) and, for a local base checkpoint, that every adapted layer exists in the base with the
shape the adapter was trained for. Serving targets (vLLM, GGUF LoRA) ask `serving_blockers()`
what they cannot take.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_(?:embedding_)?([AB])(?:\.weight)?$")
EMBEDDING_MODULES = ("embed_tokens", "lm_head")


@dataclass
class AdapterInfo:
    directory: Path
    config: dict[str, Any]
    lora_shapes: dict[str, dict[str, tuple[int, ...]]] = field(
        default_factory=dict
    )  # module → {"A":…, "B":…}
    other_keys: list[str] = field(default_factory=list)  # saved weights that are not LoRA A/B pairs

    @property
    def rank(self) -> int:
        ranks = [int(self.config.get("r", 8)), *map(int, (self.config.get("rank_pattern") or {}).values())]
        return max(ranks)

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.config.get("r", 8)))

    @property
    def use_dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.config.get("modules_to_save") or [])

    @property
    def trainable_token_indices(self) -> Any:
        return self.config.get("trainable_token_indices")

    @property
    def embedding_lora(self) -> list[str]:
        return sorted(m for m in self.lora_shapes if m.split(".")[-1] in EMBEDDING_MODULES)

    def serving_blockers(self) -> list[str]:
        """Why this adapter cannot be served as a plain LoRA (vLLM, llama.cpp/Ollama ADAPTER); empty if it can."""
        reasons = []
        if self.use_dora:
            reasons.append("it is a DoRA adapter (use_dora: true); vLLM and llama.cpp apply plain LoRA only")
        if self.modules_to_save:
            reasons.append(f"it carries full copies of {', '.join(self.modules_to_save)} (modules_to_save)")
        if self.trainable_token_indices:
            reasons.append(
                "it trains embedding rows of special tokens (trainable_token_indices), "
                "which only exist as full embedding weights"
            )
        if self.embedding_lora:
            reasons.append(f"it puts LoRA on the embeddings ({', '.join(self.embedding_lora)})")
        if self.other_keys and not (self.modules_to_save or self.trainable_token_indices):
            reasons.append(f"it stores weights that are not LoRA pairs ({', '.join(self.other_keys[:3])})")
        return reasons


def read_adapter(directory: str | Path) -> AdapterInfo:
    directory = Path(directory)
    cfg_path = directory / "adapter_config.json"
    if not cfg_path.exists():
        raise BbjtuneError(
            f"{directory} is not a LoRA adapter (no adapter_config.json)",
            "point to the adapter directory written by bbjtune train (e.g. runs/<name>/sft/adapter)",
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BbjtuneError(
            f"{cfg_path} line {exc.lineno}: not valid JSON", "the adapter is damaged; train again"
        ) from None
    if config.get("peft_type") != "LORA":
        raise BbjtuneError(
            f"{directory}: a {config.get('peft_type')} adapter, not LoRA",
            "export merges and serves LoRA adapters only",
        )
    info = AdapterInfo(directory, config)
    weights = directory / "adapter_model.safetensors"
    if not weights.exists():
        raise BbjtuneError(
            f"{directory} has no adapter_model.safetensors",
            "the adapter was not saved completely; train again (or save with safetensors)",
        )
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as st:
        for key in st.keys():
            m = _LORA_KEY.match(key)
            if m:
                info.lora_shapes.setdefault(m.group(1), {})[m.group(2)] = tuple(st.get_slice(key).get_shape())
            else:
                info.other_keys.append(key)
    if not info.lora_shapes and not info.other_keys:
        raise BbjtuneError(f"{weights} holds no weights", "the adapter is empty; train again")
    return info


def check_adapter_fits(info: AdapterInfo, base_dir: Path | None) -> None:
    """Fail when the adapter was trained on a model with other layers or shapes than `base_dir`.

    `base_dir` is a local checkpoint directory; other sources (hub ids, GGUF) are checked by PEFT
    when the adapter is loaded.
    """
    if base_dir is None or not (base_dir / "config.json").exists():
        return
    base_shapes = _checkpoint_shapes(base_dir)
    if not base_shapes:
        return
    for module, pair in sorted(info.lora_shapes.items()):
        weight = base_shapes.get(f"{module}.weight")
        if weight is None:
            raise BbjtuneError(
                f"the adapter in {info.directory} adapts '{module}', which the base model {base_dir} does not have",
                "the adapter belongs to another model architecture; export it with the base it was trained on",
            )
        if module.split(".")[-1] in EMBEDDING_MODULES:
            continue
        a, b = pair.get("A"), pair.get("B")
        if a is None or b is None or len(weight) != 2 or (b[0], a[1]) != tuple(weight):
            got = f"{b[0]}×{a[1]}" if a and b else "incomplete"
            raise BbjtuneError(
                f"the adapter in {info.directory} does not fit the base model {base_dir}: '{module}' is "
                f"{weight[0]}×{weight[1]} in the base but {got} in the adapter",
                "the adapter was trained on a different base model (another size?); use that base "
                f"(adapter_config.json says: {info.config.get('base_model_name_or_path')})",
            )


def _checkpoint_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                shapes[key] = tuple(st.get_slice(key).get_shape())
    return shapes
