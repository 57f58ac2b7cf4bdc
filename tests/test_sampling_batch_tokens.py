"""`sampling.batch_tokens: auto`: self-training's sampling batches sized to the GPU's free memory."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bbjtune.config import SelfSampleConfig
from bbjtune.models.architecture import QWEN25
from bbjtune.models.generate import (
    AUTO_BYTES_PER_KV_BYTE,
    AUTO_CPU_BATCH_TOKENS,
    TransformersBackend,
    batch_tokens_for,
    kv_bytes_per_token,
)

GIB = 1024**3
MEASURED = Path(__file__).parents[1] / "benchmarks/results/sample_speed-2026-12-06-h200.json"


def config(size: str) -> SimpleNamespace:
    return SimpleNamespace(**QWEN25[size].config_fields())


def test_kv_bytes_per_token_of_the_qwen_shapes():
    # 2 (K and V) x layers x kv heads x head dim x 2 bytes
    assert kv_bytes_per_token(config("0.5b")) == 2 * 24 * 2 * 64 * 2 == 12_288
    assert kv_bytes_per_token(config("7b")) == 2 * 28 * 4 * 128 * 2
    assert kv_bytes_per_token(config("14b")) == 2 * 48 * 8 * 128 * 2
    assert kv_bytes_per_token(config("0.5b"), dtype_bytes=4) == 24_576


def test_the_memory_factor_matches_the_gpu_measurement():
    run = json.loads(MEASURED.read_text())
    new_k = run["variants"]["new-k"]
    weights_gib = run["parameters"] * 2 / GIB  # bf16
    rows_tokens = new_k["answers"] * (run["max_new_tokens"] + 105)  # 105: the benchmark prompts' mean length
    measured_factor = (
        (new_k["peak_gib"] - weights_gib) * GIB / rows_tokens / kv_bytes_per_token(config("0.5b"))
    )
    assert abs(measured_factor - AUTO_BYTES_PER_KV_BYTE) / measured_factor < 0.1


def test_budgets_follow_free_memory_and_model_size():
    on_h100 = batch_tokens_for(config("0.5b"), 78 * GIB)
    # the predicted use stays within half of what is free
    assert on_h100 * AUTO_BYTES_PER_KV_BYTE * kv_bytes_per_token(config("0.5b")) <= 0.5 * 78 * GIB
    assert on_h100 > 700_000  # the 0.5B ran at 1,048,576 on an H200 (139 GiB) in 24 GiB
    assert on_h100 % 4096 == 0
    assert batch_tokens_for(config("0.5b"), 139 * GIB) > on_h100
    seven = batch_tokens_for(config("7b"), 60 * GIB)
    fourteen = batch_tokens_for(config("14b"), 50 * GIB)
    assert on_h100 > seven > fourteen >= 4096
    assert batch_tokens_for(config("32b"), GIB // 4) == 4096  # never below one small batch


def test_auto_is_the_default_and_a_cpu_gets_a_fixed_budget(tiny_model_dir):
    assert SelfSampleConfig().batch_tokens == "auto"
    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_tokens="auto")
    assert backend.batch_tokens == AUTO_CPU_BATCH_TOKENS
    assert backend.describe()["batch_tokens"] == AUTO_CPU_BATCH_TOKENS
    assert (
        TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_tokens=2048).batch_tokens == 2048
    )


@pytest.mark.parametrize("value", [0, -5, "big"])
def test_bad_budgets_are_refused(value):
    with pytest.raises(ValueError):
        SelfSampleConfig(batch_tokens=value)
