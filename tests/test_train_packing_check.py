"""tests/packing_check.py: packed examples, as the trainer batches them, against each example alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
import packing_check
from conftest import REPO_ROOT


def run_check(tmp_path, *args):
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "tests/packing_check.py", "--json", str(out), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.slow  # trains nothing, but builds the trainer and runs the tiny model on every example
def test_hf_backend_keeps_packed_examples_apart():
    result = packing_check.measure(dtype="float32")  # in-process: no second interpreter to start
    assert result["packed"], result["keys"]
    later = [e for e in result["examples"] if e["example"] > 0]
    assert len(later) >= 2  # rows really hold several examples
    assert result["worst"] < 1e-4  # each packed example computes what it computes alone
    assert result["control_min"] > 0.05  # and the check would have seen contamination


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hf_backend_keeps_packed_examples_apart_on_the_gpu(tmp_path):
    proc, result = run_check(tmp_path)  # bfloat16, SDPA on CUDA
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["dtype"] == "bfloat16" and result["control_min"] > 0.05


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None,
    reason="needs a CUDA GPU with Unsloth installed",
)
def test_unsloth_backend_keeps_packed_examples_apart(tmp_path):
    proc, result = run_check(tmp_path, "--backend", "unsloth")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["batch_shape"][0] == 1 and "packed_seq_lengths" in result["keys"]  # Unsloth's own batches


def test_unsloth_style_batches_give_their_example_boundaries():
    ids = torch.zeros(1, 9, dtype=torch.long)
    positions = packing_check.positions_from_lengths(torch.tensor([4, 2, 3]), ids)
    assert positions.tolist() == [[0, 1, 2, 3, 0, 1, 0, 1, 2]]
    assert packing_check.segments(positions[0].tolist()) == [(0, 4), (4, 6), (6, 9)]


def test_the_check_takes_the_first_batch_that_packs():
    alone = {"input_ids": torch.zeros(2, 4), "position_ids": torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])}
    packed = {"input_ids": torch.zeros(2, 4), "position_ids": torch.tensor([[0, 1, 2, 3], [0, 1, 0, 1]])}
    unsloth = {"input_ids": torch.zeros(1, 6), "packed_seq_lengths": torch.tensor([3, 3])}
    assert packing_check.packed_batch([alone, packed]) is packed
    assert packing_check.packed_batch([alone, unsloth]) is unsloth
    assert (
        packing_check.packed_batch([alone]) is alone
    )  # nothing packs: the first, which the check calls inconclusive
