"""What a stage loads and saves around training: the training tokenizer and the finished adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_dir
from bbjtune.errors import BbjtuneError
from bbjtune.models import load_tokenizer
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, install_training_template


def load_training_tokenizer(source: str):
    """The source's tokenizer with the ChatML template that carries the loss markers."""
    tokenizer = load_tokenizer(source)
    try:
        install_training_template(tokenizer)
    except ValueError:
        raise BbjtuneError(
            f"the tokenizer of {source} does not use Qwen's ChatML format",
            "bbjtune trains Qwen2.5(-Coder) models; pick one as model.source",
        ) from None
    return tokenizer


def save_adapter(trainer: Any, tokenizer: Any, adapter_dir: Path, chat_model: bool) -> None:
    """Adapter, tokenizer and generation config, written beside the target then swapped in."""
    with atomic_dir(adapter_dir) as tmp:
        trainer.model.save_pretrained(tmp)
        generation = _generation_config(trainer.model, tokenizer, chat_model)
        if chat_model:  # like Qwen's Instruct models: a turn ends with <|im_end|>
            tokenizer.eos_token = IM_END
        tokenizer.save_pretrained(tmp)
        generation.save_pretrained(tmp)


def _generation_config(model: Any, tokenizer: Any, chat_model: bool):
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None) or GenerationConfig()
    config = GenerationConfig.from_dict(base.to_dict())
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), endoftext] if chat_model else endoftext
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else endoftext
    return config
