"""Merge a LoRA adapter into the 16-bit weights of its base model and save a full model.

Merging always starts from the 16-bit base, never from 4-bit weights, even when the adapter was
trained with QLoRA: rounding a merged model to nf4 would throw the adapter's small updates away.
Modules trained in full (`modules_to_save`) and trained token rows (`trainable_token_indices`)
are written into the merged weights too.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bbjtune.artifacts import follow_umask, make_temp_dir


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


def merge_adapter(base_source: str, adapter_dir: Path, out_dir: Path, dtype: str = "auto",
                  device_map: Any = None) -> Path:
    """Load base + adapter, merge, save model + tokenizer + generation config to `out_dir` (atomically)."""
    import torch
    from peft import PeftModel

    from bbjtune.models import load_model, load_tokenizer

    if device_map is None and torch.cuda.is_available():
        device_map = {"": 0}
    with _outside_zero3():
        model = load_model(base_source, dtype=dtype, device_map=device_map)
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = load_tokenizer(str(adapter_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (adapter_dir / "generation_config.json").exists():
            shutil.copyfile(adapter_dir / "generation_config.json", tmp / "generation_config.json")
        follow_umask(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del model
    return out_dir
