"""The LoRA setup both recipes use: which modules train, which token rows, peft's config."""

from __future__ import annotations

import copy
from typing import Any

from bbjtune.config import RunConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import IM_END, IM_START


def wants_chat_token_training(cfg: RunConfig) -> bool:
    """Train the `<|im_start|>`/`<|im_end|>` rows in stage 2: asked for, or `auto` on a Base model (untrained there)."""
    choice = cfg.train.sft.train_chat_tokens
    return choice == "yes" or (choice == "auto" and cfg.model.kind == "base")


def chat_token_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (IM_START, IM_END)]
    if None in ids or tokenizer.unk_token_id in ids:
        raise BbjtuneError(
            "the tokenizer has no <|im_start|>/<|im_end|> tokens", "bbjtune trains Qwen ChatML models"
        )
    return ids


def lora_settings(
    cfg: RunConfig,
    model_config: Any,
    *,
    modules_to_save: list[str] | None = None,
    trainable_tokens: list[int] | None = None,
) -> dict[str, Any]:
    """The LoRA configuration as plain keywords (peft's LoraConfig and Unsloth's get_peft_model take them).

    `trainable_tokens` trains just those rows of the embedding (and of lm_head when it is not tied
    to the embedding): the cheap way to teach a Base model `<|im_start|>`/`<|im_end|>`. Such an
    adapter must be merged before serving (vLLM and GGUF LoRA cannot load it); export does that.
    """
    lora = cfg.train.lora
    settings: dict[str, Any] = {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "use_rslora": lora.use_rslora,
        "use_dora": lora.use_dora,
        "bias": "none",
        "modules_to_save": modules_to_save or None,
        "trainable_token_indices": None,
    }
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    if trainable_tokens:
        settings["trainable_token_indices"] = (
            {"embed_tokens": trainable_tokens}
            if tied
            else {"embed_tokens": trainable_tokens, "lm_head": trainable_tokens}
        )
    if modules_to_save and tied:
        settings["modules_to_save"] = [m for m in modules_to_save if m != "lm_head"]
        settings["ensure_weight_tying"] = True
    return settings


def peft_config(settings: dict[str, Any]):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **copy.deepcopy(settings))  # peft extends the lists it is given
