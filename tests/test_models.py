from __future__ import annotations

import json
import os
import time

import pytest
import torch

from bbjtune.errors import BbjtuneError
from bbjtune.models import load_model, load_tokenizer, resolve_source
from bbjtune.models.chat_template import (
    CHATML_TEMPLATE,
    CHATML_TRAINING_TEMPLATE,
    IM_END,
    install_training_template,
    render_chatml,
)
from bbjtune.models.tiny import QWEN_FIM_TOKENS, QWEN_SPECIAL_TOKENS, build_tiny

SAMPLES = [
    'PRINT "Größe: ", x$, @(0,2)\r\n0010 REM legacy\n',
    "method public BBjString getName()\n    methodret #Name$\nmethodend\n",
    "def add(a, b):\n    return a + b\n\n\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n```bbj\nx=1\n```<|im_end|>\n<|endoftext|>",
    "<|fim_prefix|>a = 1<|fim_suffix|>print a<|fim_middle|>",
    "  tabs\tand   spaces \u00e9\u00e8 emoji \U0001f600 $0D0A$ 'CS'",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Write a BBj loop"}],
    [
        {"role": "system", "content": "You are a BBj expert."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '```bbj\nprint "hi"\n```'},
    ],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d\n\n"},
    ],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "{{ not jinja }} {% raw %}"}],
]


def test_tiny_builds_fast_and_is_cached(tmp_path):
    t0 = time.perf_counter()
    path = build_tiny("tiny:test", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 10.0
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    t0 = time.perf_counter()
    assert build_tiny("tiny:test", cache_dir=tmp_path) == path
    assert time.perf_counter() - t0 < 1.0, "a second call must reuse the cache"


def test_tiny_is_deterministic_given_seed(tmp_path, tiny_model_dir):
    again = build_tiny("tiny:test", cache_dir=tmp_path)
    assert (again / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    a = load_model(str(again), dtype="float32").state_dict()
    b = load_model(str(tiny_model_dir), dtype="float32").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = load_model(str(build_tiny("tiny:test@1", cache_dir=tmp_path)), dtype="float32").state_dict()
    assert not torch.equal(a["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_tiny_is_qwen2_with_qwen_special_tokens(tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["architectures"] == ["Qwen2ForCausalLM"]
    tok = load_tokenizer(str(tiny_model_dir))
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS + QWEN_FIM_TOKENS]
    assert len(set(ids)) == len(ids) and None not in ids
    # like Qwen: specials follow the learned vocabulary, in Qwen's order, inside the model's vocab
    assert ids[:3] == sorted(ids[:3]) and max(ids) < cfg["vocab_size"]
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_middle|>"):
        assert len(tok(special)["input_ids"]) == 1
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|endoftext|>"


def test_tokenizer_round_trip_same_ids(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    original = load_tokenizer(str(tiny_model_dir))
    original.save_pretrained(tmp_path / "saved")
    for reloaded in (
        AutoTokenizer.from_pretrained(tmp_path / "saved"),
        PreTrainedTokenizerFast.from_pretrained(tmp_path / "saved"),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    ):
        for text in SAMPLES:
            ids = original(text)["input_ids"]
            assert reloaded(text)["input_ids"] == ids
            assert reloaded.decode(ids) == text


def test_model_round_trip_same_logits(tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir), dtype="float32").eval()
    tok = load_tokenizer(str(tiny_model_dir))
    batch = tok(SAMPLES[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "m")
    again = load_model(str(tmp_path / "m"), dtype="float32").eval()
    with torch.no_grad():
        after = again(**batch).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_renders_exactly_like_chatml(tiny_model_dir, conversation, generation_prompt):
    tok = load_tokenizer(str(tiny_model_dir))
    expected = render_chatml(conversation, add_generation_prompt=generation_prompt)
    assert (
        tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
        == expected
    )
    tok.chat_template = CHATML_TEMPLATE
    assert (
        tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
        == expected
    )


def test_tool_conversations_render_like_chatml(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    tools = [{"type": "function", "function": {"name": "compile", "parameters": {"type": "object"}}}]
    conv = [
        {"role": "user", "content": "check it"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "compile", "arguments": {"f": "a.bbj"}}}],
        },
        {"role": "tool", "content": "ok"},
        {"role": "tool", "content": "done"},
    ]
    text = tok.apply_chat_template(conv, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text == render_chatml(conv, add_generation_prompt=True, tools=tools)


def test_generation_markers_cover_answer_and_im_end(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    conv = CONVERSATIONS[2]
    out = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "b" + IM_END + "d\n\n" + IM_END


def test_install_training_template_refuses_other_formats(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    with pytest.raises(ValueError):
        install_training_template(tok)
    tok.chat_template = CHATML_TEMPLATE
    install_training_template(tok)
    assert tok.chat_template == CHATML_TRAINING_TEMPLATE


def test_source_resolution(tmp_path, tiny_model_dir):
    assert resolve_source("Qwen/Qwen2.5-Coder-7B").kind == "hub"
    assert resolve_source(str(tiny_model_dir)).kind == "local"
    with pytest.raises(BbjtuneError, match="does not exist"):
        resolve_source(str(tmp_path / "missing"))
    with pytest.raises(BbjtuneError, match="unknown tiny"):
        resolve_source("tiny:huge")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BbjtuneError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(BbjtuneError, match="not a GGUF"):
        resolve_source(str(fake))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BbjtuneError, match="not a .gguf"):
        resolve_source(str(tmp_path / "weights.bin"))


def test_unreachable_hub_fails_fast_with_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import bbjtune.models.loading as loading

    monkeypatch.setattr(loading, "HUB_HOST", "hub.invalid")  # a name that never resolves
    t0 = time.perf_counter()
    with pytest.raises(BbjtuneError) as info:
        load_tokenizer("Qwen/Qwen2.5-Coder-7B")
    assert time.perf_counter() - t0 < 10
    assert "not reachable" in info.value.message and "local directory" in info.value.hint


def test_checkpoint_saved_from_a_gguf_reloads_and_saves_again(tiny_model_dir, tmp_path):
    """A model dequantized from a GGUF carries quantization_config {gguf}; reloading must not re-attach it."""
    import json as _json

    model = load_model(str(tiny_model_dir), dtype="float32")
    model.save_pretrained(tmp_path / "from-gguf")
    cfg_path = tmp_path / "from-gguf" / "config.json"
    cfg = _json.loads(cfg_path.read_text())
    cfg["quantization_config"] = {"quant_method": "gguf"}  # what transformers writes for a GGUF-loaded model
    cfg_path.write_text(_json.dumps(cfg))
    again = load_model(str(tmp_path / "from-gguf"), dtype="float32")
    assert getattr(again.config, "quantization_config", None) is None and again.hf_quantizer is None
    again.save_pretrained(tmp_path / "saved-again")
    assert "quantization_config" not in _json.loads((tmp_path / "saved-again" / "config.json").read_text())


def test_a_hub_id_pinned_to_a_revision_is_looked_up_at_that_revision(monkeypatch, tmp_path):
    import bbjtune.models.loading as loading

    src = resolve_source("Qwen/Qwen2.5-Coder-7B@v1.0")
    assert src.kind == "hub" and src.pretrained_args == ("Qwen/Qwen2.5-Coder-7B", {"revision": "v1.0"})
    assert resolve_source("Qwen/Qwen2.5-Coder-7B").pretrained_args == ("Qwen/Qwen2.5-Coder-7B", {})
    # the Hugging Face cache holds config.json for the tag v1.0 only (its on-disk layout)
    repo = tmp_path / "hf" / "hub" / "models--Qwen--Qwen2.5-Coder-7B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1.0").write_text("0123456789abcdef0123456789abcdef01234567")
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "HUB_HOST", "hub.invalid")
    loading._check_hub_reachable(src)  # cached at that revision: no network needed
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(BbjtuneError, match="not reachable"):
        loading._check_hub_reachable(resolve_source("Qwen/Qwen2.5-Coder-7B@v2.0"))
