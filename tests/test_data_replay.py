"""Replay: general conversations made from the model's own answers, cleaned by prepare, mixed into stage 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli
from train_helpers import overfit_chat, write_jsonl

ADD = "Write a Python function that adds two numbers."
ADD_ANSWER = "def add(a, b):\n    return a + b"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chat(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def answering_model(tiny_model_dir, tmp_path_factory):
    """tiny:test trained until it answers ADD with ADD_ANSWER and ends its turn; saved to disk."""
    out = tmp_path_factory.mktemp("answering-model")
    assert (
        overfit_chat(tiny_model_dir, chat(ADD, ADD_ANSWER)["messages"], out, steps=300, stop_below=0.05)
        < 0.05
    )
    return out


def test_replay_writes_the_models_answers_and_resumes(answering_model, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "add", "prompt": ADD, "language": "python"}])
    out = tmp_path / "replay.jsonl"
    out.write_text('{"messages": [{"role": "user", "con')  # a run killed in the middle of a line
    args = (
        "data",
        "replay",
        "--model",
        str(answering_model),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--max-new-tokens",
        "40",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    rows = read_jsonl(out)  # the torn line is gone; every line parses
    assert len(rows) == 1 and rows[0]["prompt_id"] == "add" and rows[0]["language"] == "python"
    assert rows[0]["messages"] == chat(ADD, ADD_ANSWER)["messages"]  # the model's own answer, as ChatML
    assert rows[0]["source"].startswith("self:")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "1 prompts asked before" in again.stderr and len(read_jsonl(out)) == 1  # nothing asked twice


def test_replay_through_an_openai_compatible_server(tmp_path):
    """A team that serves the Instruct model (vLLM, Ollama) lets the server answer: --backend http."""
    import threading
    from http.server import ThreadingHTTPServer

    from test_eval_generate import (
        FakeOpenAI,  # answers every prompt with a BBj block quoting it; "empty" with ""
    )

    FakeOpenAI.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prompts = write_jsonl(
            tmp_path / "p.jsonl", [{"id": "a", "prompt": "Sort a list."}, {"id": "b", "prompt": "empty"}]
        )
        out = tmp_path / "r.jsonl"
        proc = run_cli(
            "data",
            "replay",
            "--backend",
            "http",
            "--base-url",
            f"http://127.0.0.1:{server.server_address[1]}/v1",
            "--model",
            "served-instruct",
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--samples",
            "2",
            "--system",
            "You are a helpful programmer.",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out)
    assert [r["prompt_id"] for r in rows] == ["a", "a"]  # two samples; the empty answers are left out
    assert rows[0]["messages"][-1]["content"] == '```bbj\nprint "Sort a list."\nend\n```'
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are a helpful programmer."}
    assert "2 left out" in " ".join(proc.stderr.split())
    calls = [c for c in FakeOpenAI.calls if c.get("messages")]
    assert {c["model"] for c in calls} == {"served-instruct"} and {c["temperature"] for c in calls} == {0.7}
    assert len({c["seed"] for c in calls if c["messages"][-1]["content"] == "Sort a list."}) == 2


def test_replay_that_finishes_nothing_says_what_to_do(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Sort a list in Python."}])
    out = run_cli(
        "data",
        "replay",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--max-new-tokens",
        "16",
    )
    assert out.returncode != 0
    assert "finished none of its answers" in out.stderr and "--max-new-tokens" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_base_model_is_not_asked_to_answer(tmp_path):
    out = run_cli("data", "replay", "quickstart", "--limit", "1", "--out", str(tmp_path / "r.jsonl"))
    assert out.returncode == 2 and "is a Base model" in out.stderr and "--model" in out.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_bad_prompt_file_names_file_and_line(tmp_path):
    from bbjtune.data.replay import load_prompts
    from bbjtune.errors import BbjtuneError

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, "{not json", {"prompt": "x"}])
    with pytest.raises(BbjtuneError, match=r"p\.jsonl:2"):
        load_prompts(path)


def test_shipped_general_prompts_load_and_are_not_benchmark_prompts():
    from bbjtune.data.replay import DEFAULT_PROMPTS, benchmark_prompts, load_prompts
    from bbjtune.decontamination import ContaminationIndex

    rows = load_prompts(DEFAULT_PROMPTS)
    assert len(rows) == 160 and len({r["id"] for r in rows}) == len(rows)
    assert {r["language"] for r in rows} >= {
        "python",
        "java",
        "javascript",
        "typescript",
        "sql",
        "shell",
        "go",
        "csharp",
    }
    assert len({r["prompt"] for r in rows}) == len(rows)
    index = ContaminationIndex(8, 0.5)
    for label, prompt in benchmark_prompts(lambda message: None):
        index.add(label, prompt)
    assert len(index) == 164  # HumanEval is installed for the tests
    assert [r["id"] for r in rows if index.match(r["prompt"])] == []


@pytest.mark.slow  # trains a tiny model
def test_prepare_cleans_replay_and_stage_two_mixes_it(tmp_path):
    from bbjtune.humaneval_problems import load_problems

    eval_prompt = json.loads((REPO_ROOT / "evals" / "bbj-core.jsonl").read_text().splitlines()[0])["prompt"]
    humaneval = load_problems(1)[0]["prompt"]
    good = [
        chat(
            f"Write a Python function number {i} that returns {i} squared.",
            f"def f{i}():\n    return {i * i}",
        )
        for i in range(40)
    ]
    replay_file = write_jsonl(
        tmp_path / "general.jsonl",
        [
            *good,
            "{broken json",  # line 41
            good[0],  # 42: duplicate
            chat("Say something.", "ok"),  # 43: too short
            chat(humaneval, "    return sorted(numbers)[0]  # long enough answer"),  # 44: HumanEval prompt
            chat(eval_prompt, "A long enough answer about reading notes.txt."),  # 45: a BBj eval prompt
            chat(
                "Explain recursion.", "Recursion is when a function calls itself, for example"
            ),  # 46: cut off
            chat(
                "List the numbers.", "\n".join(f"print({i})" for i in range(2000))
            ),  # 47: longer than max_length
        ],
    )
    examples = REPO_ROOT / "examples" / "chatml" / "bbj-instructions.jsonl"
    out = run_cli(
        "data",
        "prepare",
        "--chatml",
        str(examples),
        "--model",
        "tiny:test",
        "--out",
        str(tmp_path / "d"),
        "--set",
        f"data.replay=['{replay_file}']",
    )
    assert out.returncode == 1, out.stderr  # lines were set aside
    data = tmp_path / "d"
    replay = read_jsonl(data / "replay.jsonl")
    assert len(replay) == 40 and all(r["messages"][0]["role"] == "user" for r in replay)
    rejected = {r["line"]: r for r in read_jsonl(data / "rejected.jsonl") if r.get("replay")}
    assert {n: r["reason"] for n, r in rejected.items()} == {
        41: "replay-malformed-json",
        42: "replay-duplicate",
        43: "replay-too-short",
        44: "replay-overlaps-eval",
        45: "replay-overlaps-eval",
        46: "replay-truncated",
        47: "replay-too-long",
    }
    assert "HumanEval/0" in rejected[44]["detail"] and rejected[42]["raw"] == json.dumps(good[0])
    assert all(r["file"] == str(replay_file) for r in rejected.values())
    audit = json.loads((data / "audit.json").read_text())
    assert audit["replay"]["kept"] == 40 and audit["replay"]["checked_against_prompts"] >= 164 + 176
    assert "replay: 40 general conversations" in out.stdout
    report = (data / "report.html").read_text()
    assert "Replay (replay.jsonl)" in report and "replay-overlaps-eval 2" in report
    assert json.loads((data / "manifest.json").read_text())["metrics"]["replay"] == 40

    from bbjtune.train import sft
    from bbjtune.train.inputs import load_training_data

    training = load_training_data(data, ["sft"])
    assert len(training.replay) == 40 and data / "replay.jsonl" in training.files
    n_bbj = len(training.conversations)
    sample = training.replay_sample(0.2, seed=1)
    assert len(sample) == round(0.25 * n_bbj) < 40  # 20% of the mix
    assert training.replay_sample(0.2, seed=1) == sample  # the same seed, the same sample
    assert training.replay_sample(0.0, seed=1) == [] and len(training.replay_sample(0.9, seed=1)) == 40
    train, _ = sft._setup_data(training, sample)
    assert len(train) == n_bbj + len(sample)

    import yaml
    from train_helpers import make_config

    from bbjtune.models.tiny import build_tiny

    cfg = make_config(
        tmp_path, build_tiny("tiny:test"), data_dir=data, train__sft__max_steps=1, train__sft__max_length=512
    )
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    dry = run_cli("train", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"stage 2 mixes {len(sample)} of 40 general conversations" in " ".join(
        dry.stdout.split() + dry.stderr.split()
    )
    trained = run_cli("train", str(config))
    assert trained.returncode == 0, trained.stderr[-2000:]
    text = " ".join(trained.stderr.split())
    assert (
        f"stage 2 mixes {len(sample)} of 40 general conversations (replay.jsonl) into {n_bbj} BBj ones"
        in text
    )
    manifest = json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())
    assert any(i["path"].endswith("replay.jsonl") for i in manifest["inputs"])  # hashed with the other inputs

    again = run_cli("data", "prepare", "--chatml", str(examples), "--model", "tiny:test", "--out", str(data))
    assert again.returncode == 0, again.stderr
    assert not (data / "replay.jsonl").exists()  # no longer configured: never trained on by accident
