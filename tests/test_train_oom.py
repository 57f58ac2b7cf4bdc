"""Running out of GPU memory in training is a clear error that says what to lower, never a traceback.

A CPU cannot run out of GPU memory, so the test raises torch's own OutOfMemoryError from inside a
real training run (a trainer callback at the first step), where a CUDA allocation would raise it.
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import build_trainer, make_config, write_data
from transformers import TrainerCallback

from bbjtune.errors import BbjtuneError
from bbjtune.train.trainer import train

pytestmark = pytest.mark.slow  # trains a tiny model


class RunsOutOfMemory(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 GiB total)")


def test_out_of_memory_names_the_step_the_estimate_and_what_to_lower(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data", n_train=4, n_heldout=0)
    cfg = make_config(tmp_path, tiny_model_dir, train__sft__max_steps=3, train__sft__per_device_batch_size=4)
    trainer, _, job = build_trainer(cfg, callbacks=[RunsOutOfMemory()])
    with pytest.raises(BbjtuneError) as caught:
        train(trainer, job, None)
    err = caught.value
    assert err.message.startswith("sft: the GPU ran out of memory at step 1 (CUDA out of memory. Tried")
    assert "the dry run estimates" in err.message and "GiB per GPU" in err.message
    # the batch halves and accumulation doubles, so the effective batch stays what it was
    accumulation = cfg.train.sft.gradient_accumulation_steps
    assert (
        f"train.sft.per_device_batch_size: 2 (now 4) and train.sft.gradient_accumulation_steps: {accumulation * 2}"
        in err.hint
    )
    assert "train.sft.max_length" in err.hint and "--dry-run" in err.hint and "resumes" in err.hint
    # settings already on are not suggested
    assert ("gradient_checkpointing" in err.hint) != cfg.train.gradient_checkpointing
