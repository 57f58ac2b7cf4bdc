from __future__ import annotations

import time

import pytest
import yaml
from conftest import REPO_ROOT

from bbjtune.config import RunConfig, apply_override, list_presets, load_config, resolve_config_path
from bbjtune.errors import BbjtuneError

EXPECTED_PRESETS = {"quickstart"} | {
    f"qwen2.5-coder-{s}-{k}" for s in ("7b", "14b", "32b") for k in ("base", "instruct")
}


def test_every_expected_preset_ships():
    assert EXPECTED_PRESETS <= set(list_presets())


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.name == name
    assert cfg.train_stages, "a shipped config must train something"


@pytest.mark.parametrize("size", ["7b", "14b", "32b"])
def test_qwen_presets_carry_the_recommended_recipe(size):
    for kind in ("base", "instruct"):
        cfg = load_config(f"qwen2.5-coder-{size}-{kind}")
        t = cfg.train
        assert cfg.model.source == f"Qwen/Qwen2.5-Coder-{size.upper()}" + (
            "-Instruct" if kind == "instruct" else ""
        )
        assert (
            t.quantization.load_in_4bit and t.quantization.quant_type == "nf4" and t.quantization.double_quant
        )
        assert (t.lora.r, t.lora.alpha, t.lora.target_modules) == (32, 64, "all-linear")
        assert t.optim == "paged_adamw_8bit"
        assert t.cpt.learning_rate == 2e-4 and t.sft.learning_rate == 5e-5
        for stage in (t.cpt, t.sft):
            assert 1 <= stage.epochs <= 3
            assert 32 <= stage.per_device_batch_size * stage.gradient_accumulation_steps <= 64
            assert 2048 <= stage.max_length <= 4096
            assert 0.03 <= stage.warmup_ratio <= 0.1
            assert stage.weight_decay == 0.01
        assert cfg.train_stages == (["cpt", "sft"] if kind == "base" else ["sft"])


def write(tmp_path, text: str):
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return str(p)


def error_of(path, overrides=None) -> BbjtuneError:
    t0 = time.perf_counter()
    with pytest.raises(BbjtuneError) as info:
        load_config(path, overrides)
    assert time.perf_counter() - t0 < 1.0, "config errors must come in the first second"
    return info.value


def test_unknown_key_names_the_path_and_suggests(tmp_path):
    err = error_of(write(tmp_path, "name: x\ndata: {chatml: [a.jsonl]}\ntrain:\n  lora: {rr: 8}\n"))
    assert "train.lora.rr" in err.message
    assert "train.lora.r" in err.hint


def test_wrong_type_names_the_key(tmp_path):
    err = error_of(write(tmp_path, "name: x\ndata: {chatml: [a.jsonl]}\ntrain:\n  sft: {epochs: many}\n"))
    assert "train.sft.epochs" in err.message and "'many'" in err.message


def test_bad_literal_lists_choices(tmp_path):
    err = error_of(write(tmp_path, "name: x\ndata: {chatml: [a.jsonl]}\ntrain: {backend: deepspeed}\n"))
    assert "train.backend" in err.message and "unsloth" in err.hint


def test_contradiction_is_reported(tmp_path):
    err = error_of(
        write(
            tmp_path,
            "name: x\ndata: {chatml: [a.jsonl], heldout_ratio: 0}\ntrain: {early_stopping_patience: 3}\n",
        )
    )
    assert "held-out" in err.message


def test_dora_with_vllm_export_is_a_contradiction(tmp_path):
    err = error_of(write(tmp_path, "name: x\ndata: {chatml: [a.jsonl]}\ntrain: {lora: {use_dora: true}}\n"))
    assert "DoRA" in err.message


def test_sft_without_data_is_refused(tmp_path):
    err = error_of(write(tmp_path, "name: x\ntrain: {stages: sft}\n"))
    assert "data.chatml" in err.message


def test_bad_yaml_reports_line(tmp_path):
    err = error_of(write(tmp_path, "name: x\nmodel:\n  source: [unclosed\n"))
    assert "line" in err.message


def test_top_level_must_be_mapping(tmp_path):
    err = error_of(write(tmp_path, "- just\n- a list\n"))
    assert "mapping" in err.message


def test_unknown_preset_suggests_close_name():
    with pytest.raises(BbjtuneError) as info:
        resolve_config_path("qwen2.5-coder-7b-bas")
    assert "qwen2.5-coder-7b-base" in info.value.hint


def test_missing_file():
    with pytest.raises(BbjtuneError) as info:
        resolve_config_path("no/such/config.yaml")
    assert "does not exist" in info.value.message


def test_overrides_parse_yaml_values(tmp_path):
    cfg = load_config("quickstart", ["train.lora.r=8", "train.report_to=[tensorboard]", "name=other"])
    assert cfg.train.lora.r == 8 and cfg.train.report_to == ["tensorboard"] and cfg.name == "other"
    assert str(cfg.run_dir) == "runs/other"
    with pytest.raises(BbjtuneError):
        apply_override({}, "no-equals-sign")


def test_instruct_models_skip_cpt_by_default():
    cfg = load_config("quickstart", ["model.kind=instruct"])
    assert cfg.train_stages == ["sft"]


def test_dump_round_trips():
    from bbjtune.config import dump_config, validate_config

    cfg = load_config("quickstart")
    again = validate_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_unquoted_yaml_off_yes_no_mean_the_words(tmp_path):
    """YAML 1.1 reads `off`, `yes` and `no` as booleans; users write them unquoted."""
    from bbjtune.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "name: t\nmodel: {source: 'tiny:test'}\ndata: {chatml: [x.jsonl], code_check: off, quality_check: off}\n"
        "train: {sft: {train_chat_tokens: no}, cpt: {}}\n",
        encoding="utf-8",
    )
    cfg = load_config(str(path), ["train.rft.train_chat_tokens=yes"])
    assert cfg.data.code_check == "off" and cfg.data.quality_check == "off"
    assert cfg.train.sft.train_chat_tokens == "no" and cfg.train.rft.train_chat_tokens == "yes"
    cfg = load_config(str(path), ["data.quality_check=reject"])
    assert cfg.data.quality_check == "reject"
