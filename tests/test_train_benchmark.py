"""The GPU throughput benchmark runs end to end on CPU (`--smoke`) and reports missing libraries as rows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_throughput_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/train_throughput.py",
            "--smoke",
            "--groups",
            "mix",
            "--paths",
            "hf-peft,unsloth,bbjtune-hf",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = {r["path"]: r for r in result["rows"]}
    assert result["versions"]["torch"] and result["versions"]["trl"]  # what the rows ran with
    assert (tmp_path / "work" / "logs" / "mix-bbjtune-hf.log").exists()  # each worker's output is kept
    for path in ("hf-peft", "bbjtune-hf"):
        assert rows[path]["status"] == "ok", rows[path]
        assert rows[path]["useful_tokens_per_s"] > 0 and rows[path]["measured_steps"] == 1
    # packing: bbjtune feeds (almost) no padding; the padded baseline does
    assert rows["bbjtune-hf"]["padding_share"] < rows["hf-peft"]["padding_share"]
    assert "estimate_gib" in rows["bbjtune-hf"]
    if importlib.util.find_spec("unsloth") is None:
        assert rows["unsloth"]["status"].startswith("not available")
    assert "| mix | bbjtune-hf |" in proc.stdout and "| mix | unsloth | not available" in proc.stdout
