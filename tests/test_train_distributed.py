"""Training in several processes (the `accelerate launch` / torchrun path) on CPU: DDP over gloo."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from train_helpers import make_config, write_data

pytestmark = pytest.mark.slow  # trains tiny models: `make test` runs it, `make test-fast` leaves it out


def write_config(tmp_path, model_dir, **overrides):
    write_data(tmp_path / "data", n_train=16)
    cfg = make_config(tmp_path, model_dir, **overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def bbjtune(*args, env=None, launcher=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run(
        [sys.executable, *launcher, "-m", "bbjtune", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_both_stages_train_in_two_processes(tmp_path, tiny_model_dir):
    cfg, path = write_config(tmp_path, tiny_model_dir, train__stages="all")
    proc = bbjtune(
        "train", str(path), launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    )
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
    sft_metrics = json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())["metrics"]
    assert "several processes" in sft_metrics["stop_check"]["skipped"]  # said, not silently dropped
    assert "stop check skipped" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_fsdp_without_gpus_says_what_to_do(tmp_path, tiny_model_dir):
    _, path = write_config(tmp_path, tiny_model_dir, train__sft__train_chat_tokens="no")
    proc = bbjtune("train", str(path), env={"ACCELERATE_USE_FSDP": "true"})
    assert proc.returncode != 0
    assert "FSDP training needs CUDA GPUs" in proc.stderr and "torchrun" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("dry_run", [False, True])
def test_zero3_refuses_chat_token_training_before_it_starts(tmp_path, tiny_model_dir, dry_run):
    cfg, path = write_config(
        tmp_path, tiny_model_dir, train__stages="all"
    )  # a Base model: stage 2 trains chat tokens
    proc = bbjtune(
        "train",
        str(path),
        *(["--dry-run"] if dry_run else []),
        env={"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
    )
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert proc.returncode != 0
    assert "ZeRO-3 cannot train the chat-token rows" in message and "fsdp_qlora.yaml" in message
    assert "Traceback" not in proc.stderr and not (cfg.train_dir / "cpt").exists()  # nothing trained


@pytest.mark.parametrize("orig_params, stage", [("false", "sft"), ("true", "all")])
def test_fsdp_says_how_to_train_chat_tokens(tmp_path, tiny_model_dir, orig_params, stage):
    cfg, path = write_config(tmp_path, tiny_model_dir, train__stages="all")
    proc = bbjtune(
        "train",
        str(path),
        "--stage",
        stage,
        env={"ACCELERATE_USE_FSDP": "true", "FSDP_USE_ORIG_PARAMS": orig_params},
    )
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert proc.returncode != 0 and "Traceback" not in message
    assert "needs fsdp_use_orig_params true and a launch of its own" in message
    assert "--fsdp_use_orig_params true -m bbjtune train CONFIG --stage sft" in message
    assert not (cfg.train_dir / "cpt").exists()


ACCELERATE_CONFIGS = REPO_ROOT / "configs" / "accelerate"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA GPUs")
@pytest.mark.parametrize("launch", ["fsdp_qlora", "deepspeed_zero2", "deepspeed_zero3"])
def test_sharded_qlora_trains_both_stages_on_the_gpus(tmp_path, tiny_model_dir, launch):
    """The shipped FSDP and DeepSpeed configs, QLoRA with the default optimizer, on every visible GPU.

    Stage 2 trains the chat-token rows of the Base model, except under ZeRO-3, which refuses them; FSDP
    trains the stages in two launches, the second with fsdp_use_orig_params true.
    """
    if launch.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    gpus = torch.cuda.device_count()
    cfg, path = write_config(
        tmp_path,
        tiny_model_dir,
        train__stages="all",
        model__dtype="bfloat16",
        train__quantization__load_in_4bit=True,
        train__optim="paged_adamw_8bit",
        train__gradient_checkpointing=True,
        train__sft__train_chat_tokens="no" if launch == "deepspeed_zero3" else "auto",
    )
    launcher = (
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / f"{launch}.yaml"),
        "--num_processes",
        str(gpus),
        "--main_process_port",
        "29517",
    )
    env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(gpus)))}
    if launch == "fsdp_qlora":  # two launches, as bbjtune asks for under FSDP (see the config's comments)
        proc = bbjtune("train", str(path), "--stage", "cpt", launcher=launcher, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        launcher = (*launcher, "--fsdp_use_orig_params", "true")
        proc = bbjtune("train", str(path), "--stage", "sft", launcher=launcher, env=env)
    else:
        proc = bbjtune("train", str(path), launcher=launcher, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = "FSDP" if launch.startswith("fsdp") else "DEEPSPEED"
    for stage in ("cpt", "sft"):
        metrics = json.loads((cfg.train_dir / stage / "manifest.json").read_text())["metrics"]
        assert metrics["processes"] == gpus and metrics["distributed"] == expected
        assert metrics["steps"] >= 1 and metrics["final_loss"] == metrics["final_loss"]  # trained, not NaN
        assert (cfg.train_dir / stage / "adapter" / "adapter_config.json").exists()
    assert json.loads((cfg.train_dir / "trained.json").read_text())["stages"] == ["cpt", "sft"]
