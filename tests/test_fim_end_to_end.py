"""Fill-in-the-middle end to end on the tiny model: `bbjtune run` data → train → eval, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_cli


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_fim_trains_and_evaluates_end_to_end(tmp_path, tiny_model_dir):
    cfg = {
        "name": "fim",
        "output_dir": str(tmp_path / "{name}"),
        "model": {"source": str(tiny_model_dir), "kind": "base", "dtype": "float32"},
        "data": {
            "chatml": [str(REPO_ROOT / "examples/chatml/*.jsonl")],
            "sources": [str(REPO_ROOT / "examples/programs")],
            "heldout_sources_ratio": 0.15,
        },
        "train": {
            "backend": "hf",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            "quantization": {"load_in_4bit": False},
            "optim": "adamw_torch",
            "gradient_checkpointing": False,
            "cpu_threads": 1,
            "logging_steps": 1,
            "cpt": {
                "max_steps": 2,
                "max_length": 256,
                "per_device_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "fim_rate": 0.5,
                "fim_repo_rate": 0.5,
            },
            "sft": {
                "max_steps": 2,
                "max_length": 512,
                "per_device_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "stop_check": 0,
            },
        },
        "eval": {
            "temperature": 0.0,
            "max_new_tokens": 4,
            "limit": 1,
            "batch_size": 8,
            "compiler": "builtin",
            "humaneval": {"enabled": False},
            "fim": {"samples": 6, "max_new_tokens": 4},
        },
        "export": {"vllm": {"enabled": False}},
    }
    path = tmp_path / "fim.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run_cli("run", str(path), "--stages", "data,train,eval")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "fim"

    held = read_jsonl(run / "data" / "heldout_sources.jsonl")
    assert len(held) == 4  # 15% of 28 programs
    assert not {r["source"] for r in held} & {r["source"] for r in read_jsonl(run / "data" / "cpt.jsonl")}
    fim = json.loads((run / "cpt" / "manifest.json").read_text())["metrics"]["fim"]
    assert fim["fim_samples"] > 0 and fim["by_kind"].get("repo", 0) > 0

    for label in ("base", "tuned"):
        results = json.loads((run / "eval" / label / "results.json").read_text())
        assert results["fim"]["n_cases"] == 6, label
        cases = read_jsonl(run / "eval" / label / "fim_cases.jsonl")
        assert {c["source"] for c in cases} <= {r["source"] for r in held}  # holes only in held-out files
    compare = json.loads((run / "eval" / "compare" / "results.json").read_text())
    assert "FIM compile@1" in compare["tiers"]
    assert "FIM (6 holes)" in out.stderr
