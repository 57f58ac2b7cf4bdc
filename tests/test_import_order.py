"""Unsloth must be imported before transformers, peft and trl (it patches them as it loads): the command
line imports it first when the run may train with it.

Unsloth itself needs a CUDA GPU, so here a stand-in package named `unsloth` records, as it is imported,
which of those libraries were already loaded; the command then stops as it would without a GPU."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli

RECORDER = """
import json, os, sys
with open(os.environ["UNSLOTH_RECORD"], "w") as fh:
    json.dump({m: m in sys.modules for m in ("torch", "transformers", "peft", "trl")}, fh)
"""


@pytest.fixture
def stand_in(tmp_path):
    package = tmp_path / "site" / "unsloth"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(RECORDER)
    record = tmp_path / "record.json"
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
        "UNSLOTH_RECORD": str(record),
    }
    return env, record


@pytest.mark.parametrize("verb", [["train", "quickstart"], ["run", "quickstart", "--stages", "train"]])
def test_a_run_with_the_unsloth_backend_imports_it_before_transformers(tmp_path, stand_in, verb):
    env, record = stand_in
    out = run_cli(
        *verb,
        "--set",
        "train.backend=unsloth",
        "--set",
        f"output_dir={tmp_path}/{{name}}",
        env=env,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    loaded = json.loads(record.read_text())
    assert loaded == {"torch": loaded["torch"], "transformers": False, "peft": False, "trl": False}


def test_the_hf_backend_and_a_dry_run_leave_unsloth_alone(tmp_path, stand_in):
    env, record = stand_in
    for args in (["--set", "train.backend=hf"], ["--set", "train.backend=unsloth", "--dry-run"]):
        out = run_cli(
            "train", "quickstart", *args, "--set", f"output_dir={tmp_path}/{{name}}", env=env, timeout=300
        )
        # past the point where Unsloth would be imported: the stage itself stops it (no prepared data)
        assert out.returncode == 2 and "data prepare" in out.stderr, out.stderr[-2000:]
        assert not record.exists(), args
