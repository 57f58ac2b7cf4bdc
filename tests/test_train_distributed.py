"""Training in several processes (the `accelerate launch` / torchrun path) on CPU: DDP over gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from train_helpers import make_config, write_data


def write_config(tmp_path, model_dir, **overrides):
    write_data(tmp_path / "data", n_train=16)
    cfg = make_config(tmp_path, model_dir, **overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def bbjtune(*args, env=None, launcher=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run([sys.executable, *launcher, "-m", "bbjtune", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_both_stages_train_in_two_processes(tmp_path, tiny_model_dir):
    cfg, path = write_config(tmp_path, tiny_model_dir, train__stages="all")
    proc = bbjtune("train", str(path), launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("cpt", "sft"):
        metrics = json.loads((cfg.train_dir / stage / "manifest.json").read_text())["metrics"]
        assert metrics["processes"] == 2 and metrics["distributed"] == "MULTI_CPU"
        assert metrics["steps"] >= 1 and metrics["final_loss"] == metrics["final_loss"]  # trained, not NaN
        assert (cfg.train_dir / stage / "adapter" / "adapter_config.json").exists()
    assert (cfg.train_dir / "cpt" / "merged" / "config.json").exists()  # merged once, by the main process
    handle = json.loads((cfg.train_dir / "trained.json").read_text())
    assert handle["stages"] == ["cpt", "sft"]
    assert proc.stderr.count("✓ sft:") == 1  # one report, not one per process
    assert "on 2 processes (MULTI_CPU)" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_fsdp_without_gpus_says_what_to_do(tmp_path, tiny_model_dir):
    _, path = write_config(tmp_path, tiny_model_dir)
    proc = bbjtune("train", str(path), env={"ACCELERATE_USE_FSDP": "true"})
    assert proc.returncode != 0
    assert "FSDP training needs CUDA GPUs" in proc.stderr and "torchrun" in proc.stderr
    assert "Traceback" not in proc.stderr
