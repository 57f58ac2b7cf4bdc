"""Shared builders for the export tests: LoRA adapters on the tiny model, trained runs, wider models.

The adapters are real PEFT adapters with random non-zero B matrices, so merging changes the model
visibly; the trained run is written with the train stage's own `write_trained`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SYSTEM_PROMPT = "You are an expert BBj developer. Answer with working BBj code."


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    r: int = 8,
    alpha: int = 16,
    seed: int = 0,
    scale: float = 0.05,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: list[str] | None = None,
    trainable_token_indices: list[int] | None = None,
    target_modules="all-linear",
) -> Path:
    """A PEFT LoRA adapter on `base_dir` whose B matrices are random (so it changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from bbjtune.models import load_model

    model = load_model(str(base_dir), dtype="float32")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=target_modules,
        use_dora=use_dora,
        use_rslora=use_rslora,
        modules_to_save=modules_to_save,
        trainable_token_indices=trainable_token_indices,
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    peft_model.save_pretrained(out_dir)
    return out_dir


def make_trained_run(
    run_dir: Path,
    base: str,
    adapter: Path | None,
    tokenizer_dir: Path,
    stages: tuple[str, ...] = ("sft",),
    system_prompt: str | None = SYSTEM_PROMPT,
) -> Path:
    """trained.json for `adapter` on `base`, written by the train stage's own writer."""
    from bbjtune.models.trained import write_trained

    lora = {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "use_dora": False,
        "use_rslora": False,
        "target_modules": "all-linear",
    }
    if adapter is not None:
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        lora.update(
            r=cfg["r"],
            lora_alpha=cfg["lora_alpha"],
            use_dora=cfg.get("use_dora", False),
            use_rslora=cfg.get("use_rslora", False),
            modules_to_save=cfg.get("modules_to_save"),
            trainable_token_indices=cfg.get("trainable_token_indices"),
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_trained(
        run_dir,
        base_model=base,
        original_model=base,
        adapter=adapter,
        tokenizer=tokenizer_dir,
        stages=list(stages),
        lora=lora,
        max_length=512,
        system_prompt=system_prompt,
    )


def make_wide_model(tiny_dir: Path, out_dir: Path, hidden: int = 256, seed: int = 0) -> Path:
    """A Qwen2 model 256 wide (the k-quant block size), so q4_k_m really stores Q4_K blocks."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if (out_dir / "config.json").exists():
        return out_dir
    base = json.loads((tiny_dir / "config.json").read_text())
    config = Qwen2Config(
        vocab_size=base["vocab_size"],
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
        with torch.no_grad():  # a wider spread than the default init, so top-1 choices are not near-ties
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.08)
    model.save_pretrained(out_dir)
    for f in tiny_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            shutil.copyfile(f, out_dir / f.name)
    return out_dir


def make_padded_vocab_model(tiny_dir: Path, out_dir: Path, extra_rows: int = 64) -> Path:
    """The tiny model with more embedding rows than tokenizer tokens (Qwen2.5: 151,936 rows, 151,665 tokens)."""
    from bbjtune.models import load_model

    if (out_dir / "config.json").exists():
        return out_dir
    model = load_model(str(tiny_dir), dtype="float32")
    model.resize_token_embeddings(model.config.vocab_size + extra_rows, mean_resizing=False)
    model.save_pretrained(out_dir)
    for f in tiny_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            shutil.copyfile(f, out_dir / f.name)
    return out_dir
