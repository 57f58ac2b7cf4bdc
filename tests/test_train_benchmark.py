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
            "hf-peft,unsloth,unsloth-packed,bbjtune-hf,bbjtune-hf-liger",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--profile",
            "--lora-dropout",
            "0.05",
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
    assert result["settings"]["lora_dropout"] == 0.05
    assert (tmp_path / "work" / "logs" / "mix-bbjtune-hf.log").exists()  # each worker's output is kept
    for path in ("hf-peft", "bbjtune-hf"):
        assert rows[path]["status"] == "ok", rows[path]
        assert rows[path]["useful_tokens_per_s"] > 0 and rows[path]["measured_steps"] == 1
        assert rows[path]["lora_dropout"] == 0.05  # the worker got the option, not only the parent
    # packing: bbjtune feeds (almost) no padding; the padded baseline does
    assert rows["bbjtune-hf"]["padding_share"] < rows["hf-peft"]["padding_share"]
    assert "estimate_gib" in rows["bbjtune-hf"]
    if importlib.util.find_spec("unsloth") is None:
        assert rows["unsloth"]["status"].startswith("not available")
        assert rows["unsloth-packed"]["status"].startswith("not available")
    # Liger's kernels are Triton: no row without a GPU
    assert (
        rows["bbjtune-hf-liger"]["status"].startswith("not available")
        and "GPU" in rows["bbjtune-hf-liger"]["status"]
    )
    # --profile: one (warm-up) step of each row under torch's profiler, summarised in the row
    for path in ("hf-peft", "bbjtune-hf"):
        prof = rows[path]["profile"]
        assert prof["wall_ms"] > 0 and 0 < prof["busy_ms"] and 0 < prof["busy_share"] <= 1
        assert prof["optimizer_host_ms"] > 0  # the AdamW step was seen
        assert prof["top"] and prof["top"][0]["ms"] >= prof["top"][-1]["ms"]
    assert "Self CPU" in (tmp_path / "work" / "logs" / "mix-hf-peft.log").read_text()  # the table, in the log
    assert "| mix | bbjtune-hf |" in proc.stdout and "| mix | unsloth | not available" in proc.stdout


def test_the_table_says_which_rows_ran_without_checkpointing():
    from conftest import benchmark_module

    bench = benchmark_module("train_throughput")
    common = {"group": "mix", "status": "ok", "peak_allocated_gib": 17.0, "mfu": 0.3}
    rows = [
        {**common, "path": "unsloth-packed", "tokens_per_s": 7000.0, "useful_tokens_per_s": 7000.0},
        {
            **common,
            "path": "bbjtune-unsloth",
            "tokens_per_s": 7000.0,
            "useful_tokens_per_s": 7000.0,
            "gradient_checkpointing": True,
        },
        {
            **common,
            "path": "bbjtune-unsloth-auto",
            "tokens_per_s": 11900.0,
            "useful_tokens_per_s": 11900.0,
            "gradient_checkpointing": False,
        },
    ]
    table = bench.markdown(rows)
    assert "| mix | bbjtune-unsloth-auto (checkpointing off) | 11,900 |" in table
    assert "| mix | bbjtune-unsloth | 7,000 |" in table  # on: no mark
    assert table.splitlines()[-1].endswith("| 1.70x |")  # against the best Unsloth row of its group
