"""Relative paths of presets and of built-in defaults do not depend on the current directory.

A preset's paths (`examples/...`) are relative to the project it ships in, and the default
`data.decontaminate_against: [evals/*.jsonl]` names the project's own evaluation prompts; run from
another directory, both must still find those files. A user's own relative path stays relative to
the current directory, and decontamination against files that do not exist is an error, never a
silently skipped check.
"""

from __future__ import annotations

import json

from conftest import REPO_ROOT, run_cli
from test_cli import assert_one_clear_error

from bbjtune.config import default_data_config, load_config


def test_a_preset_finds_its_files_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("quickstart")
    assert cfg.data.chatml == [str(REPO_ROOT / "examples" / "demo" / "*.jsonl")]
    assert cfg.data.decontaminate_against == [str(REPO_ROOT / "evals" / "*.jsonl")]
    assert all((REPO_ROOT / "evals").samefile(p.rsplit("/", 1)[0]) for p in cfg.eval.suites)
    assert cfg.output_dir == "runs/{name}"  # outputs still go where the user is


def test_inside_the_project_paths_keep_their_relative_names(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = load_config("quickstart")
    assert cfg.data.chatml == ["examples/demo/*.jsonl"]
    assert cfg.data.decontaminate_against == ["evals/*.jsonl"]


def test_a_user_config_keeps_its_own_paths_but_gets_the_default_eval_prompts(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.yaml").write_text("name: mine\ndata: {chatml: [data/*.jsonl]}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("cfg/mine.yaml")
    assert cfg.data.chatml == ["data/*.jsonl"]  # relative to the current directory, as documented
    assert cfg.data.decontaminate_against == [str(REPO_ROOT / "evals" / "*.jsonl")]


def test_quickstart_data_stage_from_another_directory_decontaminates(tmp_path):
    out = run_cli(
        "run", "quickstart", "--stages", "data", "--set", f"output_dir={tmp_path}/{{name}}", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "quickstart" / "data" / "manifest.json").read_text())
    inputs = {item["path"] for item in manifest["inputs"]}
    assert {
        str(REPO_ROOT / "evals" / "bbj-core.jsonl"),
        str(REPO_ROOT / "evals" / "bbj-challenge.jsonl"),
    } <= inputs
    assert "match no file" not in out.stderr


def test_decontamination_files_that_do_not_exist_are_an_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Write a BBj program that prints hello."},
                    {"role": "assistant", "content": '```bbj\nprint "hello"\n```'},
                ]
            }
        )
        + "\n"
    )
    (tmp_path / "c.yaml").write_text(
        "name: c\nmodel: {source: 'tiny:test'}\ntrain: {stages: sft}\n"
        "data: {chatml: [data/*.jsonl], decontaminate_against: [myevals/*.jsonl]}\n"
    )
    out = run_cli("data", "prepare", "c.yaml", cwd=tmp_path)
    assert_one_clear_error(
        out,
        "data.decontaminate_against: myevals/*.jsonl match no file",
        str(tmp_path),
        "decontaminate_against: []",
    )
    assert not (tmp_path / "runs" / "c" / "data" / "train.jsonl").exists()


def test_the_data_defaults_alone_find_the_eval_prompts_from_any_directory(tmp_path, monkeypatch):
    # `bbjtune data feedback LOG` without a config decontaminates against these; matching nothing is an error
    monkeypatch.chdir(tmp_path)
    assert default_data_config().decontaminate_against == [str(REPO_ROOT / "evals" / "*.jsonl")]
