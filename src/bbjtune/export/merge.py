"""Merge trained LoRA adapters into the 16-bit base model and save a standalone checkpoint.

Merging happens in 16/32-bit weights only: folding a LoRA update into 4-bit weights rounds most of
it away, so a 4-bit (bitsandbytes) base is refused with a message saying which model to use
instead. Adapters are applied in order (stage 1 then stage 2) and each is merged before the next is
loaded, exactly as training stacked them. The result (safetensors, tokenizer with the ChatML
template, generation config that stops on `<|im_end|>` and `<|endoftext|>`) is written to a
temporary directory and renamed into place, so `merged/` is either complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import follow_umask, make_temp_dir
from bbjtune.errors import BbjtuneError
from bbjtune.export.adapter import AdapterInfo, check_adapter_fits, read_adapter
from bbjtune.models.chat_template import CHATML_TEMPLATE, ENDOFTEXT, IM_END, IM_START

@dataclass
class MergePlan:
    """What to merge: a base model source, the adapters to fold in (in order), the tokenizer to ship."""

    base: str
    adapters: list[Path] = field(default_factory=list)
    tokenizer: str | None = None
    chat: bool = True                     # instruction-tuned: stop on <|im_end|> as well
    system_prompt: str | None = None
    trained: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer_source(self) -> str:
        return self.tokenizer or self.base


# ----------------------------------------------------------------------------- trained.json

def plan_from_trained(path: str | Path) -> MergePlan:
    """The merge plan for a training run: trained.json (or the directory holding it)."""
    from bbjtune.train.trained import read_trained

    path = Path(path)
    trained = read_trained(path if path.suffix == ".json" else path / "trained.json")
    return MergePlan(
        base=trained.base_model,
        adapters=[trained.adapter] if trained.adapter else [],
        tokenizer=str(trained.tokenizer) if trained.tokenizer else None,
        chat="sft" in trained.stages,
        system_prompt=trained.raw.get("system_prompt"),
        trained=trained.raw,
    )


# ----------------------------------------------------------------------------- checks

def refuse_quantized_base(base: str) -> None:
    """A 4-bit base cannot take a merge without losing most of the update: say which model to use."""
    hint = ("merge into the original 16-bit model: set model.source to the non-quantized checkpoint "
            "(e.g. Qwen/Qwen2.5-Coder-7B-Instruct instead of a -bnb-4bit copy); QLoRA training on a "
            "4-bit base is fine, only the merge needs 16-bit weights")
    config = Path(base).expanduser() / "config.json"
    quant: dict[str, Any] = {}
    if config.exists():
        quant = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}
    if quant.get("quant_method") == "gguf":
        quant = {}   # dequantized from a GGUF when loaded: the saved weights are plain 16/32-bit
    hub_id = not Path(base).expanduser().exists() and not base.startswith("tiny:")
    if quant or (hub_id and any(tag in base.lower() for tag in ("bnb-4bit", "-4bit", "gptq", "-awq"))):
        method = quant.get("quant_method", "4-bit")
        raise BbjtuneError(f"refusing to merge into '{base}': its weights are quantized ({method})", hint)


def check_plan(plan: MergePlan) -> list[AdapterInfo]:
    """Everything that can be checked before loading the model: base kind, adapters, their fit."""
    from bbjtune.models.loading import resolve_source

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

def merge(plan: MergePlan, out_dir: str | Path, *, dtype: str = "auto",
          on_step: Callable[[str], None] | None = None) -> Path:
    """Load the base, fold each adapter in, and save the merged model to `out_dir` atomically."""
    import torch
    from peft import PeftModel

    from bbjtune.models import load_model, load_tokenizer

    check_plan(plan)
    step = on_step or (lambda _msg: None)
    step(f"loading base {plan.base}")
    model = load_model(plan.base, dtype=dtype)   # clears a GGUF checkpoint's leftover quantizer
    save_dtype = _declared_dtype(plan.base) or model.dtype
    for adapter in plan.adapters:
        step(f"merging {adapter}")
        try:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BbjtuneError(f"the adapter {adapter} does not fit the base {plan.base}: {first[:300]}",
                               "export the adapter with the base model it was trained on") from None
    model = model.to(save_dtype)
    tokenizer = load_tokenizer(plan.tokenizer_source)
    vocab = tokenizer.get_vocab()
    if IM_START in vocab and IM_END in vocab:
        tokenizer.chat_template = CHATML_TEMPLATE   # same text as the training template, no loss markers
    _set_stop_tokens(model, vocab, plan.chat)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.")
    try:
        step(f"saving {out_dir}")
        with torch.no_grad():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        follow_umask(tmp)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _set_stop_tokens(model: Any, vocab: dict[str, int], chat: bool) -> None:
    """A chat model stops on <|im_end|> (end of its turn) and <|endoftext|> (end of document)."""
    gen = model.generation_config
    eot = vocab.get(ENDOFTEXT)
    stops = [vocab[IM_END]] if chat and IM_END in vocab else []
    if eot is not None:
        stops.append(eot)
        gen.pad_token_id = eot
    if stops:
        gen.eos_token_id = stops if len(stops) > 1 else stops[0]
        model.config.eos_token_id = stops[0]


def _declared_dtype(base: str):
    """The dtype a local base checkpoint was saved in (merged models are saved the same way)."""
    import torch

    config = Path(base).expanduser() / "config.json"
    if not config.exists():
        return None
    cfg = json.loads(config.read_text(encoding="utf-8"))
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(name)


def replace_dir(new: Path, final: Path) -> None:
    """Put directory `new` at `final`, replacing an older one; `final` is never half-written."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)
