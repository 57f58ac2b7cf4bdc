"""Merging adapters into the 16-bit base, the checks before it, and the GGUF LoRA adapter."""

from __future__ import annotations

import json

import pytest
import torch
from export_fixtures import make_adapter, make_trained_run

from bbjtune.errors import BbjtuneError
from bbjtune.export.adapter import read_adapter
from bbjtune.export.merge import MergePlan, check_plan, merge, plan_from_trained
from bbjtune.models import load_model, load_tokenizer
from bbjtune.models.chat_template import CHATML_TEMPLATE, ENDOFTEXT, IM_END

IDS = torch.tensor([[5, 17, 300, 42, 1000, 7, 99, 250]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("ad") / "adapter", seed=1)


def test_merged_model_computes_what_base_plus_adapter_computes(tiny_model_dir, adapter, tmp_path):
    from peft import PeftModel

    want = _logits(PeftModel.from_pretrained(load_model(str(tiny_model_dir), dtype="float32"), str(adapter)))
    base = _logits(load_model(str(tiny_model_dir), dtype="float32"))
    out = merge(MergePlan(base=str(tiny_model_dir), adapters=[adapter], chat=True), tmp_path / "merged")
    got = _logits(load_model(str(out), dtype="float32"))
    assert (got - want).abs().max() < 1e-4
    assert (base - want).abs().max() > 0.05  # the adapter really changes the model
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]


def test_merged_dir_has_tokenizer_template_and_stop_ids(tiny_model_dir, adapter, tmp_path):
    out = merge(MergePlan(base=str(tiny_model_dir), adapters=[adapter], chat=True), tmp_path / "merged")
    tok = load_tokenizer(str(out))
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)]
    assert tok.chat_template == CHATML_TEMPLATE
    # the saved tokenizer splits text exactly as the training tokenizer
    text = '<|im_start|>user\nPRINT "Größe"\r\n<|im_end|>\n'
    assert tok(text).input_ids == load_tokenizer(str(tiny_model_dir))(text).input_ids


def test_stage_one_then_stage_two_chain(tiny_model_dir, tmp_path):
    from peft import PeftModel

    first = make_adapter(tiny_model_dir, tmp_path / "cpt", seed=2)
    stage1 = merge(MergePlan(base=str(tiny_model_dir), adapters=[first], chat=False), tmp_path / "cpt-merged")
    second = make_adapter(stage1, tmp_path / "sft", seed=3)
    model = PeftModel.from_pretrained(
        load_model(str(tiny_model_dir), dtype="float32"), str(first)
    ).merge_and_unload()
    want = _logits(PeftModel.from_pretrained(model, str(second)))
    chained = merge(MergePlan(base=str(tiny_model_dir), adapters=[first, second]), tmp_path / "chained")
    assert (_logits(load_model(str(chained), dtype="float32")) - want).abs().max() < 1e-4
    # stage 1 alone (a Base model) stops on <|endoftext|> only
    assert json.loads((stage1 / "generation_config.json").read_text())["eos_token_id"] == load_tokenizer(
        str(tiny_model_dir)
    ).convert_tokens_to_ids(ENDOFTEXT)


def test_trained_json_becomes_a_plan(tiny_model_dir, adapter, tmp_path):
    make_trained_run(tmp_path / "run", str(tiny_model_dir), adapter, adapter.parent, stages=("cpt", "sft"))
    plan = plan_from_trained(tmp_path / "run")
    assert plan.base == str(tiny_model_dir) and plan.adapters == [adapter] and plan.chat
    assert plan.system_prompt and "BBj" in plan.system_prompt


def test_merge_refuses_a_4bit_base(tmp_path, adapter):
    base = tmp_path / "qwen-bnb"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True},
            }
        )
    )
    with pytest.raises(BbjtuneError, match="quantized .bitsandbytes.") as err:
        merge(MergePlan(base=str(base), adapters=[adapter]), tmp_path / "out")
    assert "16-bit" in err.value.hint
    with pytest.raises(BbjtuneError, match="quantized"):
        check_plan(MergePlan(base="unsloth/Qwen2.5-Coder-7B-bnb-4bit", adapters=[adapter]))
    assert not (tmp_path / "out").exists()


def test_adapter_for_a_different_base_size_is_refused_before_loading(tmp_path, adapter):
    from bbjtune.models.tiny import build_tiny

    other = build_tiny("tiny:demo", cache_dir=tmp_path / "cache")  # 192 wide instead of 64
    with pytest.raises(BbjtuneError, match="does not fit the base model") as err:
        check_plan(MergePlan(base=str(other), adapters=[adapter]))
    assert "different base model" in err.value.hint


def test_adapter_of_another_architecture_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "gpt2-adapter"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]})
    )
    save_file(
        {
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": torch.zeros(4, 64),
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": torch.zeros(192, 4),
        },
        foreign / "adapter_model.safetensors",
    )
    with pytest.raises(BbjtuneError, match="does not have"):
        check_plan(MergePlan(base=str(tiny_model_dir), adapters=[foreign]))


def test_missing_or_broken_adapters(tiny_model_dir, tmp_path):
    with pytest.raises(BbjtuneError, match="not a LoRA adapter"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{ nope")
    with pytest.raises(BbjtuneError, match="not valid JSON"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(BbjtuneError, match="not LoRA"):
        read_adapter(tmp_path)
    with pytest.raises(BbjtuneError, match="not found|train first"):
        plan_from_trained(tmp_path / "no-run")


def test_adapter_blockers_are_named(tiny_model_dir, tmp_path):
    plain = read_adapter(make_adapter(tiny_model_dir, tmp_path / "plain"))
    assert plain.serving_blockers() == [] and plain.rank == 8
    dora = read_adapter(make_adapter(tiny_model_dir, tmp_path / "dora", use_dora=True))
    assert any("DoRA" in r for r in dora.serving_blockers())
    saved = read_adapter(make_adapter(tiny_model_dir, tmp_path / "mts", modules_to_save=["lm_head"]))
    assert any("modules_to_save" in r for r in saved.serving_blockers())
    rows = read_adapter(make_adapter(tiny_model_dir, tmp_path / "tti", trainable_token_indices=[3, 4]))
    assert any("trainable_token_indices" in r for r in rows.serving_blockers())


def test_gguf_lora_adapter_matches_the_merged_gguf(tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from bbjtune.export.gguf import write_gguf
    from bbjtune.export.lora_gguf import write_lora_gguf
    from bbjtune.export.verify import compare_lora_with_merged

    # rsLoRA scaling (alpha/sqrt(r)) must be folded in correctly too
    adapter = make_adapter(tiny_model_dir, tmp_path / "rs", r=4, alpha=8, use_rslora=True, seed=5)
    merged = merge(MergePlan(base=str(tiny_model_dir), adapters=[adapter]), tmp_path / "merged")
    result = compare_lora_with_merged(
        write_gguf(tiny_model_dir, tmp_path / "base.f16.gguf", "f16"),
        write_lora_gguf(adapter, tmp_path / "a.lora.gguf"),
        write_gguf(merged, tmp_path / "m.f16.gguf", "f16"),
    )
    assert result["lora_ok"], result
    assert result["lora_vs_merged_max_abs_diff"] < 0.05 * result["base_vs_merged_max_abs_diff"]


def test_gguf_lora_refuses_adapters_with_embedding_weights(tiny_model_dir, tmp_path):
    from bbjtune.export.lora_gguf import write_lora_gguf

    adapter = make_adapter(tiny_model_dir, tmp_path / "tti", trainable_token_indices=[3, 4])
    with pytest.raises(BbjtuneError, match="cannot be a GGUF adapter") as err:
        write_lora_gguf(adapter, tmp_path / "x.lora.gguf")
    assert "merged GGUF" in err.value.hint
    assert not (tmp_path / "x.lora.gguf").exists()


def test_a_base_saved_from_a_gguf_merges_and_exports(tiny_model_dir, adapter, tmp_path):
    """model.source: a .gguf → the checkpoint training saves from it is plain weights, and merges."""
    from bbjtune.export.gguf import write_gguf

    from_gguf = load_model(str(write_gguf(tiny_model_dir, tmp_path / "t.f16.gguf", "f16")), dtype="float32")
    from_gguf.save_pretrained(tmp_path / "base")
    load_tokenizer(str(tiny_model_dir)).save_pretrained(tmp_path / "base")
    assert "quantization_config" not in json.loads((tmp_path / "base" / "config.json").read_text())
    out = merge(MergePlan(base=str(tmp_path / "base"), adapters=[adapter]), tmp_path / "merged")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert write_gguf(out, tmp_path / "m.f16.gguf", "f16").stat().st_size > 0
