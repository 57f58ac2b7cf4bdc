"""Checkpoints of a stage: which one to resume from, and the fingerprint that makes it resumable.

Checkpoints (adapter, optimizer, scheduler, RNG states) are written to `<stage>/checkpoints/`
every `save_steps` (default: each epoch) and when the run is stopped with SIGTERM/Ctrl-C;
`--resume` continues from the newest one and ends with the same weights as a run that was never
interrupted (tests/test_train_resume.py compares them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bbjtune.artifacts import atomic_write_json
from bbjtune.errors import BbjtuneError
from bbjtune.train.job import StageJob, is_main_process, read_record, wait_for_everyone

FINGERPRINT_FILE = "fingerprint.json"


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.json was written and parses)."""
    if not directory.is_dir():
        return None
    candidates = []
    for d in directory.glob("checkpoint-*"):
        suffix = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and suffix.isdigit():
            try:
                json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            candidates.append((int(suffix), d))
    return max(candidates)[1] if candidates else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def decide_resume(job: StageJob) -> Path | None:
    """The checkpoint to resume from, or None to start fresh (old checkpoints are then removed)."""
    found = last_checkpoint(job.checkpoints_dir)
    recorded = read_record(job.checkpoints_dir / FINGERPRINT_FILE).get("fingerprint")
    matches = found is not None and recorded == job.fingerprint()
    if job.resume == "always":
        if found is None:
            raise BbjtuneError(
                f"--resume: no checkpoint to resume in {job.checkpoints_dir}",
                "run without --resume to start this stage",
            )
        if not matches:
            raise BbjtuneError(
                f"--resume: the checkpoint in {job.checkpoints_dir} was made with other settings or data",
                "resume with the settings it was made with, or add --restart to start over",
            )
        return found
    if job.resume == "auto" and matches:
        return found
    wait_for_everyone()  # every process has looked before the old checkpoints go
    if is_main_process() and job.checkpoints_dir.exists():
        shutil.rmtree(job.checkpoints_dir)
    wait_for_everyone()
    return None


def record_fingerprint(job: StageJob) -> None:
    if is_main_process():
        atomic_write_json(job.checkpoints_dir / FINGERPRINT_FILE, {"fingerprint": job.fingerprint()})
