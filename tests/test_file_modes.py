"""Outputs follow the umask: Ollama, vLLM or a colleague running as another user can read them."""

from __future__ import annotations

import os
import stat

import pytest

from bbjtune.artifacts import atomic_write_json, atomic_write_text, current_umask, make_temp_dir


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert mode(written) == mode(plain) == 0o666 & ~umask
    assert mode(atomic_write_json(tmp_path / "sub" / "m.json", {})) == 0o666 & ~umask


def test_directories_renamed_into_place_get_the_mode_mkdir_would_give(tmp_path, umask):
    (tmp_path / "plain").mkdir()
    tmp = make_temp_dir(tmp_path, prefix=".model.")
    os.replace(tmp, tmp_path / "model")
    assert mode(tmp_path / "model") == mode(tmp_path / "plain") == 0o777 & ~umask


def test_model_directories_and_their_files_are_readable_by_others(tmp_path, tiny_model_dir):
    """A merged model directory and the tiny model cache used to be 0700 whatever the umask."""
    from peft import LoraConfig, get_peft_model

    from bbjtune.models import load_model, load_tokenizer
    from bbjtune.models.tiny import build_tiny
    from bbjtune.train.merge import merge_adapter

    old = os.umask(0o022)
    try:
        built = build_tiny("tiny:test@3", cache_dir=tmp_path / "cache")
        adapter = tmp_path / "adapter"
        peft_model = get_peft_model(load_model(str(tiny_model_dir), dtype="float32"),
                                    LoraConfig(r=2, target_modules=["q_proj"]))
        peft_model.save_pretrained(adapter)
        load_tokenizer(str(tiny_model_dir)).save_pretrained(adapter)
        merged = merge_adapter(str(tiny_model_dir), adapter, tmp_path / "export" / "merged", dtype="float32")
    finally:
        os.umask(old)
    for directory in (built, merged):
        assert mode(directory) == 0o755, directory
        files = [f for f in directory.iterdir() if f.is_file()]
        assert files and all(mode(f) == 0o644 for f in files), {f.name: oct(mode(f)) for f in files}
