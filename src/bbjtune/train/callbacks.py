"""What a training run shows and records while it runs, and how it stops cleanly.

- `MetricsLog` appends one JSON line per log step to `metrics.jsonl` (stage, step, epoch, loss,
  eval_loss, learning_rate, ...), the file the reports and tests read.
- `RichProgress` draws a progress bar on stderr and prints each logged step above it.
- `GracefulStop` turns SIGTERM (a scheduler's preemption, `kill`) and a first Ctrl-C into "save a
  checkpoint after this optimizer step, then stop"; `--resume` continues from there.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from bbjtune.artifacts import atomic_write_jsonl, read_complete_jsonl
from bbjtune.progress import new_progress


class MetricsLog(TrainerCallback):
    """One JSON object per log step in `path`; lines of this stage (and round) past `resume_step` are
    dropped first. Self-training rounds carry `round`, so round 2 starting over keeps round 1's lines."""

    def __init__(
        self, path: Path, stage: str, resume_step: int | None, is_main: bool = True, round: int | None = None
    ):
        self.path, self.stage, self.round, self.is_main = path, stage, round, is_main
        self.last: dict[str, Any] = {}
        if is_main:
            keep_rows = [
                r
                for r in read_complete_jsonl(path)
                if r.get("stage") != stage
                or r.get("round") != round
                or (resume_step is not None and r.get("step", 0) <= resume_step)
            ]
            atomic_write_jsonl(path, keep_rows)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.is_main or not logs:
            return
        row: dict[str, Any] = {
            "stage": self.stage,
            **({"round": self.round} if self.round is not None else {}),
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time": round(time.time(), 3),
        }
        for key, value in logs.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                row[key] = value
        self.last.update(row)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class RichProgress(TrainerCallback):
    """A rich progress bar for one stage; each logged step is printed above it."""

    def __init__(self, stage: str, console=None, is_main: bool = True):
        self.stage, self.is_main = stage, is_main
        self.console = console
        self.progress = None
        self.task = None
        self.last_loss: float | None = None
        self.last_eval: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.is_main:
            return
        self.progress = new_progress(self.console, unit="steps", eta=True, status=True, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(
            self.stage, total=state.max_steps, completed=state.global_step, status=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        self.last_loss = logs.get("loss", self.last_loss)
        self.last_eval = logs.get("eval_loss", self.last_eval)
        parts = [
            f"loss {self.last_loss:.4f}" if self.last_loss is not None else "",
            f"eval loss {self.last_eval:.4f}" if self.last_eval is not None else "",
        ]
        self.progress.update(self.task, status="  ".join(p for p in parts if p))
        shown = {
            k: logs[k]
            for k in (
                "loss",
                "eval_loss",
                "learning_rate",
                "grad_norm",
                "mean_token_accuracy",
                "eval_mean_token_accuracy",
            )
            if k in logs
        }
        if shown:
            text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
            self.progress.console.print(
                f"[dim]{self.stage} step {state.global_step}/{state.max_steps}[/]  {text}", highlight=False
            )

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class GracefulStop(TrainerCallback):
    """On SIGTERM or a first Ctrl-C: finish the current optimizer step, save a checkpoint, stop.

    Under `accelerate launch` every process must stop at the same step, so the request is shared
    across processes (one tiny all-reduce per step) before acting on it.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, console=None):
        self.requested = False
        self.stopped_at: int | None = None
        self.console = console
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.requested = True
        if self.console is not None:
            self.console.print(
                "[yellow]stop requested[/] — saving a checkpoint after this step "
                "(Ctrl-C again to stop at once)"
            )

    def _anyone_requested(self) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        import torch

        device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone_requested() and state.global_step < state.max_steps:
            self.requested = True
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopped inside an epoch: the checkpoint is written; an extra end-of-epoch evaluation would
        # consume random numbers and a second save would record them, so a resumed run would differ.
        mid_epoch = abs((state.epoch or 0.0) - round(state.epoch or 0.0)) > 1e-6
        if self.stopped_at is not None and mid_epoch:
            control.should_save = False
            control.should_evaluate = False
