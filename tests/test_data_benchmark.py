"""The data benchmark still runs, and finds the defects it plants (300 examples, --smoke)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_data_speed_smoke_finds_what_it_planted(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "data_speed.py"),
            "--smoke",
            "--model",
            "tiny:test",
            "--keep",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["results"][0]
    planted, rejected = result["planted"], result["rejected"]
    assert rejected.get("malformed-json", 0) == planted["malformed"]
    assert rejected.get("too-short", 0) == planted["fragment"]
    assert planted["truncated"] - 1 <= rejected.get("truncated", 0) <= planted["truncated"]
    assert planted["repeated_prompt"] - 2 <= rejected.get("duplicate-prompt", 0) <= planted["repeated_prompt"]
    assert result["train"] + result["heldout"] + sum(rejected.values()) == result["examples"]
    assert result["audit_peak_rss_mib"] > 0 and result["prepare_s"] > 0
    audit = json.loads((tmp_path / "out-300" / "audit.json").read_text())
    assert audit["answers"]["escapes_fixed"] == planted["escapes"]
    assert audit["scrubbed"]["by_kind"] == {"password": planted["secret"], "email": planted["secret"]}
