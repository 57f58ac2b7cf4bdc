"""QLoRA on CPU keeps training after an evaluation pass, on every x86-64 CPU (AVX-512 BF16 ones included)."""

from __future__ import annotations

import pytest
import torch

from bbjtune.config import QuantizationConfig
from bbjtune.models import load_model

bnb = pytest.importorskip(
    "bitsandbytes", reason="bitsandbytes is not installed (pip install 'bbjtune[qlora-cpu]')"
)


@pytest.fixture(scope="module")
def block_aligned_model(tmp_path_factory):
    """A random Qwen2 whose every weight row is a whole number of 64-value quantization blocks.

    Every Qwen2.5 size is shaped like this; it is the shape on which bitsandbytes' CPU inference
    rewrite succeeds and the next training step then fails (tiny:test's 160-wide rows fail earlier,
    in the rewrite itself: tests/test_train_cpt.py::test_qlora_on_cpu_with_bitsandbytes).
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    out = tmp_path_factory.mktemp("aligned")
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def _lora_model(path):
    from peft import LoraConfig, get_peft_model

    model = load_model(str(path), dtype="float32", quantization=QuantizationConfig())
    torch.manual_seed(1)  # init_lora_weights=False: both LoRA matrices random, so every one gets a gradient
    return get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )


def _gradients(model, ids):
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_training_after_an_evaluation_pass_matches_training_without_one(block_aligned_model):
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    fresh = _gradients(_lora_model(block_aligned_model), ids)

    evaluated = _lora_model(block_aligned_model)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in evaluated.modules())
    evaluated.eval()
    with torch.no_grad():  # what the trainer's evaluation pass and the stop check do
        evaluated(input_ids=ids)
    layers = [m for m in evaluated.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers), (
        "a 4-bit layer was rewritten into bitsandbytes' inference-only CPU layout"
    )
    after_eval = _gradients(evaluated, ids)

    assert fresh.keys() == after_eval.keys() and len(fresh) == 2 * 7 * 2  # A and B of 7 linears x 2 layers
    for name, grad in fresh.items():
        assert torch.equal(grad, after_eval[name]), name


@pytest.mark.slow  # ~40 CPU-seconds: the default batch is 8 x 4 sequences of up to 2048 tokens
def test_a_config_without_a_train_section_trains_qlora_on_cpu(tmp_path, tiny_model_dir):
    """QLoRA is the default: a config that names only the model and the data trains on CPU, no traceback."""
    from conftest import run_cli
    from train_helpers import write_data

    data = write_data(tmp_path / "data", n_train=8, n_heldout=2)
    config = tmp_path / "minimal.yaml"
    config.write_text(
        f"name: minimal\noutput_dir: {tmp_path / 'run'}\n"
        f"model:\n  source: {tiny_model_dir}\n  kind: instruct\n"
        f"data:\n  chatml: [unused.jsonl]\n  output_dir: {data}\n"
    )
    # one optimizer step (8 x 4 sequences) keeps it short; the evaluation passes before and after it remain
    proc = run_cli("train", str(config), "--set", "train.sft.max_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "QLoRA 4-bit" in " ".join(proc.stderr.split() + proc.stdout.split())
    assert list((tmp_path / "run").rglob("sft/adapter/adapter_model.safetensors"))
