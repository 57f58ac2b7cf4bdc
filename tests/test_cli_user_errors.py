"""What a new user sees when something is wrong: the message names the real problem first.

A config whose model does not exist is invalid (config check) and stops training before anything
complains about data; `check` says which encoding it assumed and what a binary file probably is;
counts are singular where they are one; `--version` answers.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_cli import assert_one_clear_error

import bbjtune

MISSING_MODEL = "name: nomodel\nmodel: {source: ./models/not-here}\ndata: {chatml: [data/*.jsonl]}\n"


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"bbjtune {bbjtune.__version__}"


def test_config_check_rejects_a_missing_model_naming_its_path(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(MISSING_MODEL)
    out = run_cli("config", "check", "c.yaml", cwd=tmp_path)
    assert_one_clear_error(out, "model.source", "./models/not-here", str(tmp_path / "models" / "not-here"))
    assert "valid" not in out.stderr.replace("\n", " ").split("error:")[0]


def test_config_check_rejects_an_unknown_tiny_preset(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(MISSING_MODEL.replace("./models/not-here", "'tiny:huge'"))
    assert_one_clear_error(run_cli("config", "check", "c.yaml", cwd=tmp_path), "unknown tiny model preset")


def test_train_names_the_missing_model_before_the_missing_data(tmp_path):
    (tmp_path / "c.yaml").write_text(MISSING_MODEL)
    out = run_cli("train", "c.yaml", cwd=tmp_path)
    assert_one_clear_error(out, "model source './models/not-here' does not exist")
    assert "train.jsonl" not in out.stderr


def test_check_says_which_encoding_it_assumed(tmp_path):
    (tmp_path / "latin.bbj").write_bytes('rem Kunde\nname$ = "M\xfcller"\nprint name$\n'.encode("latin-1"))
    (tmp_path / "utf8.bbj").write_text('name$ = "M\u00fcller"\n', encoding="utf-8")
    out = run_cli("check", "-c", "builtin", "latin.bbj", "utf8.bbj", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "latin.bbj: not valid UTF-8 (byte 0xFC on line 2): read as Latin-1" in out.stderr
    assert "utf8.bbj" not in out.stderr
    report = json.loads(run_cli("check", "-f", "json", "latin.bbj", "utf8.bbj", cwd=tmp_path).stdout)
    assert [f["encoding"] for f in report["files"]] == ["latin-1", "utf-8"]


def test_check_on_a_binary_file_gives_a_hint(tmp_path):
    (tmp_path / "prog.bbj").write_bytes(b"<<bbj>>\x00\x01\x02" + bytes(range(256)) * 2)
    out = run_cli("check", "prog.bbj", cwd=tmp_path)
    assert out.returncode == 1
    assert "binary data, not BBj source text" in out.stdout and "bbjlst" in out.stdout
    assert "UTF-8" not in out.stderr  # binary data is not an encoding question


def test_check_counts_in_the_singular_when_there_is_one(tmp_path):
    (tmp_path / "a.bbj").write_text('print "a" "b"\n')
    out = run_cli("check", "-c", "builtin", "a.bbj", cwd=tmp_path)
    assert "checked 1 file with builtin: 1 with errors (1 error, 0 warnings)" in out.stderr


def test_config_check_knows_random_architectures_without_building_them(tmp_path, monkeypatch):
    # a random 14B checkpoint would take minutes and ~30 GB: config check only parses the name
    monkeypatch.setenv("BBJTUNE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(MISSING_MODEL.replace("./models/not-here", "'random:qwen2.5-coder-14b'"))
    out = run_cli("config", "check", "c.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "cache").exists()
    (tmp_path / "c.yaml").write_text(MISSING_MODEL.replace("./models/not-here", "'random:qwen2.5-coder-99b'"))
    assert_one_clear_error(run_cli("config", "check", "c.yaml", cwd=tmp_path), "unknown architecture")


@pytest.mark.parametrize(
    "args",
    [
        ("check", "--compiler", "bbjc", "x.bbj"),
        ("data", "feedback", "log.sqlite", "--compiler", "bbjc"),
        ("serve", "gateway", "--upstream", "http://127.0.0.1:9/v1", "--compiler", "bbjc"),
    ],
)
def test_every_compiler_option_refuses_an_unknown_name_the_same_way(tmp_path, args):
    out = run_cli(*args, cwd=tmp_path)
    assert_one_clear_error(out, "unknown --compiler 'bbjc'")
    assert "use one of: auto, builtin, bbjcpl" in out.stderr


def test_run_says_before_training_that_the_evaluation_has_no_sandbox(tmp_path):
    """On a GPU server without the sandbox's tools, `bbjtune run` must not train for hours and then stop
    at the evaluation: it says so before the first stage, with what to do."""
    import sys
    from pathlib import Path

    res = run_cli(
        "run",
        "quickstart",
        "--set",
        f"output_dir={tmp_path}/{{name}}",
        "--set",
        "eval.humaneval.sandbox=namespaces",
        env={"PATH": str(Path(sys.executable).parent)},  # no unshare, which this sandbox mode needs
        timeout=120,
    )
    assert_one_clear_error(res, "the evaluation stage would stop after training")
    assert "unshare" in res.stderr and "eval.humaneval.enabled: false" in res.stderr
    assert not (tmp_path / "quickstart").exists()  # no stage ran
