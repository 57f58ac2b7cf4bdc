"""A run killed with SIGTERM and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO_ROOT, run_cli
from safetensors.torch import load_file
from train_helpers import make_config, write_data

pytestmark = pytest.mark.slow  # trains tiny models: `make test` runs it, `make test-fast` leaves it out


def write_config(tmp_path, model_dir, data_dir, name):
    cfg = make_config(
        tmp_path / name,
        model_dir,
        data_dir,
        train__sft__max_steps=24,
        train__logging_steps=1,
        train__lora__dropout=0.1,
        train__sft__per_device_batch_size=2,
        train__sft__warmup_ratio=0.1,
        train__sft__max_length=128,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def final_state(cfg):
    weights = load_file(str(cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors"))
    rows = [json.loads(line) for line in (cfg.train_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    return weights, losses


def test_sigterm_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    data_dir = write_data(tmp_path / "data", n_train=40)
    straight_cfg, straight_yaml = write_config(tmp_path, tiny_model_dir, data_dir, "straight")
    result = run_cli("train", str(straight_yaml))
    assert result.returncode == 0, result.stderr

    cfg, path = write_config(tmp_path, tiny_model_dir, data_dir, "stopped")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bbjtune", "train", str(path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = cfg.train_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(
            json.loads(line).get("step", 0) >= 5 for line in metrics.read_text().splitlines() if line.strip()
        ):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr  # stopped, not finished
    checkpoints = sorted((cfg.train_dir / "sft" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, stderr
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert 5 <= stopped_at < 24
    assert json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())["status"] == "interrupted"
    # the user is told that a checkpoint was saved, where, and how to go on
    assert f"sft stopped at step {stopped_at}; checkpoint saved in" in stderr, stderr
    assert "run the same command again to continue" in stderr
    assert not (cfg.train_dir / "trained.json").exists()

    resumed = run_cli("train", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"sft: resuming from step {stopped_at}" in resumed.stderr

    straight_weights, straight_losses = final_state(straight_cfg)
    weights, losses = final_state(cfg)
    assert sorted(losses) == list(range(1, 25))  # every step logged once, none twice
    for step in (stopped_at, stopped_at + 1, 24):
        assert abs(losses[step] - straight_losses[step]) < 1e-5, (step, losses[step], straight_losses[step])
    assert weights.keys() == straight_weights.keys()
    for key in weights:
        assert torch.allclose(weights[key], straight_weights[key], atol=1e-6), key


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_model_dir):
    data_dir = write_data(tmp_path / "data", n_train=4)
    _, path = write_config(tmp_path, tiny_model_dir, data_dir, "none")
    result = run_cli("train", str(path), "--resume")
    assert result.returncode == 2 and "no checkpoint to resume" in result.stderr
    assert "Traceback" not in result.stderr
