"""A tokenizer that lost Qwen's control tokens as added tokens gets them back on load.

transformers 5.17 converted the Qwen2.5-Coder GGUF's tokenizer with only <|endoftext|>, <|im_start|>
and <|im_end|> as added tokens (seen on the GPU machine; 5.25 keeps all 22). Saved with every adapter,
that tokenizer split `<|fim_prefix|>` into `<`, `|`, `f`, ... so no tuned model could be asked for a
completion. The fixture rebuilds that state from the tiny tokenizer: the control tokens stay in the
vocabulary (as in the GGUF's) but are no longer added tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bbjtune.models.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME
from bbjtune.models.loading import load_tokenizer, restore_control_tokens

KEPT = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TEXT = f"{FIM_PREFIX}a = 1\n{FIM_SUFFIX}print a\n{FIM_MIDDLE}"


@pytest.fixture()
def stripped_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    out = tmp_path / "stripped"
    shutil.copytree(tiny_model_dir, out)
    path = out / "tokenizer.json"
    data = json.loads(path.read_text())
    assert any(a["content"] == FIM_PREFIX for a in data["added_tokens"])
    for a in data["added_tokens"]:  # every token in the plain vocabulary with its id, as in a GGUF's
        data["model"]["vocab"][a["content"]] = a["id"]
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] in KEPT]
    path.write_text(json.dumps(data))
    config = out / "tokenizer_config.json"
    if config.exists():
        cfg = json.loads(config.read_text())
        decoder = cfg.get("added_tokens_decoder", {})
        cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if v.get("content") in KEPT}
        cfg.pop("additional_special_tokens", None)
        cfg.pop("extra_special_tokens", None)
        config.write_text(json.dumps(cfg))
    return out


def test_the_fixture_reproduces_split_control_tokens(stripped_dir: Path) -> None:
    plain = AutoTokenizer.from_pretrained(stripped_dir)
    assert len(plain(FIM_PREFIX, add_special_tokens=False)["input_ids"]) > 1


def test_load_tokenizer_makes_each_control_token_one_token_with_its_vocabulary_id(
    stripped_dir: Path, tiny_model_dir: Path
) -> None:
    original = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = load_tokenizer(str(stripped_dir))
    vocab = tok.get_vocab()
    for token in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, REPO_NAME, "<tool_call>"):
        assert tok(token, add_special_tokens=False)["input_ids"] == [vocab[token]]
        assert vocab[token] == original.get_vocab()[token]
    assert (
        tok(TEXT, add_special_tokens=False)["input_ids"]
        == original(TEXT, add_special_tokens=False)["input_ids"]
    )
    assert len(tok) == len(original)
    # still plain text to decoding (as in Qwen's tokenizer, FIM tokens are not special)
    assert FIM_PREFIX in tok.decode(
        tok(TEXT, add_special_tokens=False)["input_ids"], skip_special_tokens=True
    )


def test_the_restored_tokens_survive_saving(stripped_dir: Path, tmp_path: Path) -> None:
    load_tokenizer(str(stripped_dir)).save_pretrained(tmp_path / "saved")
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    ids = again(FIM_PREFIX, add_special_tokens=False)["input_ids"]
    assert ids == [again.get_vocab()[FIM_PREFIX]]


def test_a_complete_tokenizer_is_left_as_it_is(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert restore_control_tokens(tok) == []


def test_a_merge_for_export_writes_the_fim_tokens_for_llama_cpp(stripped_dir: Path, tmp_path: Path) -> None:
    # What reaches Ollama: the merged directory's tokenizer.json is what the GGUF writer reads. FIM
    # tokens typed NORMAL there would be split by llama.cpp like any other text.
    import gguf

    from bbjtune.export.gguf import read_vocab
    from bbjtune.models.merge import merge_adapters

    merged = merge_adapters(
        str(stripped_dir),
        [],
        tmp_path / "merged",
        tokenizer_source=str(stripped_dir),
        chat=True,
        dtype="float32",
    )
    vocab_size = json.loads((merged / "config.json").read_text())["vocab_size"]
    vocab = read_vocab(merged, vocab_size)
    for token in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, REPO_NAME):
        assert vocab.types[vocab.tokens.index(token)] == gguf.TokenType.USER_DEFINED
