"""benchmarks/check_packing.py: packed examples, as the trainer batches them, against each example alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT


def run_check(tmp_path, *args):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "benchmarks/check_packing.py", "--json", str(out), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text()) if out.exists() else None


def test_hf_backend_keeps_packed_examples_apart(tmp_path):
    proc, result = run_check(tmp_path, "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr[-2000:]
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
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None,
                    reason="needs a CUDA GPU with Unsloth installed")
def test_unsloth_backend_keeps_packed_examples_apart(tmp_path):
    proc, result = run_check(tmp_path, "--backend", "unsloth")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["batch_shape"][0] == 1 and "packed_seq_lengths" in result["keys"]  # Unsloth's own batches
