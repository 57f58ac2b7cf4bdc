"""vLLM serving: the launch command for the base model with the BBj adapter as a per-request LoRA.

vLLM loads LoRA adapters next to one base model and picks one per request (`"model": "<name>"`).
It rejects adapters whose rank exceeds `--max-lora-rank` (which only takes certain values), DoRA
adapters, and adapters that carry full weights (`modules_to_save`, trained embedding rows).
The adapter is checked here first; when vLLM cannot take it, the command serves the merged model
instead (same quality, one model per server) and the reason is stated.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.export.adapter import AdapterInfo
from bbjtune.models.loading import resolve_source

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values --max-lora-rank accepts


@dataclass
class VllmPlan:
    served_name: str
    base_model: str | None
    adapter: Path | None
    rank: int | None
    max_lora_rank: int | None
    max_loras: int
    max_model_len: int
    merged_dir: Path | None
    blockers: list[str] = field(default_factory=list)

    @property
    def lora_ok(self) -> bool:
        return self.adapter is not None and not self.blockers

    def lora_command(self) -> list[str]:
        return [
            "vllm",
            "serve",
            str(self.base_model),
            "--enable-lora",
            "--lora-modules",
            f"{self.served_name}={self.adapter}",
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--max-loras",
            str(self.max_loras),
            "--max-model-len",
            str(self.max_model_len),
        ]

    def merged_command(self) -> list[str] | None:
        if self.merged_dir is None:
            return None
        return [
            "vllm",
            "serve",
            str(self.merged_dir),
            "--served-model-name",
            self.served_name,
            "--max-model-len",
            str(self.max_model_len),
        ]

    def command(self) -> list[str] | None:
        return self.lora_command() if self.lora_ok else self.merged_command()

    def to_json(self) -> dict[str, Any]:
        cmd = self.command()
        return {
            "served_model_name": self.served_name,
            "mode": "lora" if self.lora_ok else "merged",
            "base_model": self.base_model,
            "lora": {"name": self.served_name, "path": str(self.adapter), "rank": self.rank}
            if self.lora_ok
            else None,
            "lora_blockers": self.blockers,
            "args": {
                "enable_lora": self.lora_ok,
                "max_lora_rank": self.max_lora_rank if self.lora_ok else None,
                "max_loras": self.max_loras if self.lora_ok else None,
                "max_model_len": self.max_model_len,
            },
            "command": shlex.join(cmd) if cmd else None,
            "merged_command": shlex.join(self.merged_command()) if self.merged_dir else None,
            "explanation": explain(self),  # what `bbjtune serve vllm` prints
            "request_example": (
                "curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' "
                f'-d \'{{"model": "{self.served_name}", "messages": '
                '[{"role": "user", "content": "Write a BBj program that prints hello"}]}\''
            ),
        }


def max_lora_rank_for(rank: int) -> int | None:
    """The smallest --max-lora-rank value vLLM accepts that holds `rank` (None when none does)."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), None)


def servable_base(base: str | None) -> str | None:
    """What vLLM loads for a base model source: a `random:` architecture's built directory, else as given."""
    if base and base.startswith("random:"):
        return str(resolve_source(base).path)
    return base


def plan_vllm(
    info: AdapterInfo | None,
    base_model: str | None,
    *,
    served_name: str,
    max_loras: int,
    max_model_len: int,
    merged_dir: Path | None,
    chained: int = 1,
) -> VllmPlan:
    """Check the adapter against what vLLM accepts and build the launch plan (`chained`: adapters in the plan)."""
    blockers = (
        list(info.serving_blockers()) if info else ["there is no adapter (nothing was trained with LoRA)"]
    )
    if chained > 1:
        blockers.append(
            "it sits on stage 1's adapter, whose merged model was released (train.cpt.keep_merged: false): "
            "vLLM serves one adapter on one base"
        )
    rank = info.rank if info else None
    max_rank = max_lora_rank_for(rank) if rank else None
    if rank and max_rank is None:
        blockers.append(f"its rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")
    if base_model and (base_model.lower().endswith(".gguf") or base_model.startswith("tiny:")):
        blockers.append(f"its base '{base_model}' is not a Hugging Face checkpoint vLLM can load with LoRA")
    return VllmPlan(
        served_name,
        base_model,
        info.directory.resolve() if info else None,
        rank,
        max_rank,
        max_loras,
        max_model_len,
        merged_dir.resolve() if merged_dir else None,
        blockers,
    )


def explain(plan: VllmPlan) -> str:
    """Human text: the command to run and, when LoRA serving is impossible, why and what instead."""
    lines = []
    if plan.lora_ok:
        lines.append(
            f"vLLM serves the base model with the BBj adapter as LoRA '{plan.served_name}' "
            f"(rank {plan.rank}, --max-lora-rank {plan.max_lora_rank}):"
        )
        lines.append("  " + shlex.join(plan.lora_command()))
    else:
        lines.append("vLLM cannot load this adapter as a LoRA because " + "; ".join(plan.blockers) + ".")
        merged = plan.merged_command()
        if merged:
            lines.append("Serve the merged model instead (the adapter is already folded into its weights):")
            lines.append("  " + shlex.join(merged))
        else:
            lines.append(
                "Run `bbjtune export` with export.merged: true to get a merged model vLLM can serve."
            )
    lines.append(
        f'Then ask it with "model": "{plan.served_name}" at http://127.0.0.1:8000/v1/chat/completions'
    )
    return "\n".join(lines)
