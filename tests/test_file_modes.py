"""Outputs follow the umask: Ollama, vLLM or a colleague running as another user can read them."""

from __future__ import annotations

import os
import stat

import pytest

from bbjtune.artifacts import atomic_dir, atomic_write_json, atomic_write_text, current_umask, make_temp_dir


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


def test_atomic_dir_gives_what_a_library_wrote_0600_the_umask_modes(tmp_path, umask):
    """Model, adapter and tiny-model directories are written through atomic_dir; safetensors writes 0600."""
    (tmp_path / "model").mkdir()  # an older one, replaced
    with atomic_dir(tmp_path / "model") as tmp:
        weights = tmp / "model.safetensors"
        weights.write_bytes(b"x")
        os.chmod(weights, 0o600)
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "sub" / "run.sh", 0o700)
    assert mode(tmp_path / "model") == mode(tmp_path / "model" / "sub") == 0o777 & ~umask
    assert mode(tmp_path / "model" / "model.safetensors") == 0o666 & ~umask
    assert mode(tmp_path / "model" / "sub" / "run.sh") == 0o777 & ~umask


def test_model_directories_and_their_files_are_readable_by_others(tmp_path, tiny_model_dir):
    """A merged model directory and the tiny model cache used to be 0700 whatever the umask."""
    from peft import LoraConfig, get_peft_model

    from bbjtune.models import load_model, load_tokenizer
    from bbjtune.models.tiny import build_tiny
    from bbjtune.models.merge import merge_adapters

    old = os.umask(0o022)
    try:
        built = build_tiny("tiny:test@3", cache_dir=tmp_path / "cache")
        adapter = tmp_path / "adapter"
        peft_model = get_peft_model(
            load_model(str(tiny_model_dir), dtype="float32"), LoraConfig(r=2, target_modules=["q_proj"])
        )
        peft_model.save_pretrained(adapter)
        load_tokenizer(str(tiny_model_dir)).save_pretrained(adapter)
        merged = merge_adapters(
            str(tiny_model_dir),
            [adapter],
            tmp_path / "export" / "merged",
            tokenizer_source=str(adapter),
            chat=False,
            dtype="float32",
        )
    finally:
        os.umask(old)
    for directory in (built, merged):
        assert mode(directory) == 0o755, directory
        files = [f for f in directory.iterdir() if f.is_file()]
        assert files and all(mode(f) == 0o644 for f in files), {f.name: oct(mode(f)) for f in files}
