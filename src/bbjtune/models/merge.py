"""Merge LoRA adapters into the 16-bit weights of their base model: the one merge, on disk or in memory.

Stage 1 merges its adapter before stage 2 (train/cpt.py) and export merges the final adapter(s)
(export/merge.py checks the plan first); both call `merge_adapters`. Generation applies an adapter in
memory through `apply_adapter` (a model from --adapter, or a training run's trained.json).

Merging always starts from the 16-bit base, never from 4-bit weights, even when the adapter was
trained with QLoRA: rounding a merged model to nf4 would throw the adapter's small updates away.
Modules trained in full (`modules_to_save`) and trained token rows (`trainable_token_indices`)
are written into the merged weights too. Adapters are applied in order (stage 1 then stage 2),
each merged before the next is loaded, exactly as training stacked them. The result (safetensors,
tokenizer with the ChatML template, a generation config that stops on `<|endoftext|>`, and on
`<|im_end|>` for a chat model) appears under its final name only when complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_dir
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import CHATML_TEMPLATE, ENDOFTEXT, IM_END, IM_START
from bbjtune.models.loading import load_model, load_tokenizer, torch_dtype


@contextmanager
def _outside_zero3() -> Iterator[None]:
    """Load plain full weights even inside a DeepSpeed ZeRO-3 run (`--stage all` merges between stages).

    Stage 1's training arguments leave transformers' global ZeRO-3 switch on; from_pretrained would then
    partition the base across processes (and refuse a device map). The merge runs in the main process
    alone on whole weights, so the switch is off while it loads and restored afterwards.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def apply_adapter(model: Any, adapter: str | Path, merge: bool = True) -> Any:
    """Put a PEFT LoRA adapter on a loaded base, in memory; merged into 16-bit weights (faster generation)
    unless `merge` is off or the base is quantized (a 4-bit base keeps the adapter beside its weights)."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").exists():
        raise BbjtuneError(
            f"'{adapter}' is not a LoRA adapter directory (no adapter_config.json)",
            "pass the adapter directory a training run wrote, e.g. runs/<name>/sft/adapter",
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(path))
    except (ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BbjtuneError(
            f"the adapter {adapter} does not fit the base model: {first[:300]}",
            "use the adapter with the base model it was trained on",
        ) from None
    if not merge or getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return peft_model
    return peft_model.merge_and_unload()


def merge_adapters(
    base: str,
    adapters: Sequence[str | Path],
    out_dir: str | Path,
    *,
    tokenizer_source: str,
    chat: bool,
    dtype: str = "auto",
    device_map: Any = None,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Load `base`, fold each adapter in (in order), save model + tokenizer + stop tokens to `out_dir` atomically."""
    import torch

    step = on_step or (lambda _msg: None)
    step(f"loading base {base}")
    with _outside_zero3():
        # load_model clears a GGUF checkpoint's leftover quantizer
        model = load_model(base, dtype=dtype, device_map=device_map)
        save_dtype = _declared_dtype(base) or model.dtype
        for adapter in adapters:  # each merged before the next is loaded, as training stacked them
            step(f"merging {adapter}")
            model = apply_adapter(model, adapter)
    model = model.to(save_dtype)
    tokenizer = load_tokenizer(tokenizer_source)
    vocab = tokenizer.get_vocab()
    if IM_START in vocab and IM_END in vocab:
        tokenizer.chat_template = CHATML_TEMPLATE  # same text as the training template, no loss markers
    _set_stop_tokens(model, vocab, chat)
    out_dir = Path(out_dir)
    step(f"saving {out_dir}")
    with atomic_dir(out_dir) as tmp:
        with torch.no_grad():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    del model
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
    config = Path(base).expanduser() / "config.json"
    if not config.exists():
        return None
    cfg = json.loads(config.read_text(encoding="utf-8"))
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return torch_dtype(name) if name in ("bfloat16", "float16", "float32") else None
