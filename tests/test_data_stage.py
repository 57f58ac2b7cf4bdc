"""The data stage on real inputs: the project's examples (as `bbjtune run` uses them) and real BBj code."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli

SOURCE_EXTENSIONS = (".bbj", ".src", ".bbjt", ".bbl", ".txt")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_pipeline_finds_the_data_stage():
    from bbjtune.data.stage import run_stage
    from bbjtune.pipeline import STAGES

    assert STAGES["data"] is run_stage


def test_data_help_names_the_exit_codes():
    for verb in ("audit", "prepare"):
        out = run_cli("data", verb, "--help")
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert "Exit codes: 0" in text and "1 —" in text and "2 —" in text


def test_quickstart_data_stage_on_the_examples(tmp_path):
    """`bbjtune run quickstart --stages data`: the shipped examples go through without loss."""
    chatml = sorted((REPO_ROOT / "examples" / "chatml").glob("*.jsonl"))
    programs = sorted(
        p for p in (REPO_ROOT / "examples" / "programs").glob("*") if p.suffix in SOURCE_EXTENSIONS
    )
    if not chatml or not programs:
        pytest.skip("examples/ has no ChatML or programs yet")
    # the demo itself trains stage 2 on the short examples/demo/; these are the examples real presets use
    out = run_cli(
        "run",
        "quickstart",
        "--stages",
        "data",
        "--set",
        f"output_dir={tmp_path}/{{name}}",
        "--set",
        "data.chatml=[examples/chatml/*.jsonl]",
        "--set",
        "train.sft.max_length=1024",
    )
    assert out.returncode == 0, out.stderr
    data = tmp_path / "quickstart" / "data"
    n_lines = sum(1 for f in chatml for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    train, heldout = read_jsonl(data / "train.jsonl"), read_jsonl(data / "heldout.jsonl")
    rejected = read_jsonl(data / "rejected.jsonl")
    assert rejected == [], rejected[:3]  # the project's own examples are clean
    assert len(train) + len(heldout) == n_lines
    assert 0.05 <= len(heldout) / n_lines <= 0.10
    audit = json.loads((data / "audit.json").read_text())
    assert audit["code"]["blocks_failed"] == 0 and audit["split"]["prompts_on_both_sides"] == 0
    assert audit["system_prompts"]["distinct"] == 1
    cpt = read_jsonl(data / "cpt.jsonl")
    sources = {r["source"] for r in cpt}
    held = {r["source"] for r in read_jsonl(data / "heldout_sources.jsonl")}  # kept for the FIM evaluation
    assert len(held) == 1 and not held & sources
    assert {f"examples/programs/{p.name}" for p in programs} == (
        sources - {s for s in sources if s.startswith("chatml:")}
    ) | held
    train_ids = {r["id"] for r in train}
    assert {s.removeprefix("chatml:") for s in sources if s.startswith("chatml:")} <= train_ids
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["train"] == len(train)


def test_cpt_corpus_from_real_bbj_keeps_every_file(corpus_dir, tiny_model_dir, tmp_path):
    """Every real source file ends up in cpt.jsonl (chunks that join back into the file's text,
    with provenance) or in rejected.jsonl with a reason; none is lost."""
    from bbjtune.config import validate_config
    from bbjtune.data.cpt import decode_source
    from bbjtune.data.scrub import scrub_text
    from bbjtune.data.stage import prepare

    real = corpus_dir / "real"
    cfg = validate_config(
        {
            "name": "corpus",
            "model": {"source": str(tiny_model_dir)},
            "train": {"stages": "cpt"},
            "data": {"sources": [str(real)], "cpt_chunk_tokens": 256},
        }
    )
    outcome = prepare(cfg, tmp_path / "out")
    rows = read_jsonl(tmp_path / "out" / "cpt.jsonl")
    rejected = {r["file"]: r for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    held = {r["source"]: r["text"] for r in read_jsonl(tmp_path / "out" / "heldout_sources.jsonl")}
    assert len(held) >= 3  # 5% of the real files, for the fill-in-the-middle evaluation
    chunks: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        chunks[r["source"]].append(r)
    files = sorted(p for p in real.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_EXTENSIONS)
    assert len(files) > 50
    for path in files:
        name = str(path)
        assert (name in chunks) + (name in rejected) + (name in held) == 1, f"{path} is lost or written twice"
        if name in held:
            assert held[name] == scrub_text(decode_source(path.read_bytes())[0])[0]
            continue
        if name in rejected:
            assert rejected[name]["reason"] in ("duplicate-file", "empty-file", "binary-file"), rejected[name]
            continue
        parts = chunks[name]
        assert [p["chunk"] for p in parts] == list(range(len(parts))) and {p["n_chunks"] for p in parts} == {
            len(parts)
        }
        text, _ = decode_source(path.read_bytes())
        assert "".join(p["text"] for p in parts) == scrub_text(text)[0]
        for part in parts[1:]:
            assert not part["text"].startswith(":"), "a chunk starts inside a continued line"
    assert outcome.audit["cpt"]["files"] == len(files)
    assert outcome.audit["cpt"]["oversized_chunks"] <= len(rows) // 20
