"""data.self_replay: the data stage makes the model's own general answers and mixes them in as replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_cli
import test_data_replay
from test_data_replay import ADD, ADD_ANSWER, chat, read_jsonl
from train_helpers import write_jsonl

from bbjtune.data import replay
from bbjtune.models.backend import make_backend

OTHER = "Explain what a hash map is, with an example in Java."
DEMO = REPO_ROOT / "examples" / "demo" / "short-programs.jsonl"
answering_model = test_data_replay.answering_model  # the fixture: tiny:test trained to answer ADD


def write_config(tmp_path: Path, model: str, kind: str, self_replay: dict, **train) -> Path:
    raw = {
        "name": "sr",
        "output_dir": str(tmp_path / "run"),
        "model": {"source": model, "kind": kind, "dtype": "float32"},
        "data": {"chatml": [str(DEMO)], "self_replay": self_replay},
        "train": {"stages": "sft", **train},
    }
    path = tmp_path / "sr.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_the_data_stage_makes_the_answers_once_and_prepare_keeps_them(answering_model, tmp_path):
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"id": "add", "prompt": ADD}, {"id": "map", "prompt": OTHER}]
    )
    config = write_config(
        tmp_path,
        str(answering_model),  # an Instruct model answers itself: no data.self_replay.model
        "instruct",
        {"enabled": True, "prompts": str(prompts), "samples": 1, "max_new_tokens": 40},
    )
    first = run_cli("data", "prepare", str(config))
    assert first.returncode in (0, 1), first.stderr[-2000:]
    made = tmp_path / "run" / "replay" / "self-distilled.jsonl"
    rows = read_jsonl(made)
    assert chat(ADD, ADD_ANSWER)["messages"] in [r["messages"] for r in rows]  # the model's own answer
    assert {r["prompt_id"] for r in rows} <= {"add", "map"}
    text = " ".join(first.stderr.split())
    assert f"data.self_replay: {len(rows)} answers written to {made}" in text

    data = tmp_path / "run" / "data"
    kept = read_jsonl(data / "replay.jsonl")  # read as if listed under data.replay
    assert chat(ADD, ADD_ANSWER)["messages"] in [r["messages"] for r in kept] and len(kept) <= len(rows)
    manifest = json.loads((data / "manifest.json").read_text())
    record = manifest["metrics"]["self_replay"]
    assert record["model"] == str(answering_model) and record["prompts"] == 2 and record["samples"] == 1
    assert record["answers"] == len(rows) and record["kept"] == len(kept) == manifest["metrics"]["replay"]
    assert record["prompts_asked"] == 2 and record["answers"] + record["cut_off"] == 2
    assert any(i["path"].endswith("self-distilled.jsonl") for i in manifest["inputs"])  # hashed
    audit = json.loads((data / "audit.json").read_text())
    assert audit["replay"]["self_distilled"] == record
    assert "made by data.self_replay" in (data / "report.html").read_text()
    said = " ".join(first.stdout.split())
    assert f"{len(kept)} of them from data.self_replay: {len(rows)} answers by {answering_model}" in said

    before = made.read_bytes()
    again = run_cli("data", "prepare", str(config))
    assert again.returncode == first.returncode, again.stderr[-2000:]
    text = " ".join(again.stderr.split())
    assert "0 answers written" in text and "2 prompts asked before" in text  # nobody answered again
    assert made.read_bytes() == before
    again_record = json.loads((data / "manifest.json").read_text())["metrics"]["self_replay"]
    assert again_record["written_now"] == 0 and again_record["answers"] == record["answers"]


def test_an_unfinished_file_is_finished_and_other_settings_start_over(tiny_model_dir, tmp_path):
    """The log beside the answers: prompts asked (cut off too) are not asked again; new settings are."""
    out = tmp_path / "self-distilled.jsonl"
    prompts = [{"id": "a", "prompt": "Sort a list in Python."}, {"id": "b", "prompt": OTHER}]

    def backend():
        return make_backend("transformers", model=str(tiny_model_dir), batch_size=2)

    def ask(rows, max_new_tokens=16, factory=backend):
        return replay.generate(
            factory, rows, out, model_name="m", system=None, samples=1, temperature=0.0,
            max_new_tokens=max_new_tokens, seed=0,
        )  # fmt: skip

    first = ask(prompts[:1])  # a run that stopped after the first prompt
    assert first.cut_off == 1 and first.written == 0  # the random model runs out of tokens

    def must_not_load():
        raise AssertionError("a prompt was asked twice")

    assert ask(prompts[:1], factory=must_not_load).skipped_done == 1  # cut off once: not asked again
    rest = ask(prompts)
    assert rest.skipped_done == 1 and rest.cut_off == 1  # only the prompt not asked yet
    assert replay.generation_totals(out) == {"answers": 0, "prompts_asked": 2, "cut_off": 2, "failed": 0}
    other = ask(prompts, max_new_tokens=17)  # other settings: the answers of the old ones do not count
    assert other.skipped_done == 0 and other.cut_off == 2
    log = read_jsonl(replay.log_path(out))
    assert log[0]["settings"]["max_new_tokens"] == 17 and len(log) == 3


def test_a_base_model_without_an_answering_model_is_refused(tmp_path):
    config = write_config(tmp_path, "tiny:test", "base", {"enabled": True})
    for args in (("config", "check", str(config)), ("data", "prepare", str(config)), ("run", str(config))):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        text = " ".join(out.stderr.split())
        assert "is a Base model" in text and "set data.self_replay.model to its Instruct sibling" in text
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # refused before any stage started


def test_config_check_and_the_dry_run_do_not_generate(tmp_path):
    sr = {"enabled": True, "model": "tiny:test", "samples": 2}
    config = write_config(tmp_path, "tiny:test", "base", sr, sft={"max_length": 256})
    made = tmp_path / "run" / "replay" / "self-distilled.jsonl"
    check = run_cli("config", "check", str(config))
    assert check.returncode == 0, check.stderr
    text = " ".join((check.stdout + check.stderr).split())
    assert (
        f"data.self_replay: the data stage has tiny:test answer the general prompts 2 time(s) each into {made}"
        in text
    )
    prepared = run_cli("data", "prepare", str(config), "--set", "data.self_replay.enabled=false")
    assert prepared.returncode in (0, 1), prepared.stderr[-2000:]
    dry = run_cli("train", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert not made.exists() and not made.parent.exists()

    skipped = run_cli("config", "check", str(config), "--set", "train.sft.replay_ratio=0")
    assert "data.self_replay: not made, train.sft.replay_ratio is 0" in " ".join(skipped.stderr.split())


@pytest.mark.parametrize("size", ["7b", "14b", "32b"])
def test_the_presets_replay_with_the_measured_recipe(size):
    from bbjtune.config import load_config

    for kind in ("base", "instruct"):
        cfg = load_config(f"qwen2.5-coder-{size}-{kind}")
        s = cfg.data.self_replay
        assert s.enabled and s.samples == 2 and s.temperature == 0.7 and s.prompts is None
        assert cfg.train.sft.replay_ratio == 0.2
        # the Instruct model of the same size answers: the preset's own, or the Base model's sibling
        assert (s.model or cfg.model.source) == f"Qwen/Qwen2.5-Coder-{size.upper()}-Instruct"
    # the quickstart's random tiny model answers nothing worth keeping
    assert not load_config("quickstart").data.self_replay.enabled


def test_a_real_answering_model_is_refused_on_a_machine_without_a_gpu(tmp_path):
    """A 7B answering 160 prompts on a CPU would take days: the data stage stops before loading it,
    with what to do, and before anything of the run is written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, where the answering model may load")
    config = write_config(
        tmp_path,
        "tiny:test",
        "base",
        {"enabled": True, "model": "Qwen/Qwen2.5-Coder-7B-Instruct", "samples": 2},
    )
    out = run_cli("data", "prepare", str(config))
    text = " ".join(out.stderr.split())
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "Qwen/Qwen2.5-Coder-7B-Instruct (7.6B parameters)" in text and "CPU" in text
    assert "GPU machine" in text and "data.self_replay.enabled: false" in text
    assert not (tmp_path / "run" / "data").exists()
