"""vLLM launch plans: what vLLM accepts as a LoRA, and the merged alternative when it does not."""

from __future__ import annotations

import pytest
from export_fixtures import make_adapter

from bbjtune.export.adapter import read_adapter
from bbjtune.export.vllm import VLLM_LORA_RANKS, explain, max_lora_rank_for, plan_vllm


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    return {
        "plain": read_adapter(make_adapter(tiny_model_dir, root / "plain", r=24)),
        "dora": read_adapter(make_adapter(tiny_model_dir, root / "dora", use_dora=True)),
        "mts": read_adapter(make_adapter(tiny_model_dir, root / "mts", modules_to_save=["lm_head"])),
        "rows": read_adapter(make_adapter(tiny_model_dir, root / "rows", trainable_token_indices=[3])),
    }


def _plan(info, tmp_path, base="Qwen/Qwen2.5-Coder-7B-Instruct", merged=True):
    return plan_vllm(
        info,
        base,
        served_name="bbj-x",
        max_loras=4,
        max_model_len=8192,
        merged_dir=tmp_path / "merged" if merged else None,
    )


def test_max_lora_rank_is_the_smallest_accepted_value_that_fits():
    assert [max_lora_rank_for(r) for r in (1, 8, 9, 16, 24, 64, 300, 512)] == [1, 8, 16, 16, 32, 64, 320, 512]
    assert max_lora_rank_for(513) is None
    assert list(VLLM_LORA_RANKS) == sorted(VLLM_LORA_RANKS)


def test_plain_adapter_is_served_as_lora(adapters, tmp_path):
    plan = _plan(adapters["plain"], tmp_path)
    assert plan.lora_ok and plan.rank == 24 and plan.max_lora_rank == 32
    cmd = plan.command()
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen2.5-Coder-7B-Instruct"] and "--enable-lora" in cmd
    assert cmd[cmd.index("--lora-modules") + 1] == f"bbj-x={adapters['plain'].directory.resolve()}"
    assert cmd[cmd.index("--max-lora-rank") + 1] == "32" and cmd[cmd.index("--max-loras") + 1] == "4"
    data = plan.to_json()
    assert data["mode"] == "lora" and data["lora"]["rank"] == 24 and data["lora_blockers"] == []
    assert "--enable-lora" in data["command"] and '"model": "bbj-x"' in data["request_example"]


@pytest.mark.parametrize(
    "kind, words", [("dora", "DoRA"), ("mts", "modules_to_save"), ("rows", "trainable_token_indices")]
)
def test_adapters_vllm_rejects_fall_back_to_the_merged_model(adapters, tmp_path, kind, words):
    plan = _plan(adapters[kind], tmp_path)
    assert not plan.lora_ok and any(words in b for b in plan.blockers)
    cmd = plan.command()
    assert cmd[:3] == ["vllm", "serve", str((tmp_path / "merged").resolve())] and "--enable-lora" not in cmd
    text = explain(plan)
    assert "cannot load this adapter" in text and "merged model" in text and words in text


def test_no_merged_model_says_how_to_get_one(adapters, tmp_path):
    plan = _plan(adapters["dora"], tmp_path, merged=False)
    assert plan.command() is None and "export.merged: true" in explain(plan)


def test_gguf_or_tiny_base_cannot_take_a_vllm_lora(adapters, tmp_path):
    assert not _plan(adapters["plain"], tmp_path, base="/models/qwen.Q4_K_M.gguf").lora_ok
    assert not _plan(adapters["plain"], tmp_path, base="tiny:demo").lora_ok


def test_no_adapter(tmp_path):
    plan = _plan(None, tmp_path)
    assert not plan.lora_ok and plan.command()[0:2] == ["vllm", "serve"]


def test_an_adapter_on_a_released_stage_one_model_is_served_merged(adapters, tmp_path):
    """Two adapters in the plan (stage 1's merged model was released): vLLM takes one, so the merged model."""
    plan = plan_vllm(
        adapters["plain"],
        "Qwen/Qwen2.5-Coder-7B",
        served_name="bbj-x",
        max_loras=4,
        max_model_len=8192,
        merged_dir=tmp_path / "merged",
        chained=2,
    )
    assert not plan.lora_ok and any("keep_merged" in b for b in plan.blockers)
    assert plan.command()[:3] == ["vllm", "serve", str((tmp_path / "merged").resolve())]
