"""The README.md written next to each adapter: what it is, how it was made, how to use it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bbjtune.artifacts import atomic_write_text, library_versions

STAGE_NAMES = {
    "cpt": "stage 1: continued pretraining on raw BBj code",
    "sft": "stage 2: instruction tuning on BBj questions and answers in ChatML",
}


def write_model_card(
    path: Path,
    *,
    cfg: Any,
    stage: str,
    base_model: str,
    metrics: dict[str, Any],
    lora: dict[str, Any],
    inputs: list[dict[str, Any]],
    backend: str,
) -> Path:
    sc = getattr(cfg.train, stage)
    needs_merge = bool(lora.get("modules_to_save") or lora.get("trainable_token_indices"))
    lines = [
        f"# {cfg.name} — {stage.upper()} adapter for {cfg.model.source}",
        "",
        f"A LoRA adapter trained by bbjtune ({STAGE_NAMES[stage]}) on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, on top of `{base_model}`.",
        "",
        "## Use",
        "",
        "```python",
        "from bbjtune.models.trained import load_trained",
        f'model, tokenizer = load_trained("{cfg.train_dir}")   # base + this adapter, ChatML tokenizer',
        "```",
        "",
        "Serve it with `bbjtune export CONFIG` (merged safetensors, GGUF, Ollama Modelfile, vLLM config).",
    ]
    if needs_merge:
        lines += [
            "",
            "**Merge before serving**: this adapter also trains "
            + (
                "whole modules (" + ", ".join(lora.get("modules_to_save") or []) + ")"
                if lora.get("modules_to_save")
                else "the rows of <|im_start|>/<|im_end|> in the embeddings"
            )
            + "; vLLM and GGUF LoRA cannot load that part. `bbjtune export` merges it into the weights.",
        ]
    if stage == "sft":
        lines += ["", "Generation stops on `<|im_end|>` and `<|endoftext|>` (generation_config.json)."]

    lines += [
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| steps / epochs | {metrics.get('steps')} / {metrics.get('epochs')} |",
        f"| loss (first → last logged) | {_num(metrics.get('first_loss'))} → {_num(metrics.get('final_loss'))} |",
        f"| held-out loss (before → after) | {_num(metrics.get('first_eval_loss'))} → {_num(metrics.get('eval_loss'))} |",
        *(
            [
                f"| greedy answers ending with <\\|im_end\\|> | {metrics['stop_check']['stopped']} of "
                f"{metrics['stop_check']['of']} held-out requests |"
            ]
            if "of" in (metrics.get("stop_check") or {})
            else []
        ),
        f"| learning rate, schedule | {sc.learning_rate:g}, {sc.lr_scheduler}, warmup {sc.warmup_ratio:g} |",
        f"| batch | {sc.per_device_batch_size} per device x {sc.gradient_accumulation_steps} accumulation |",
        f"| max length, packing | {sc.max_length}, {'on' if sc.packing else 'off'} |",
        f"| precision | {cfg.model.dtype}{', QLoRA nf4' if cfg.train.quantization.load_in_4bit else ''} |",
        f"| backend | {backend} |",
        "",
        "## LoRA",
        "",
        "| | |",
        "|---|---|",
        f"| r / alpha / dropout | {lora['r']} / {lora['lora_alpha']} / {lora['lora_dropout']} |",
        f"| target modules | {lora['target_modules']} |",
        f"| rsLoRA / DoRA | {lora['use_rslora']} / {lora['use_dora']} |",
        f"| trained token rows | {_token_rows(lora.get('trainable_token_indices'))} |",
        f"| modules trained in full | {lora.get('modules_to_save') or 'none'} |",
        "",
        "## Data",
        "",
        "| file | lines | sha256 |",
        "|---|---|---|",
    ]
    for item in inputs:
        lines.append(f"| {Path(item['path']).name} | {_count_lines(item['path'])} | `{item['sha256']}` |")
    lines += [
        "",
        "## Configuration (train section)",
        "",
        "```yaml",
        yaml.safe_dump(cfg.train.model_dump(mode="json"), sort_keys=False).rstrip(),
        "```",
        "",
        "## Versions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in library_versions().items()]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _token_rows(indices: Any) -> str:
    if not indices:
        return "none"
    ids = sorted({i for v in indices.values() for i in v}) if isinstance(indices, dict) else indices
    where = " and ".join(indices) if isinstance(indices, dict) else "embed_tokens"
    return f"{', '.join(map(str, ids))} (<\\|im_start\\|>, <\\|im_end\\|>) in {where}"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _count_lines(path: str) -> int | str:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return "?"
