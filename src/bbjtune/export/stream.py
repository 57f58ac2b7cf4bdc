"""Merge LoRA adapters into the base one tensor at a time, straight into the GGUF writer.

The HF merge (models/merge.py) loads the whole base model: on a CPU that is float32, 4 bytes per
parameter (a 7B model needs 30 GiB of RAM, a 32B model 130 GiB), and it then writes the merged
safetensors to disk before the GGUF is made from them. Here each base tensor is read from its
safetensors file, every adapter of the plan is applied to it in the plan's order, and the result
goes to the GGUF writer: RAM holds about the largest tensor (the embeddings, 2.2 GiB in float32 for
7B), and no merged checkpoint is written at all.

The arithmetic is PEFT's, so the tensors equal those of the HF merge:
- a LoRA pair adds `scaling * B @ A` (computed in float32, as PEFT does with its float32 adapter
  weights) to the weight held in the merge dtype; scaling is alpha/r, alpha/sqrt(r) with rsLoRA;
- `modules_to_save` replaces the whole weight with the adapter's trained copy;
- `trainable_token_indices` replaces the trained rows (PEFT's TrainableTokens merge uses index_copy);
- the result is cast to the dtype the base checkpoint declares, as the HF merge saves it.
What this cannot reproduce (DoRA, per-module rank/alpha patterns, LoRA on the embeddings, LoRA
biases, a base that is not a local safetensors checkpoint) is named by `stream_blockers`, and the
export stage then runs the HF merge instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bbjtune.export.adapter import EMBEDDING_MODULES, AdapterInfo
from bbjtune.export.gguf import read_checkpoint
from bbjtune.models.chat_template import CHATML_TEMPLATE, IM_END, IM_START
from bbjtune.models.loading import load_tokenizer, resolve_source, torch_dtype
from bbjtune.models.merge import _declared_dtype, _set_stop_tokens

_PREFIX = "base_model.model."
_LORA = re.compile(r"^(.+)\.lora_([AB])\.weight$")
_TOKENS = re.compile(r"^(.+)\.token_adapter\.trainable_tokens_delta$")


def local_base_dir(base: str) -> Path | None:
    """The base's checkpoint directory when it is a local safetensors checkpoint, else None."""
    try:
        source = resolve_source(base)
    except Exception:  # noqa: BLE001 — any failure means "not streamable"; the HF path reports it properly
        return None
    path = getattr(source, "path", None)
    if source.kind not in ("local", "tiny") or path is None or not Path(path).is_dir():
        return None
    return Path(path) if any(Path(path).glob("*.safetensors")) else None


def stream_blockers(base: str, adapters: list[AdapterInfo]) -> list[str]:
    """Why the streaming merge cannot produce exactly the HF merge's tensors; empty when it can."""
    base_dir = local_base_dir(base)
    if base_dir is None:
        return [f"the base '{base}' is not a local safetensors checkpoint"]
    try:
        ckpt = read_checkpoint(base_dir)
    except Exception as exc:  # noqa: BLE001 — the HF path raises the proper error for a bad base
        return [f"the base cannot be read tensor by tensor ({str(exc).splitlines()[0][:120]})"]
    reasons = []
    for info in adapters:
        cfg = info.config
        where = info.directory.name
        if info.use_dora:
            reasons.append(f"{where} is a DoRA adapter (its magnitude vectors need the whole weight norm)")
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            reasons.append(f"{where} has per-module rank or alpha patterns")
        if cfg.get("lora_bias") or cfg.get("fan_in_fan_out"):
            reasons.append(f"{where} uses LoRA biases or fan_in_fan_out")
        if info.embedding_lora:
            reasons.append(f"{where} puts LoRA on the embeddings ({', '.join(info.embedding_lora)})")
        try:
            targets = _adapter_targets(info)
        except ValueError as exc:
            reasons.append(f"{where}: {exc}")
            continue
        for target, (kind, _) in targets.items():
            if target not in ckpt.tensor_files:
                tied = target == "lm_head.weight" and ckpt.tied_embeddings
                reasons.append(
                    f"{where} trains {target} ({kind})"
                    + (", which the tied-embedding base does not store" if tied else ", absent in the base")
                )
    return reasons


def _adapter_targets(info: AdapterInfo) -> dict[str, tuple[str, Any]]:
    """{base weight name: (kind, detail)} for one adapter: 'lora' (A key, B key), 'full' key, 'rows' (key, ids)."""
    from safetensors import safe_open

    with safe_open(info.directory / "adapter_model.safetensors", framework="pt") as st:
        keys = list(st.keys())
    pairs: dict[str, dict[str, str]] = {}
    targets: dict[str, tuple[str, Any]] = {}
    tokens_cfg = info.trainable_token_indices
    for key in keys:
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        if m := _LORA.match(name):
            pairs.setdefault(f"{m.group(1)}.weight", {})[m.group(2)] = key
        elif m := _TOKENS.match(name):
            module = m.group(1).split(".")[-1]
            ids = tokens_cfg.get(module) if isinstance(tokens_cfg, dict) else tokens_cfg
            if module not in EMBEDDING_MODULES or not ids:
                raise ValueError(f"trained token rows of '{module}' without their indices")
            targets[f"{m.group(1)}.weight"] = ("rows", (key, list(ids)))
        elif name.endswith(".weight") and name.split(".")[-2] in (info.modules_to_save or []):
            targets[name] = ("full", key)
        else:
            raise ValueError(f"it stores '{key}', which is neither a LoRA pair nor a trained module")
    for target, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"the LoRA pair of {target} is incomplete")
        if target in targets:
            raise ValueError(f"{target} is trained twice (LoRA and {targets[target][0]})")
        targets[target] = ("lora", (pair["A"], pair["B"]))
    return targets


def lora_scaling(config: dict[str, Any]) -> float:
    """PEFT's scaling of a LoRA update: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    r = int(config.get("r", 8))
    alpha = float(config.get("lora_alpha", r))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


class StreamedMerge:
    """The merged model's tensors, computed one at a time on request (`names`, `shape`, `get`)."""

    def __init__(self, base: str, adapters: list[AdapterInfo], dtype: str = "auto"):
        from safetensors import safe_open

        base_dir = local_base_dir(base)
        if base_dir is None:
            raise ValueError(f"{base} is not a local safetensors checkpoint")
        self.ckpt = read_checkpoint(base_dir)
        self.names = list(self.ckpt.tensor_files)
        self.work_dtype = torch_dtype(dtype)  # the HF merge loads the base in this dtype
        self.save_dtype = _declared_dtype(str(base_dir)) or self.work_dtype  # and saves in this one
        self._base = {f: safe_open(f, framework="pt") for f in set(self.ckpt.tensor_files.values())}
        self._adapters = []
        for info in adapters:
            handle = safe_open(info.directory / "adapter_model.safetensors", framework="pt")
            self._adapters.append((handle, _adapter_targets(info), lora_scaling(info.config)))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._base[self.ckpt.tensor_files[name]].get_slice(name).get_shape())

    def get(self, name: str):
        """The merged tensor `name`, in the dtype the HF merge would have saved it in."""
        import torch

        w = self._base[self.ckpt.tensor_files[name]].get_tensor(name).to(self.work_dtype)
        for handle, targets, scaling in self._adapters:  # in order: stage 1's result is stage 2's base
            kind, detail = targets.get(name, (None, None))
            if kind == "lora":
                a = handle.get_tensor(detail[0]).float()
                b = handle.get_tensor(detail[1]).float()
                w = (w.float() + (b @ a) * scaling).to(self.work_dtype)
            elif kind == "full":
                w = handle.get_tensor(detail).to(self.work_dtype)
            elif kind == "rows":
                key, ids = detail
                rows = handle.get_tensor(key).to(self.work_dtype)
                w = w.index_copy(0, torch.tensor(ids, dtype=torch.long), rows)
        return w.to(self.save_dtype)

    def close(self) -> None:
        self._base.clear()
        self._adapters.clear()

    def __enter__(self) -> StreamedMerge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_model_files(base: str, tokenizer_source: str, chat: bool, out_dir: Path) -> Path:
    """config.json, generation_config.json and the tokenizer the merged model would have: no weights.

    The same files and stop ids as models/merge.py writes beside the merged safetensors, so the GGUF
    metadata (tokenizer, eos/eot ids, ChatML template) is identical on both paths.
    """
    from transformers import GenerationConfig

    base_dir = local_base_dir(base)
    assert base_dir is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    try:
        gen = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        gen = GenerationConfig()
    tokenizer = load_tokenizer(tokenizer_source)
    vocab = tokenizer.get_vocab()
    if IM_START in vocab and IM_END in vocab:
        tokenizer.chat_template = CHATML_TEMPLATE
    holder = SimpleNamespace(generation_config=gen, config=SimpleNamespace(eos_token_id=None))
    _set_stop_tokens(holder, vocab, chat)
    if holder.config.eos_token_id is not None:
        config["eos_token_id"] = holder.config.eos_token_id
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    gen.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
