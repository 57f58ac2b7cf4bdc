"""Source files held out of stage 1 for the fill-in-the-middle evaluation: chosen, recorded, kept apart."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from train_helpers import data_config, read_jsonl

from bbjtune.data.split import MIN_SOURCES_TO_HOLD_OUT, file_digest, split_sources

QUIET = Console(stderr=True, quiet=True)


def program(i: int) -> str:
    return f'rem program {i}\nfor i = 1 to {i + 3}\n  print "line ", i, " of {i}"\nnext i\nend\n'


def test_split_sources_is_deterministic_and_independent_of_order():
    digests = [file_digest(program(i).encode()) for i in range(40)]
    held = split_sources(digests, 0.1, seed=7)
    assert len(held) == 4
    assert split_sources(digests, 0.1, seed=7) == held
    assert split_sources(digests, 0.1, seed=8) != held
    reordered = list(reversed(digests))
    assert {digests[i] for i in held} == {reordered[i] for i in split_sources(reordered, 0.1, seed=7)}
    assert split_sources(digests[: MIN_SOURCES_TO_HOLD_OUT - 1], 0.5, seed=7) == set()
    assert split_sources(digests, 0.0, seed=7) == set()


def test_prepare_keeps_heldout_sources_out_of_training(tmp_path):
    from bbjtune.data.stage import prepare

    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"p{i:02d}.bbj").write_text(program(i), encoding="utf-8")
    (src / "copy.bbj").write_text(program(0), encoding="utf-8")  # a copy of a file that may be held out
    sources = sorted(src.glob("*.bbj"))
    chosen = {
        sources[i].name for i in split_sources([file_digest(p.read_bytes()) for p in sources], 0.1, seed=42)
    }
    # conversations derived from a source file carry its path ("source"); those of held-out files must go
    derived = tmp_path / "derived.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Explain program number {i} of the tool set please"},
                {"role": "assistant", "content": f"It loops over the lines of program {i} and prints them."},
            ],
            "source": str(src / f"p{i:02d}.bbj"),
        }
        for i in range(20)
    ]
    derived.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = data_config(tmp_path, [derived], sources=[str(src)], heldout_sources_ratio=0.1)
    out = prepare(cfg, cfg.data_dir, console=QUIET)

    held = read_jsonl(cfg.data_dir / "heldout_sources.jsonl")
    assert {Path(r["source"]).name for r in held} == chosen - {"copy.bbj"} and len(held) >= 1
    assert all(r["text"] == (src / Path(r["source"]).name).read_text() for r in held)
    cpt_sources = {Path(r["source"]).name for r in read_jsonl(cfg.data_dir / "cpt.jsonl")}
    assert not cpt_sources & {Path(r["source"]).name for r in held}
    # the copy of a held-out file is set aside as its duplicate, never trained on
    held_texts = {r["text"] for r in held}
    if program(0) in held_texts:
        assert "copy.bbj" not in cpt_sources
    rejected = read_jsonl(cfg.data_dir / "rejected.jsonl")
    from_held = [r for r in rejected if r["reason"] == "from-heldout-source"]
    assert len(from_held) == len(held)
    assert {json.loads(r["raw"])["source"] for r in from_held} == {r["source"] for r in held}
    train = read_jsonl(cfg.data_dir / "train.jsonl")
    assert len(train) == 20 - len(held) and out.counts["train"] == len(train)
    manifest = json.loads((cfg.data_dir / "manifest.json").read_text())
    assert manifest["metrics"]["heldout_sources"] == [r["source"] for r in held]
    audit = json.loads((cfg.data_dir / "audit.json").read_text())
    step = next(s for s in audit["steps"] if s["step"] == "decontaminate-heldout")
    assert step["removed"] == {"from-heldout-source": len(held)}
