from __future__ import annotations

import json

import pytest

from bbjtune.artifacts import (
    StageRun,
    atomic_open,
    atomic_write_json,
    atomic_write_jsonl,
    read_manifest,
    sha256_file,
)
from bbjtune.errors import BbjtuneError


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    atomic_write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write('{"half": ')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"], "no temp file may be left behind"


def test_atomic_json_and_sha(tmp_path):
    p = atomic_write_json(tmp_path / "x" / "m.json", {"k": [1, 2], "path": tmp_path})
    assert json.loads(p.read_text())["k"] == [1, 2]
    import hashlib

    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_stage_run_manifest_records_inputs_status_and_metrics(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    with StageRun(tmp_path / "run", stage="data", config={"seed": 1}) as run:
        run.add_inputs([src])
        with run.timed("step"):
            run.metrics["kept"] = 3
        assert read_manifest(run.dir)["status"] == "running"
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "complete" and m["stage"] == "data" and m["metrics"] == {"kept": 3}
    assert m["inputs"][0]["sha256"] == sha256_file(src) and m["inputs"][0]["bytes"] == 5
    assert "step_s" in m["timings"] and "total_s" in m["timings"]
    assert m["versions"]["torch"] and m["config"] == {"seed": 1}
    # no GPU here; a Python process that imported bbjtune holds well over 20 MiB
    assert m["peaks"]["peak_gpu_gib"] is None and 0.02 < m["peaks"]["peak_ram_gib"] < 24


def test_stage_run_marks_failures(tmp_path):
    with pytest.raises(ValueError):
        with StageRun(tmp_path / "run", stage="train"):
            raise ValueError("boom")
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and m["error"] == "boom"


def test_read_manifest_of_missing_dir_is_a_user_error(tmp_path):
    with pytest.raises(BbjtuneError):
        read_manifest(tmp_path / "nothing")


def test_atomic_dir_replaces_a_directory_only_when_the_new_one_is_complete(tmp_path):
    from bbjtune.artifacts import atomic_dir

    final = tmp_path / "adapter"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("first")
    assert (final / "weights").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed while saving")
    assert (final / "weights").read_text() == "first"  # the old directory is still there, whole
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("second")
    assert (final / "weights").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary or old directory left behind
    with atomic_dir(final, keep_existing=True) as tmp:  # a cache entry another process finished first
        (tmp / "weights").write_text("third")
    assert (final / "weights").read_text() == "second"


def test_complete_jsonl_lines_only(tmp_path):
    from bbjtune.artifacts import read_complete_jsonl

    path = tmp_path / "generations.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n{"a": 3, "tor', encoding="utf-8")
    assert read_complete_jsonl(path) == [{"a": 1}, {"a": 2}]  # a torn last line and a bad line are dropped
    assert read_complete_jsonl(tmp_path / "missing.jsonl") == []
