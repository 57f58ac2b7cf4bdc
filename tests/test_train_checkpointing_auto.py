"""`train.gradient_checkpointing: auto`: off where the dry run's estimate without it fits the GPU, else on."""

from __future__ import annotations

import pytest

from bbjtune.config import load_config
from bbjtune.errors import BbjtuneError
from bbjtune.train.memory import estimate_for_config
from bbjtune.train.resources import GPU_PLAN_SHARE, choose_checkpointing
from bbjtune.models.loading import find_architecture

GiB = 2**30


def preset(name: str, *overrides: str):
    return load_config(name, list(overrides))


def test_auto_is_the_default_and_the_presets_use_it():
    from bbjtune.config import TrainConfig

    assert TrainConfig().gradient_checkpointing == "auto"
    for size in ("7b", "14b", "32b"):
        for kind in ("base", "instruct"):
            assert preset(f"qwen2.5-coder-{size}-{kind}").train.gradient_checkpointing == "auto", (size, kind)


def test_an_undecided_auto_is_estimated_with_checkpointing_on():
    cfg = preset("qwen2.5-coder-7b-instruct")
    arch = find_architecture(cfg.model.source)
    undecided = estimate_for_config(cfg, "sft", arch).total
    assert undecided == estimate_for_config(cfg, "sft", arch, gradient_checkpointing=True).total
    assert undecided < estimate_for_config(cfg, "sft", arch, gradient_checkpointing=False).total


def test_config_takes_auto_true_false_and_refuses_other_words():
    assert preset("qwen2.5-coder-7b-instruct").train.gradient_checkpointing == "auto"
    assert (
        load_config(
            "qwen2.5-coder-7b-instruct", ["train.gradient_checkpointing=false"]
        ).train.gradient_checkpointing
        is False
    )
    with pytest.raises(BbjtuneError, match="gradient_checkpointing"):
        load_config("qwen2.5-coder-7b-instruct", ["train.gradient_checkpointing=sometimes"])


def test_an_explicit_setting_is_kept_whatever_the_card():
    for value in (True, False):
        cfg = load_config("qwen2.5-coder-7b-instruct", [f"train.gradient_checkpointing={str(value).lower()}"])
        assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=200 * GiB)[0] is value
        assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=1 * GiB)[0] is value


def test_auto_turns_it_off_only_where_the_estimate_without_it_fits():
    # 7B QLoRA at 4 x 2048 tokens, no dropout (the throughput benchmark's rows)
    cfg = preset(
        "qwen2.5-coder-7b-instruct",
        "train.sft.max_length=2048",
        "train.lora.dropout=0.0",
    )
    arch = find_architecture(cfg.model.source)
    need = estimate_for_config(cfg, "sft", arch, gradient_checkpointing=False).total
    with_it = estimate_for_config(cfg, "sft", arch, gradient_checkpointing=True).total
    assert with_it < need  # checkpointing is what saves the memory
    on, why = choose_checkpointing(cfg, "sft", cfg.model.source, usable=int(need / GPU_PLAN_SHARE) + GiB)
    assert on is False and "fits in 85%" in why
    on, why = choose_checkpointing(cfg, "sft", cfg.model.source, usable=int(need / GPU_PLAN_SHARE) - GiB)
    assert on is True and "does not fit" in why
    # an 80 GB card holds that step without checkpointing; a 24 GB card does not
    assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=79 * GiB)[0] is False
    assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=23 * GiB)[0] is True


def test_auto_keeps_it_on_for_the_presets_own_batches():
    # 4 x 4096 tokens per step with LoRA dropout: the activations alone outgrow even a 141 GB card
    for name in ("qwen2.5-coder-7b-instruct", "qwen2.5-coder-14b-instruct", "qwen2.5-coder-32b-instruct"):
        cfg = preset(name)
        assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=140 * GiB)[0] is True, name


def test_auto_without_a_gpu_keeps_it_on(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this case is about a machine without a CUDA GPU")
    from train_helpers import make_config

    cfg = make_config(tmp_path, tiny_model_dir, train__gradient_checkpointing="auto")
    assert choose_checkpointing(cfg, "sft", str(tiny_model_dir)) == (True, "auto: no CUDA GPU")


def test_the_trainer_follows_the_decision(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU the decision depends on the card")
    from train_helpers import build_trainer, make_config, write_data

    cfg = make_config(
        tmp_path, tiny_model_dir, write_data(tmp_path / "data"), train__gradient_checkpointing="auto"
    )
    trainer, _data, job = build_trainer(cfg)
    assert job.checkpointing is True and trainer.args.gradient_checkpointing is True


def test_auto_keeps_it_on_for_self_training_stages():
    cfg = preset("qwen2.5-coder-7b-instruct", "train.sft.max_length=2048", "train.lora.dropout=0.0")
    assert choose_checkpointing(cfg, "sft", cfg.model.source, usable=200 * GiB)[0] is False
    on, why = choose_checkpointing(cfg, "dpo", cfg.model.source, usable=200 * GiB)
    assert on is True and "stages 1 and 2" in why


def test_the_dry_run_says_where_auto_turns_it_off(tmp_path, tiny_model_dir):
    from rich.console import Console
    from train_helpers import make_config

    from bbjtune.train.dryrun import _show_memory

    cfg = make_config(tmp_path, tiny_model_dir, train__stages="sft", train__gradient_checkpointing="auto")
    console = Console(record=True, width=200)
    _show_memory(cfg, ["sft"], None, console)
    text = console.export_text()
    assert "sft, checkpointing off (auto: off where this fits in 85% of the free GPU memory)" in text
    assert "←" not in text  # with auto, neither row is the fixed choice


def test_largest_batch_is_the_last_one_the_estimate_fits():
    from bbjtune.train.resources import largest_batch

    cfg = preset("qwen2.5-coder-7b-instruct", "train.sft.max_length=2048", "train.lora.dropout=0.0")
    arch = find_architecture(cfg.model.source)
    card = 79.1 * GiB  # an 80 GB card
    room = GPU_PLAN_SHARE * card
    for ckpt in (True, False):
        n = largest_batch(cfg, "sft", arch, card, ckpt, limit=1024)
        assert 0 < n < 1024
        assert estimate_for_config(cfg, "sft", arch, batch=n, gradient_checkpointing=ckpt).total <= room
        assert estimate_for_config(cfg, "sft", arch, batch=n + 1, gradient_checkpointing=ckpt).total > room
    # the measured case: 4 x 2,048 without checkpointing ran in 34 GiB on an 80 GB card
    off = largest_batch(cfg, "sft", arch, card, False)
    assert off >= 4
    assert largest_batch(cfg, "sft", arch, card, True) == 64  # more than the default limit fits
    assert largest_batch(cfg, "sft", arch, 139.8 * GiB, False) > off
    assert largest_batch(cfg, "sft", arch, 4 * GiB, True) == 0  # the 7B weights alone outgrow 4 GiB


def test_the_dry_run_shows_the_batch_each_card_holds(tmp_path, tiny_model_dir):
    from rich.console import Console
    from train_helpers import make_config

    from bbjtune.train.dryrun import _show_memory

    cfg = make_config(tmp_path, tiny_model_dir, train__stages="sft")
    console = Console(record=True, width=200)
    _show_memory(cfg, ["sft"], None, console)
    text = console.export_text()
    assert "per-GPU batch that fits" in text and "sft, checkpointing off" in text
    assert any(line.startswith("│ 80 GB") and "64+" in line for line in text.splitlines())  # a tiny model
    sc = cfg.train.sft
    assert f"(now sft {sc.per_device_batch_size} x {sc.gradient_accumulation_steps})" in text
