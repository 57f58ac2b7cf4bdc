"""The export's merge plan: which base, which adapters, checked before anything large is loaded.

Merging happens in 16/32-bit weights only: folding a LoRA update into 4-bit weights rounds most of
it away, so a 4-bit (bitsandbytes) base is refused with a message saying which model to use
instead. The merge itself is `bbjtune.models.merge.merge_adapters`, the one stage 1 uses too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.export.adapter import AdapterInfo, check_adapter_fits, read_adapter
from bbjtune.models.loading import resolve_source
from bbjtune.models.merge import merge_adapters
from bbjtune.models.trained import TRAINED_NAME, read_trained


@dataclass
class MergePlan:
    """What to merge: a base model source, the adapters to fold in (in order), the tokenizer to ship."""

    base: str
    adapters: list[Path] = field(default_factory=list)
    tokenizer: str | None = None
    chat: bool = True  # instruction-tuned: stop on <|im_end|> as well
    system_prompt: str | None = None
    trained: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer_source(self) -> str:
        return self.tokenizer or self.base


# ----------------------------------------------------------------------------- trained.json


def plan_from_trained(path: str | Path) -> MergePlan:
    """The merge plan for a training run: trained.json (or the directory holding it)."""
    path = Path(path)
    trained = read_trained(path if path.suffix == ".json" else path / TRAINED_NAME)
    return MergePlan(
        base=trained.base_model,
        adapters=trained.adapters,  # stage 1's first when its merged model was released
        tokenizer=str(trained.tokenizer) if trained.tokenizer else None,
        chat="sft" in trained.stages,
        system_prompt=trained.raw.get("system_prompt"),
        trained=trained.raw,
    )


# ----------------------------------------------------------------------------- checks


def refuse_quantized_base(base: str) -> None:
    """A 4-bit base cannot take a merge without losing most of the update: say which model to use."""
    hint = (
        "merge into the original 16-bit model: set model.source to the non-quantized checkpoint "
        "(e.g. Qwen/Qwen2.5-Coder-7B-Instruct instead of a -bnb-4bit copy); QLoRA training on a "
        "4-bit base is fine, only the merge needs 16-bit weights"
    )
    config = Path(base).expanduser() / "config.json"
    quant: dict[str, Any] = {}
    if config.exists():
        quant = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}
    if quant.get("quant_method") == "gguf":
        quant = {}  # dequantized from a GGUF when loaded: the saved weights are plain 16/32-bit
    hub_id = not Path(base).expanduser().exists() and not base.startswith("tiny:")
    if quant or (hub_id and any(tag in base.lower() for tag in ("bnb-4bit", "-4bit", "gptq", "-awq"))):
        method = quant.get("quant_method", "4-bit")
        raise BbjtuneError(f"refusing to merge into '{base}': its weights are quantized ({method})", hint)


def check_plan(plan: MergePlan) -> list[AdapterInfo]:
    """Everything that can be checked before loading the model: base kind, adapters, their fit."""
    refuse_quantized_base(plan.base)
    source = resolve_source(plan.base)
    infos = []
    for adapter in plan.adapters:
        info = read_adapter(adapter)
        # only the first adapter sits directly on `base`; later ones sit on the merged result (same shapes)
        check_adapter_fits(info, source.path if source.kind in ("local", "tiny") else None)
        infos.append(info)
    return infos


# ----------------------------------------------------------------------------- merging


def merge(
    plan: MergePlan, out_dir: str | Path, *, dtype: str = "auto", on_step: Callable[[str], None] | None = None
) -> Path:
    """Check the plan, then fold its adapters into the base and save the merged model to `out_dir` atomically."""
    check_plan(plan)
    return merge_adapters(
        plan.base,
        plan.adapters,
        out_dir,
        tokenizer_source=plan.tokenizer_source,
        chat=plan.chat,
        dtype=dtype,
        on_step=on_step,
    )
