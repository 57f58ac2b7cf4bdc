"""Random weights of a named architecture: a checkpoint that loads and trains like a downloaded one."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from bbjtune.errors import BbjtuneError
from bbjtune.export.vllm import servable_base
from bbjtune.models import random_weights as rw
from bbjtune.models.loading import load_model, load_tokenizer, resolve_source, save_tokenizer


def small_config(**over):
    cfg = rw.published_config("qwen2.5-coder-0.5b")
    cfg.update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
        **over,
    )
    return cfg


def test_published_parameter_counts_match_the_model_cards():
    # Qwen's model cards: 0.49B, 1.54B, 3.09B, 7.61B, 14.7B, 32.5B parameters.
    expected = {
        "qwen2.5-coder-0.5b": 0.49e9,
        "qwen2.5-coder-1.5b": 1.54e9,
        "qwen2.5-coder-3b": 3.09e9,
        "qwen2.5-coder-7b": 7.61e9,
        "qwen2.5-coder-14b": 14.7e9,
        "qwen2.5-coder-32b": 32.5e9,
    }
    for name, n in expected.items():
        got = rw.parameter_count(rw.published_config(name))
        assert abs(got - n) / n < 0.01, (name, got)


def test_parameter_count_equals_the_transformers_model():
    from transformers import AutoModelForCausalLM, Qwen2Config

    for tied in (True, False):
        cfg = small_config(tie_word_embeddings=tied)
        model = AutoModelForCausalLM.from_config(
            Qwen2Config(**{k: v for k, v in cfg.items() if k != "model_type"})
        )
        assert sum(p.numel() for p in model.parameters()) == rw.parameter_count(cfg)


def test_sharded_checkpoint_loads_with_from_pretrained(tmp_path):
    cfg = small_config(tie_word_embeddings=False)
    written = rw.write_random_checkpoint(cfg, tmp_path, seed=1, progress=False, shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / f).exists() for f in files)
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert written == rw.parameter_count(cfg) * 2 == index["metadata"]["total_size"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    weights = dict(model.named_parameters())
    assert torch.all(weights["model.norm.weight"] == 1)
    assert torch.all(weights["model.layers.0.self_attn.q_proj.bias"] == 0)
    std = weights["model.layers.1.mlp.up_proj.weight"].float().std().item()
    assert 0.015 < std < 0.025
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    cfg = small_config()
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        rw.write_random_checkpoint(cfg, tmp_path / name, seed=seed, progress=False)
    from safetensors.torch import load_file

    a, b, c = (load_file(tmp_path / n / "model-00001-of-00001.safetensors") for n in "abc")
    key = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_unknown_names_and_missing_tokenizer_are_clear(monkeypatch, tmp_path):
    with pytest.raises(BbjtuneError, match="unknown architecture") as e:
        resolve_source("random:qwen2.5-coder-9b")
    assert "random:qwen2.5-coder-14b" in e.value.hint
    assert rw.parse_random_source("random:Qwen2.5-Coder-7B-Instruct@5") == ("qwen2.5-coder-7b", "instruct", 5)
    monkeypatch.delenv("BBJTUNE_TOKENIZER_SOURCE", raising=False)
    monkeypatch.setenv("BBJTUNE_CACHE_DIR", str(tmp_path))
    with pytest.raises(BbjtuneError, match="tokenizer") as e:
        resolve_source("random:qwen2.5-coder-7b")
    assert "fetch_qwen05b.py" in e.value.hint


def test_refuses_before_writing_when_the_disk_is_too_small(monkeypatch, tmp_path):
    monkeypatch.setenv("BBJTUNE_TOKENIZER_SOURCE", "tiny:test")
    monkeypatch.setenv("BBJTUNE_CACHE_DIR", str(tmp_path))
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(rw.shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 2**30))
    with pytest.raises(BbjtuneError, match=r"need 6\d\.\d GiB .* 10\.0 GiB free"):
        resolve_source("random:qwen2.5-coder-32b")
    assert not list((tmp_path / "random").glob("*"))


def test_a_build_appears_whole_under_its_name_readable_by_other_users(monkeypatch, tmp_path, tiny_model_dir):
    """A vLLM or Ollama service running as another user reads the cached checkpoint: the directory
    gets the mode mkdir gives and the files the mode open gives (a bare mkdtemp left it 0700), and no
    temporary directory stays beside it."""
    monkeypatch.setenv("BBJTUNE_TOKENIZER_SOURCE", str(tiny_model_dir))
    small = small_config()
    monkeypatch.setattr(
        rw, "published_config", lambda name, variant="base": {**small, "eos_token_id": rw.EOS[variant]}
    )
    old = os.umask(0o022)
    try:
        built = rw.build_random(
            "random:qwen2.5-coder-0.5b", save_tokenizer, cache_dir=tmp_path, progress=False
        )
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == [built.name]
    assert (built / "model.safetensors.index.json").exists()
    assert stat.S_IMODE(built.stat().st_mode) == 0o755
    files = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in built.iterdir() if f.is_file()}
    assert files and set(files.values()) == {"0o644"}, files
    assert rw.build_random("random:qwen2.5-coder-0.5b", save_tokenizer, cache_dir=tmp_path) == built  # cached


@pytest.mark.slow
def test_random_source_is_a_real_checkpoint_every_verb_can_load(monkeypatch, tmp_path):
    """The whole path: `random:` → cached local directory → the same loaders real weights take."""
    monkeypatch.setenv("BBJTUNE_TOKENIZER_SOURCE", "tiny:test")
    monkeypatch.setenv("BBJTUNE_CACHE_DIR", str(tmp_path))
    src = resolve_source("random:qwen2.5-coder-0.5b-instruct")
    assert src.kind == "local" and (src.path / "config.json").exists()
    assert resolve_source("random:qwen2.5-coder-0.5b-instruct").path == src.path  # cached
    # vLLM is told the directory, which it can load, not the spec, which it cannot
    assert servable_base("random:qwen2.5-coder-0.5b-instruct") == str(src.path)
    assert servable_base("Qwen/Qwen2.5-Coder-7B") == "Qwen/Qwen2.5-Coder-7B"
    model = load_model(src, dtype="bfloat16")
    assert (
        sum(p.numel() for p in model.parameters())
        == rw.parameter_count(rw.published_config("qwen2.5-coder-0.5b"))
        == 494_032_768
    )
    assert model.generation_config.eos_token_id == 151645
    tok = load_tokenizer(src)
    ids = tok("print 1", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


def test_a_tokenizer_only_directory_is_a_tokenizer_source(tmp_path, tiny_model_dir):
    """What a machine without the hub carries to build random weights: tokenizer.json and its config."""
    from transformers import AutoTokenizer

    only = tmp_path / "tokenizer-only"
    load_tokenizer(str(tiny_model_dir)).save_pretrained(only)
    assert not (only / "config.json").exists()
    with pytest.raises(BbjtuneError, match="config.json"):
        resolve_source(str(only))  # not a model, and not taken for one
    save_tokenizer(str(only), tmp_path / "out")
    copied = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert copied.get_vocab() == load_tokenizer(str(tiny_model_dir)).get_vocab()
    assert copied("print 1").input_ids == load_tokenizer(str(tiny_model_dir))("print 1").input_ids


def test_tokenizer_and_architecture_of_a_random_source_need_no_build(monkeypatch, tmp_path, tiny_model_dir):
    """A dry run of the 32B preset reads its tokens and shapes without writing 61 GiB of weights."""
    from bbjtune.models.loading import find_architecture

    monkeypatch.setenv("BBJTUNE_TOKENIZER_SOURCE", str(tiny_model_dir))
    monkeypatch.setenv("BBJTUNE_CACHE_DIR", str(tmp_path))
    tok = load_tokenizer("random:qwen2.5-coder-32b")
    assert tok.get_vocab() == load_tokenizer(str(tiny_model_dir)).get_vocab() and tok.pad_token
    arch = find_architecture("random:qwen2.5-coder-32b")
    assert arch is not None and 32.0e9 < arch.params < 33.5e9
    assert not (tmp_path / "random").exists(), "nothing may be built"
    with pytest.raises(BbjtuneError, match="unknown architecture"):
        load_tokenizer("random:qwen2.5-coder-9b")
