"""Training input checks, the memory estimate, the dry run and the command line (no training here)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT, run_cli
from rich.console import Console
from train_helpers import SYSTEM, make_config, write_data, write_jsonl

from bbjtune.errors import BbjtuneError
from bbjtune.train.inputs import load_training_data
from bbjtune.models.architecture import QWEN25, Architecture, known_architecture
from bbjtune.train.memory import estimate

# ----------------------------------------------------------------------------- data files


def test_bad_lines_name_file_and_line(tmp_path):
    data = write_data(tmp_path / "data", n_train=3)
    with open(data / "train.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"messages": [{"role": "user", "content": "hi"}]\n')
    with pytest.raises(BbjtuneError, match=r"train\.jsonl:4: not valid JSON"):
        load_training_data(data, ["sft"])

    write_jsonl(data / "train.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(BbjtuneError, match=r"train\.jsonl:1: the conversation has no assistant answer"):
        load_training_data(data, ["sft"])

    write_jsonl(data / "train.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(BbjtuneError, match=r"train\.jsonl:1: message 1 needs a role"):
        load_training_data(data, ["sft"])

    write_jsonl(data / "cpt.jsonl", [{"txt": "x"}])
    with pytest.raises(BbjtuneError, match=r"cpt\.jsonl:1: no \"text\" string"):
        load_training_data(data, ["cpt"])


def test_missing_data_points_to_the_data_stage(tmp_path):
    with pytest.raises(BbjtuneError) as err:
        load_training_data(tmp_path / "nowhere", ["sft"])
    assert "train.jsonl not found" in err.value.message and "bbjtune data prepare" in err.value.hint


def test_system_prompt_and_heldout_code(tmp_path):
    data = load_training_data(write_data(tmp_path / "data", n_train=5, n_heldout=3), ["cpt", "sft"])
    assert data.system_prompt == SYSTEM
    assert len(data.heldout_code()) == 3 and len(data.texts) == 12
    assert {p.name for p in data.files} == {"train.jsonl", "heldout.jsonl", "cpt.jsonl"}


# ----------------------------------------------------------------------------- memory estimate


def test_architectures_match_the_published_parameter_counts():
    # Qwen2.5-Coder model cards: 0.49B, 7.61B, 14.7B, 32.5B parameters
    assert abs(QWEN25["0.5b"].params / 1e9 - 0.49) < 0.01
    assert abs(QWEN25["7b"].params / 1e9 - 7.61) < 0.02
    assert abs(QWEN25["14b"].params / 1e9 - 14.7) < 0.1
    assert abs(QWEN25["32b"].params / 1e9 - 32.5) < 0.3
    assert known_architecture("Qwen/Qwen2.5-Coder-14B-Instruct") == QWEN25["14b"]
    assert known_architecture("my-model") is None


def test_tiny_estimate_counts_the_real_parameters(tiny_model_dir):
    from bbjtune.models import load_model

    config = json.loads((tiny_model_dir / "config.json").read_text())
    arch = Architecture.from_config(config)
    model = load_model(str(tiny_model_dir), dtype="float32")
    assert arch.params == sum(p.numel() for p in model.parameters())
    e = estimate(arch, batch=1, seq=16, quant_4bit=False, weight_bytes=4, lora_r=8)
    assert e.weights == arch.params * 4
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert e.trainable_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_estimate_moves_the_right_way():
    a = QWEN25["7b"]
    base = dict(batch=4, seq=2048, lora_r=32)
    lora = estimate(a, quant_4bit=False, **base)
    qlora = estimate(a, quant_4bit=True, **base)
    assert qlora.weights < lora.weights / 2.5  # nf4 + 16-bit embeddings
    assert (
        estimate(a, quant_4bit=True, gradient_checkpointing=False, **base).activations > 5 * qlora.activations
    )
    assert estimate(a, quant_4bit=True, fused_loss=False, **base).output_head > 5 * qlora.output_head
    assert estimate(a, quant_4bit=True, strategy="zero3", gpus=4, **base).total < qlora.total
    # plain HF+PEFT, 7B LoRA bf16, batch 4 x 2048, measured on one H200: 30.7 GiB (DESIGN.md)
    plain = estimate(a, quant_4bit=False, fused_loss=False, lora_dropout=0.0, **base).as_gib()["total"]
    assert abs(plain / 30.7 - 1) < 0.15


# ----------------------------------------------------------------------------- dry run


def test_dry_run_highlights_the_trained_tokens(tmp_path, tiny_model_dir):
    from bbjtune.train.dryrun import TRAINED_STYLE, render_tokens, tokenize_conversation
    from bbjtune.train.model_io import load_training_tokenizer

    tokenizer = load_training_tokenizer(str(tiny_model_dir))
    conv = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Print hi"},
        {"role": "assistant", "content": 'PRINT "hi"'},
    ]
    ids, mask = tokenize_conversation(tokenizer, conv)
    text = render_tokens(tokenizer, ids, mask)
    highlighted = "".join(text.plain[s.start : s.end] for s in text.spans if s.style == TRAINED_STYLE)
    assert highlighted == 'PRINT "hi"<|im_end|>'
    assert text.plain == tokenizer.decode(ids)


def test_dry_run_command(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data", n_train=6)
    cfg = make_config(tmp_path, tiny_model_dir, train__stages="all")
    path = tmp_path / "cfg.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = run_cli("train", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stderr
    assert out.count("example ") >= 3 and "tokens, " in out and "trained" in out
    assert "GPU memory per GPU" in out and "checkpointing on" in out and "zero3 on 4 GPUs" in out
    assert "stage 1 (CPT)" in out and "nothing was trained" in out
    assert not (cfg.train_dir / "trained.json").exists() and not (cfg.train_dir / "sft").exists()


def test_dry_run_says_what_lora_dropout_costs_on_unsloth(tmp_path, tiny_model_dir):
    import yaml

    write_data(tmp_path / "data", n_train=6)
    settings = make_config(
        tmp_path, tiny_model_dir, train__stages="sft", train__backend="unsloth"
    ).model_dump(mode="json")
    path = tmp_path / "cfg.yaml"
    # the hf backend has no fused kernels to lose
    for backend, dropout, said in (("unsloth", 0.05, True), ("unsloth", 0.0, False), ("hf", 0.05, False)):
        settings["train"]["backend"] = backend
        settings["train"]["lora"]["dropout"] = dropout
        path.write_text(yaml.safe_dump(settings))
        result = run_cli("train", str(path), "--dry-run")
        assert result.returncode == 0, result.stderr
        note = "without its fused kernels (slower); --set train.lora.dropout=0 keeps them"
        assert (note in result.stderr) is said, (backend, dropout)


def test_dry_run_estimates_a_hub_model_without_downloading(tmp_path, tiny_model_dir):
    """The memory estimate for a named Qwen2.5 model needs no config download."""
    from bbjtune.train.dryrun import _show_memory

    cfg = make_config(tmp_path, tiny_model_dir, train__stages="sft", train__quantization__load_in_4bit=True)
    cfg.model.source = "Qwen/Qwen2.5-Coder-32B"
    console = Console(record=True, width=200)
    _show_memory(cfg, ["sft"], None, console)
    text = console.export_text()
    assert "32.76B parameters" in text and "sft, checkpointing off" in text


def test_train_help_and_bad_flags():
    result = run_cli("train", "--help", cwd=REPO_ROOT)
    assert result.returncode == 0 and "--dry-run" in result.stdout and "--resume" in result.stdout
    result = run_cli("train", "quickstart", "--stage", "everything")
    assert result.returncode == 2 and "unknown stage" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- settings that reach the libraries


def test_lora_settings_follow_the_config(tmp_path, tiny_model_dir):
    from bbjtune.train.lora import lora_settings, peft_config

    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__lora__use_dora=True,
        train__lora__use_rslora=True,
        train__lora__r=4,
        train__lora__alpha=8,
        train__lora__target_modules=["q_proj", "v_proj"],
    )
    tied = lora_settings(cfg, SimpleNamespace(tie_word_embeddings=True), trainable_tokens=[7, 8])
    untied = lora_settings(cfg, SimpleNamespace(tie_word_embeddings=False), trainable_tokens=[7, 8])
    assert tied["trainable_token_indices"] == {"embed_tokens": [7, 8]}
    assert untied["trainable_token_indices"] == {"embed_tokens": [7, 8], "lm_head": [7, 8]}
    config = peft_config(untied)
    assert config.use_dora and config.use_rslora and config.r == 4 and config.lora_alpha == 8
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    full = lora_settings(
        cfg, SimpleNamespace(tie_word_embeddings=True), modules_to_save=["embed_tokens", "lm_head"]
    )
    assert full["modules_to_save"] == ["embed_tokens"] and full["ensure_weight_tying"]


def test_early_stopping_evaluates_and_saves_in_step(tmp_path, tiny_model_dir):
    from bbjtune.train.job import StageJob
    from bbjtune.train.trainer import training_arguments

    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__early_stopping_patience=2,
        train__eval_steps=5,
        train__sft__lr_scheduler="linear",
        train__sft__gradient_accumulation_steps=4,
        train__optim="adamw_torch",
    )
    job = StageJob(
        cfg=cfg, stage="sft", base_source=cfg.model.source, backend="hf", console=Console(quiet=True)
    )
    args = training_arguments(job, has_eval=True)
    assert (
        args.load_best_model_at_end
        and args.metric_for_best_model == "eval_loss"
        and not args.greater_is_better
    )
    assert args.eval_strategy == args.save_strategy == "steps" and args.eval_steps == args.save_steps == 5
    assert args.lr_scheduler_type == "linear" and args.gradient_accumulation_steps == 4
    assert training_arguments(job, has_eval=False).eval_strategy == "no"
