"""`bbjtune inspect`: what a model source is, without training anything."""

from __future__ import annotations

from typing import Any

from bbjtune.models.chat_template import ENDOFTEXT, IM_END, IM_START, has_generation_markers, render_chatml
from bbjtune.models.loading import load_model, load_tokenizer, resolve_source


def describe_model(spec: str) -> dict[str, Any]:
    source = resolve_source(spec)
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype="float32" if source.kind == "tiny" else "auto")
    cfg = model.config
    vocab = tokenizer.get_vocab()
    sample = [{"role": "user", "content": "hi"}]
    template = getattr(tokenizer, "chat_template", None)
    chatml = bool(template) and tokenizer.apply_chat_template(
        sample, tokenize=False, add_generation_prompt=True
    ) == render_chatml(sample, add_generation_prompt=True)
    return {
        "source": f"{source.kind}: {source.path or source.spec}",
        "architecture": ", ".join(getattr(cfg, "architectures", None) or [type(model).__name__]),
        "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
        "layers / hidden": f"{cfg.num_hidden_layers} / {cfg.hidden_size}",
        "heads / kv heads": f"{cfg.num_attention_heads} / {getattr(cfg, 'num_key_value_heads', '?')}",
        "vocab (model / tokenizer)": f"{cfg.vocab_size} / {len(tokenizer)}",
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "special tokens": ", ".join(f"{t}={vocab[t]}" for t in (ENDOFTEXT, IM_START, IM_END) if t in vocab),
        "eos (generation)": model.generation_config.eos_token_id,
        "chat template": ("Qwen ChatML" if chatml else "other" if template else "none")
        + (" with loss markers" if has_generation_markers(template) else ""),
    }
