"""One training stage's job (what it trains, where it writes) and the processes it runs in.

Under `accelerate launch` or `torchrun` every process runs the same code; only the main one
(RANK 0) writes manifests, adapters and reports, and the others wait for it at the barriers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.config import SAMPLING_EXECUTION, RunConfig, StageConfig
from bbjtune.train.resources import choose_checkpointing

STOP_HINT = "run the same command again to continue (it resumes from the checkpoint), or add --resume"


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on request after saving a checkpoint; the stage is incomplete."""


@dataclass
class StageJob:
    """One stage's run: what it trains, where it writes, how it was asked to start."""

    cfg: RunConfig
    stage: str  # "cpt", "sft", or a self-training stage ("rft", "dpo", "grpo")
    base_source: str  # the model the adapter is trained on
    backend: str  # "hf" or "unsloth" (resolved)
    console: Console
    data_fingerprint: str = ""
    resume: str = "auto"  # "auto" | "always" | "never"
    round: int | None = None  # the round of a self-training stage (selftrain.RoundJob); None otherwise

    @property
    def stage_cfg(self) -> StageConfig:
        return getattr(self.cfg.train, self.stage)

    @functools.cached_property
    def checkpointing(self) -> bool:
        """train.gradient_checkpointing for this stage, `auto` decided once (resources.choose_checkpointing)."""
        on, why = choose_checkpointing(self.cfg, self.stage, self.base_source)
        if self.cfg.train.gradient_checkpointing == "auto":
            self.console.print(f"gradient checkpointing {'on' if on else 'off'} ({why})")
        return on

    @property
    def out_dir(self) -> Path:
        return self.cfg.train_dir / self.stage

    @property
    def checkpoints_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir / "adapter"

    @property
    def metrics_path(self) -> Path:
        return self.cfg.train_dir / "metrics.jsonl"

    def _not_deciding(self) -> dict[str, Any]:
        """Settings that do not change what a stage or round trains: keep_merged (what stays on disk
        afterwards), sampling.rounds (a later round's business) and how samples are computed."""
        out: dict[str, Any] = {"keep_merged": True}
        if hasattr(self.stage_cfg, "sampling"):
            out["sampling"] = dict.fromkeys(("rounds", *SAMPLING_EXECUTION), True)
        return out

    def fingerprint(self) -> str:
        """Everything that decides this stage's result; a checkpoint is resumable only when it matches."""
        t = self.cfg.train
        settings = {
            "stage": self.stage,
            "base": self.base_source,
            "model": self.cfg.model.model_dump(mode="json"),
            "lora": t.lora.model_dump(mode="json"),
            "quantization": t.quantization.model_dump(mode="json"),
            "stage_cfg": self.stage_cfg.model_dump(mode="json", exclude=self._not_deciding()),
            "optim": t.optim,
            "seed": t.seed,
            "gradient_checkpointing": t.gradient_checkpointing,
            "backend": self.backend,
            "data": self.data_fingerprint,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record an earlier run wrote (manifest, fingerprint, round), or {} when missing or torn."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
