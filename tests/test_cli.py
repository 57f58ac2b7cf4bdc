from __future__ import annotations

import pytest
from conftest import run_cli

VERBS = ["run", "inspect", "config"]


def test_top_level_help_lists_verbs():
    """Through `python -m bbjtune`, as a user runs it (test_help.py checks every verb's --help in-process)."""
    out = run_cli("--help")
    assert out.returncode == 0
    for verb in VERBS:
        assert verb in out.stdout


def assert_one_clear_error(out, *needles):
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert "error:" in out.stderr and "hint:" in out.stderr
    for n in needles:
        assert n in out.stderr


def test_unknown_preset(tmp_path):
    assert_one_clear_error(run_cli("run", "no-such-preset", cwd=tmp_path), "unknown preset")


def test_missing_config_file(tmp_path):
    assert_one_clear_error(run_cli("config", "show", "missing.yaml", cwd=tmp_path), "does not exist")


def test_bad_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nmodel: [oops\n")
    assert_one_clear_error(run_cli("run", "bad.yaml", cwd=tmp_path), "bad.yaml", "line")


def test_unreadable_config(tmp_path):
    import os

    p = tmp_path / "locked.yaml"
    p.write_text("name: x\n")
    p.chmod(0)
    if os.access(p, os.R_OK):  # root can read anything
        pytest.skip("running as root: file permissions are not enforced")
    assert_one_clear_error(run_cli("run", str(p), cwd=tmp_path), "cannot read")


def test_missing_model_source_writes_nothing(tmp_path):
    out = run_cli("inspect", "./no-model-here", cwd=tmp_path)
    assert_one_clear_error(out, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_config_check_reports_missing_data(tmp_path):
    (tmp_path / "c.yaml").write_text("name: c\ndata: {chatml: [nowhere/*.jsonl]}\ntrain: {stages: sft}\n")
    assert_one_clear_error(run_cli("config", "check", "c.yaml", cwd=tmp_path), "nowhere/*.jsonl")


def test_config_show_fills_defaults():
    out = run_cli("config", "show", "quickstart", "--set", "train.lora.r=4")
    assert out.returncode == 0, out.stderr
    assert "r: 4" in out.stdout and "learning_rate" in out.stdout


def test_inspect_tiny():
    out = run_cli("inspect", "tiny:test")
    assert out.returncode == 0, out.stderr
    assert "Qwen2ForCausalLM" in out.stdout and "Qwen ChatML with loss markers" in out.stdout
