"""`trained.json`: the handle evaluation and export use to find what training produced.

    {"base_model": "<the 16-bit model the final adapter sits on: .../cpt/merged or model.source>",
     "original_model": "<model.source>", "adapter": "<final adapter dir or null>",
     "tokenizer": "<dir>", "stages": ["cpt", "sft"], "lora": {...}, "modules_to_save": [...],
     "trainable_token_indices": [...] or null, "max_length": n, "system_prompt": "..." or null}

Paths are absolute when written; `read_trained` also finds them after the run directory has been
moved or copied (it falls back to the same relative place under the directory of trained.json).
`load_trained` returns the model with its adapter applied, and the tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_json
from bbjtune.errors import BbjtuneError
from bbjtune.models.merge import apply_adapter
from bbjtune.models import load_model, load_tokenizer

TRAINED_NAME = "trained.json"


@dataclass(frozen=True)
class Trained:
    """trained.json with its paths resolved."""

    path: Path
    base_model: str
    original_model: str
    adapter: Path | None
    tokenizer: Path
    stages: list[str]
    raw: dict[str, Any]
    stage1_adapter: Path | None = None  # set when stage 1's merged model was released: merge it first

    @property
    def needs_merge(self) -> bool:
        """True when the adapter trains whole modules or token rows, or sits on stage 1's adapter (not
        servable by vLLM / GGUF LoRA as-is)."""
        return (
            bool(self.raw.get("modules_to_save"))
            or bool(self.raw.get("trainable_token_indices"))
            or self.stage1_adapter is not None
        )

    @property
    def adapters(self) -> list[Path]:
        """The adapters to fold into `base_model`, in order."""
        return [a for a in (self.stage1_adapter, self.adapter) if a is not None]


def write_trained(
    train_dir: Path,
    *,
    base_model: str,
    original_model: str,
    adapter: Path | None,
    tokenizer: Path,
    stages: list[str],
    lora: dict[str, Any],
    max_length: int,
    system_prompt: str | None,
) -> Path:
    """Write the handle; paths inside the run directory are also recorded relative to it."""
    train_dir = Path(train_dir)

    def absolute(p: str | Path | None) -> str | None:
        if p is None:
            return None
        path = Path(p)
        return str(path.resolve()) if path.exists() else str(p)

    tokens = lora.get("trainable_token_indices")
    token_ids = sorted({i for ids in tokens.values() for i in ids}) if isinstance(tokens, dict) else tokens
    record = {
        "base_model": absolute(base_model),
        "original_model": original_model,
        "adapter": absolute(adapter),
        "tokenizer": absolute(tokenizer),
        "stages": stages,
        "lora": {
            "r": lora["r"],
            "alpha": lora["lora_alpha"],
            "dropout": lora["lora_dropout"],
            "use_dora": lora["use_dora"],
            "use_rslora": lora["use_rslora"],
            "target_modules": lora["target_modules"],
        },
        "modules_to_save": list(lora.get("modules_to_save") or []),
        "trainable_token_indices": token_ids,
        "max_length": max_length,
        "system_prompt": system_prompt,
        "relative": {
            key: _relative(value, train_dir)
            for key, value in (("base_model", base_model), ("adapter", adapter), ("tokenizer", tokenizer))
        },
    }
    return atomic_write_json(train_dir / TRAINED_NAME, record)


def release_stage1_base(train_dir: Path, original_model: str, stage1_adapter: Path) -> Path:
    """Point trained.json at the original model plus stage 1's adapter instead of stage 1's merged model."""
    handle = Path(train_dir) / TRAINED_NAME
    raw = json.loads(handle.read_text(encoding="utf-8"))
    raw["base_model"] = original_model
    raw["stage1_adapter"] = str(Path(stage1_adapter).resolve())
    rel = raw.setdefault("relative", {})
    rel["base_model"] = None
    rel["stage1_adapter"] = _relative(stage1_adapter, Path(train_dir))
    return atomic_write_json(handle, raw)


def _relative(path: str | Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return None


def read_trained(path: str | Path) -> Trained:
    """Read trained.json (or the run directory holding it) and resolve its paths."""
    path = Path(path)
    if path.is_dir():
        path = path / TRAINED_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BbjtuneError(
            f"{path} not found", "train first: bbjtune train CONFIG (or bbjtune run CONFIG)"
        ) from None
    except json.JSONDecodeError as exc:
        raise BbjtuneError(f"{path} is not valid JSON (line {exc.lineno})", "re-run bbjtune train") from None
    rel = raw.get("relative") or {}

    def locate(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if Path(value).exists() or not rel.get(key):
            return value
        moved = path.parent / rel[key]
        return str(moved) if moved.exists() else value

    adapter = locate("adapter")
    tokenizer = locate("tokenizer")
    stage1 = locate("stage1_adapter")
    for a in (adapter, stage1):
        if a is not None and not Path(a).exists():
            raise BbjtuneError(f"{path}: the adapter {a} does not exist", "re-run bbjtune train")
    return Trained(
        path=path,
        base_model=locate("base_model"),
        original_model=raw.get("original_model"),
        adapter=Path(adapter) if adapter else None,
        tokenizer=Path(tokenizer),
        stages=list(raw.get("stages", [])),
        raw=raw,
        stage1_adapter=Path(stage1) if stage1 else None,
    )


def load_trained(
    path: str | Path,
    dtype: str = "auto",
    device_map: Any = None,
    merge: bool = False,
    quantization: Any = None,
):
    """(model, tokenizer) of a training run, adapter applied (merged into the weights when `merge`).

    The tokenizer is the one saved with the adapter (ChatML template, `<|im_end|>` ends a turn);
    the model's generation config stops on `<|im_end|>` and `<|endoftext|>` after SFT.
    """
    from transformers import GenerationConfig

    trained = read_trained(path)
    model = load_model(trained.base_model, dtype=dtype, device_map=device_map, quantization=quantization)
    if trained.stage1_adapter is not None:  # stage 1's merged model was released: rebuild it in memory
        model = apply_adapter(model, trained.stage1_adapter, merge=True)
    if trained.adapter is not None:
        model = apply_adapter(model, trained.adapter, merge=merge)
        if (trained.adapter / "generation_config.json").exists():
            model.generation_config = GenerationConfig.from_pretrained(str(trained.adapter))
    model.eval()
    tokenizer = load_tokenizer(str(trained.tokenizer))
    return model, tokenizer
