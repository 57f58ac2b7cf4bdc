"""Evaluation end to end on the tiny model: files, resume, re-scoring, compare, the stage and the CLI.

The tiny model's answers are noise, so the numbers are not checked against BBj skill; the
mechanics are: what is written, what is skipped on resume, what a comparison and its gate say.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from conftest import run_cli
from test_eval_scoring import RESULTS_KEYS

from bbjtune.config import EvalConfig, validate_config
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate.compare import compare_dirs, compare_results, humaneval_gate
from bbjtune.evaluate.run import evaluate_model, score_dir
from bbjtune.evaluate.suite import load_suite
from bbjtune.models.backend import make_backend

CASES = [
    {
        "id": "hello",
        "prompt": "Print hello in BBj.",
        "category": "strings",
        "generation": "character",
        "task": "write",
        "expect": {"must": ["(?i)print"], "must_not": ["(?i)console\\.log"]},
        "reference": '```bbj\nprint "hello"\n```\n',
    },
    {
        "id": "file",
        "prompt": "Open notes.txt and print its first line.",
        "category": "file-io",
        "generation": "character",
        "task": "write",
        "expect": {"must": ["(?i)open\\s*\\("]},
        "reference": '```bbj\nopen (1)"notes.txt"\n```\n',
    },
    {
        "id": "unt",
        "prompt": "What does UNT return?",
        "category": "file-io",
        "generation": "character",
        "task": "factual",
        "expect": {},
        "answer": "(?i)channel",
        "reference": "The next free channel number.",
    },
]


@pytest.fixture()
def suite_file(tmp_path) -> Path:
    path = tmp_path / "mini.jsonl"
    lines = [json.dumps(c) for c in CASES]
    lines.insert(1, '{"id": "broken", "prompt": ')  # a bad line: reported, skipped, the run goes on
    path.write_text("\n".join(lines) + "\n")
    return path


def settings(**kw) -> EvalConfig:
    base = {
        "max_new_tokens": 8,
        "temperature": 0.0,
        "batch_size": 4,
        "compiler": "builtin",
        "humaneval": {"limit": 2, "max_new_tokens": 8, "timeout_s": 5, "workers": 2},
    }
    base.update(kw)
    return EvalConfig.model_validate(base)


def tiny_factory(model_dir: Path, calls: list | None = None):
    def factory():
        if calls is not None:
            calls.append(1)
        return make_backend("transformers", model=str(model_dir), dtype="float32", batch_size=4)

    return factory


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_model_end_to_end_then_resume_then_rescore(tmp_path, tiny_model_dir, suite_file):
    out = tmp_path / "eval" / "tiny"
    suites = [load_suite(suite_file)]
    spec = {"backend": "transformers", "source": str(tiny_model_dir)}
    calls: list = []
    results = evaluate_model(
        "tiny",
        out,
        tiny_factory(tiny_model_dir, calls),
        spec,
        suites,
        settings(),
        humaneval_style="completion",
    )
    assert calls == [1]
    for name in (
        "generations.jsonl",
        "scores.jsonl",
        "results.json",
        "report.html",
        "manifest.json",
        "cases.jsonl",
        "settings.json",
    ):
        assert (out / name).exists(), name

    rows = read_jsonl(out / "generations.jsonl")
    assert len(rows) == 3 + 2  # three BBj prompts, two HumanEval tasks
    required = {
        "id",
        "prompt",
        "category",
        "generation",
        "task",
        "sample",
        "output",
        "code",
        "finish_reason",
        "error",
        "latency_s",
        "model",
        "suite",
    }
    assert all(required <= set(r) for r in rows)
    assert {r["suite"] for r in rows} == {"mini", "humaneval"} and {r["model"] for r in rows} == {"tiny"}

    for key in RESULTS_KEYS:
        assert key in results, key
    assert results["compiler"] == "builtin" and results["n_prompts"] == 3 and results["n_samples"] == 3
    assert set(results["by_category"]) == {"strings", "file-io"}
    assert results["humaneval"]["n_tasks"] == 2 and "pass_at_1" in results["humaneval"]
    bad_line = [e for e in results["errors"] if e.get("line") == 2]
    assert bad_line and "not valid JSON" in bad_line[0]["error"]
    scores = read_jsonl(out / "scores.jsonl")
    assert len(scores) == 5 and all("compiles" in s or "passed" in s for s in scores)

    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "compile@1" in html
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html  # self-contained

    # A killed run: two finished lines and half a line. Running again generates only what is missing.
    lines = (out / "generations.jsonl").read_text().splitlines(keepends=True)
    (out / "generations.jsonl").write_text("".join(lines[:2]) + lines[2][:25])
    again = evaluate_model(
        "tiny",
        out,
        tiny_factory(tiny_model_dir, calls),
        spec,
        suites,
        settings(),
        humaneval_style="completion",
    )
    assert calls == [1, 1]
    new_lines = (out / "generations.jsonl").read_text().splitlines(keepends=True)
    assert new_lines[:2] == lines[:2] and len(new_lines) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["metrics"]["generation"]["reused"] == 2
        and manifest["metrics"]["generation"]["generated"] == 3
    )
    assert again["compile_at_k"] == results["compile_at_k"]  # greedy: the same answers again

    # Everything generated: the model is not even loaded.
    def must_not_load():
        raise AssertionError("the model was loaded although every answer was saved")

    evaluate_model("tiny", out, must_not_load, spec, suites, settings(), humaneval_style="completion")

    # Scoring again from the files alone gives the same numbers.
    before = json.loads((out / "results.json").read_text())
    assert score_dir(out) == before

    # Other settings would mix samples: refused, unless --fresh.
    with pytest.raises(BbjtuneError, match="different sampling"):
        evaluate_model(
            "tiny", out, must_not_load, spec, suites, settings(max_new_tokens=9), humaneval_style="completion"
        )
    evaluate_model(
        "tiny",
        out,
        tiny_factory(tiny_model_dir, calls),
        spec,
        suites,
        settings(max_new_tokens=9),
        humaneval_style="completion",
        fresh=True,
    )
    assert len(read_jsonl(out / "generations.jsonl")) == 5


def test_an_unreachable_endpoint_is_recorded_per_sample_and_the_run_completes(tmp_path, suite_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ecfg = settings(
        backend="http",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_model="m",
        retries=1,
        request_timeout_s=2,
        humaneval={"limit": 2, "max_new_tokens": 8},
    )

    def factory():
        from bbjtune.models.generate_http import HttpBackend

        return HttpBackend(ecfg.base_url, "m", timeout_s=2, retries=1, backoff_s=0.01, max_connect_failures=2)

    out = tmp_path / "eval" / "served"
    results = evaluate_model("served", out, factory, {"backend": "http"}, [load_suite(suite_file)], ecfg)
    rows = read_jsonl(out / "generations.jsonl")
    assert len(rows) == 5 and all(r["error"] and r["finish_reason"] == "error" for r in rows)
    assert results["compile_at_k"]["1"] == 0.0 and results["humaneval"]["pass_at_1"] == 0.0
    assert results["humaneval"]["statuses"] == {"no_answer": 2}
    sample_errors = [e for e in results["errors"] if "sample" in e]
    assert len(sample_errors) == 5 and any("cannot connect" in e["error"] for e in sample_errors)


def test_compare_results_deltas_regressions_and_the_gate():
    def results(model, c1, patterns, he, strings):
        return {
            "model": model,
            "compiler": "builtin",
            "compile_at_k": {"1": c1},
            "patterns_pass_rate": patterns,
            "factual_accuracy": None,
            "humaneval": {"pass_at_1": he},
            "by_category": {
                "strings": {
                    "compile_at_k": {"1": strings},
                    "patterns_pass_rate": patterns,
                    "factual_accuracy": None,
                }
            },
            "by_generation": {},
            "n_prompts": 10,
        }

    cmp = compare_results(
        results("base", 0.30, 0.50, 0.60, 0.40), results("tuned", 0.70, 0.45, 0.54, 0.20), 5.0
    )
    assert cmp["tiers"]["compile@1"] == {"a": 0.30, "b": 0.70, "delta": 0.4, "regression": False}
    assert cmp["tiers"]["patterns pass rate"]["regression"] is True
    assert cmp["by_category"]["strings"]["compile@1"]["delta"] == pytest.approx(-0.2)
    assert any(r.startswith("category strings, compile@1") for r in cmp["regressions"])
    gate = cmp["humaneval_gate"]
    assert gate["status"] == "fail" and gate["drop_points"] == pytest.approx(6.0)
    assert humaneval_gate(0.60, 0.56, 5.0)["status"] == "pass"
    assert humaneval_gate(0.60, 0.55, 5.0)["status"] == "pass"  # exactly 5 points is allowed
    assert humaneval_gate(0.60, 0.70, 5.0)["message"].startswith("B gained 10.0 points")
    assert humaneval_gate(None, 0.5, 5.0)["status"] == "not_run"


def test_a_comparison_without_signal_says_so_instead_of_pass():
    both_zero = humaneval_gate(0.0, 0.0, 5.0, "base", "tuned", n_tasks=164)
    assert both_zero["status"] == "no_signal"
    assert both_zero["message"].startswith(
        "no signal: neither base nor tuned solves any of 164 HumanEval problems"
    )
    too_few = humaneval_gate(0.5, 0.5, 5.0, n_tasks=8)  # one problem is 12.5 points
    assert too_few["status"] == "no_signal" and "12.5 points" in too_few["message"]
    assert humaneval_gate(0.5, 0.5, 5.0, n_tasks=164)["status"] == "pass"
    assert (
        humaneval_gate(0.625, 0.125, 5.0, n_tasks=8)["status"] == "fail"
    )  # a large drop is a drop even on 8

    def zero(label):
        return {
            "model": label,
            "compile_at_k": {"1": 0.0},
            "patterns_pass_rate": 0.0,
            "factual_accuracy": None,
            "humaneval": {"pass_at_1": 0.0, "n_tasks": 8},
            "by_category": {},
            "by_generation": {},
            "n_prompts": 80,
        }

    cmp = compare_results(zero("base"), zero("tuned"), 5.0)
    assert cmp["humaneval_gate"]["status"] == "no_signal"
    assert cmp["no_signal"] == [
        "no signal in compile@1: both models score 0.0% of the 80 prompts, so this comparison cannot tell them apart",
        "no signal in patterns pass rate: both models score 0.0%, so this comparison cannot tell them apart",
    ]
    from bbjtune.evaluate.report import compare_report_html

    html = compare_report_html({**cmp, "a_dir": "a", "b_dir": "b", "examples": []})
    assert "NO SIGNAL" in html and "PASS" not in html and "no signal in compile@1" in html
    # the FIM rows lie outside the metric registry: shares of their own holes, named without a prompt count
    fim = {"exact_match": 0.0, "edit_similarity": 0.0, "compile_at_1": 0.0, "stop_rate": 0.5}
    cmp = compare_results({**zero("base"), "fim": fim}, {**zero("tuned"), "fim": fim}, 5.0)
    assert cmp["no_signal"][2:] == [
        f"no signal in FIM {name}: both models score 0.0%, so this comparison cannot tell them apart"
        for name in ("exact match", "edit similarity", "compile@1")
    ]


def test_compare_two_models_and_the_cli(tmp_path, tiny_model_dir, suite_file):
    from export_fixtures import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", scale=0.5)
    eval_dir = tmp_path / "eval"
    common = [
        "--suite",
        str(suite_file),
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--humaneval-limit",
        "1",
        "--compiler",
        "builtin",
        "--out",
        str(eval_dir),
    ]
    base = run_cli("eval", "--model", str(tiny_model_dir), "--label", "base", *common, cwd=tmp_path)
    assert base.returncode == 0, base.stderr
    assert "compile@1" in base.stderr and "HumanEval" in base.stderr
    # the tuned model in-process (a second CLI start would only cost time): same settings as the CLI's
    ecfg = settings(temperature=0.0, max_new_tokens=8, humaneval={"limit": 1})
    evaluate_model(
        "tuned",
        eval_dir / "tuned",
        lambda: make_backend(
            "transformers", model=str(tiny_model_dir), adapter=str(adapter), dtype="float32"
        ),
        {"backend": "transformers", "adapter": str(adapter)},
        [load_suite(suite_file)],
        ecfg,
        humaneval_style="chat",
    )

    out = run_cli(
        "eval", "compare", str(eval_dir / "base"), str(eval_dir / "tuned"), "--max-drop", "100", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    cmp = json.loads((eval_dir / "compare" / "results.json").read_text())
    assert (
        cmp["a"] == "base" and cmp["b"] == "tuned" and cmp["humaneval_gate"]["status"] == "no_signal"
    )  # 1 problem
    assert "HumanEval gate: NO SIGNAL" in out.stderr
    assert cmp["examples"] and {"a_output", "b_output", "change"} <= set(cmp["examples"][0])
    assert any(e["a_output"] != e["b_output"] for e in cmp["examples"]), "the adapter should change answers"
    html = (eval_dir / "compare" / "report.html").read_text()
    assert "HumanEval gate" in html and "NO SIGNAL" in html and "data:image/png;base64," in html

    rescore = run_cli("eval", "score", str(eval_dir / "base"), cwd=tmp_path)
    assert rescore.returncode == 0, rescore.stderr


def test_cli_errors_are_one_clear_line(tmp_path, suite_file):
    for args, needle in [
        (("eval", "--model", "./no-such-model", "--suite", str(suite_file)), "does not exist"),
        (("eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")), "not found"),
        (("eval", "score", str(tmp_path)), "eval/<label>"),
        (("eval", "--model", "tiny:test", "--suite", str(tmp_path / "none.jsonl")), "no eval suite matches"),
        (("eval", "--model", "tiny:test", "--k", "3", "--temperature", "0"), "temperature"),
    ]:
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert not (tmp_path / "runs").exists(), "a failed start must not leave directories behind"
        assert "Traceback" not in out.stderr and "error:" in out.stderr and needle in out.stderr, (
            args,
            out.stderr,
        )


def test_eval_help_lists_its_commands_and_routes_to_run():
    out = run_cli("eval", "--help")
    assert out.returncode == 0 and all(cmd in out.stdout for cmd in ("run", "compare", "score"))
    run_help = run_cli("eval", "run", "--help")
    assert "--adapter" in run_help.stdout and "--backend" in run_help.stdout


@pytest.mark.slow  # trains a tiny model
def test_the_stage_evaluates_base_and_tuned_and_compares(tmp_path, tiny_model_dir, suite_file):
    from export_fixtures import make_adapter, make_trained_run

    from bbjtune.evaluate.stage import run_stage

    run_dir = tmp_path / "runs" / "t"
    adapter = make_adapter(tiny_model_dir, run_dir / "sft" / "adapter", scale=0.5)
    cfg = validate_config(
        {
            "name": "t",
            "output_dir": str(run_dir),
            "model": {"source": str(tiny_model_dir), "dtype": "float32"},
            "data": {"chatml": ["x.jsonl"]},
            "train": {"stages": "sft"},
            "eval": {
                "suites": [str(suite_file)],
                "max_new_tokens": 8,
                "temperature": 0.0,
                "compiler": "builtin",
                "humaneval": {"limit": 1, "max_new_tokens": 8},
            },
        }
    )
    with pytest.raises(BbjtuneError, match="no trained model"):
        run_stage(cfg)
    make_trained_run(run_dir, str(tiny_model_dir), adapter, tiny_model_dir)
    out = run_stage(cfg)
    assert out == run_dir / "eval"
    for label in ("base", "tuned", "compare"):
        assert (out / label / "results.json").exists(), label
    base_rows = read_jsonl(out / "base" / "generations.jsonl")
    tuned_rows = read_jsonl(out / "tuned" / "generations.jsonl")
    assert [r["output"] for r in base_rows] != [r["output"] for r in tuned_rows]
    assert base_rows[0]["prompt"] == tuned_rows[0]["prompt"]
    settings_used = json.loads((out / "tuned" / "settings.json").read_text())
    assert settings_used["system_prompt"].startswith("You are an expert BBj developer")  # from trained.json
    assert settings_used["humaneval_style"] == "completion"  # a Base model
    cmp = json.loads((out / "compare" / "results.json").read_text())
    assert (
        cmp["a"] == "base"
        and cmp["b"] == "tuned"
        and cmp["humaneval_gate"]["status"] in ("no_signal", "fail")
    )  # 1 problem: a pass would mean nothing

    # compare the directories again through the function the CLI uses, into another place
    again = compare_dirs(out / "base", out / "tuned", tmp_path / "cmp2", max_drop_points=5.0)
    assert again["tiers"] == cmp["tiers"]

    # Retrained: the tuned answers are made again, the base model's are reused.
    make_adapter(tiny_model_dir, run_dir / "sft" / "adapter", scale=0.5, seed=1)
    run_stage(cfg)
    base_gen = json.loads((out / "base" / "manifest.json").read_text())["metrics"]["generation"]
    tuned_gen = json.loads((out / "tuned" / "manifest.json").read_text())["metrics"]["generation"]
    assert base_gen["generated"] == 0 and base_gen["reused"] == base_gen["requests"]
    assert tuned_gen["reused"] == 0 and tuned_gen["generated"] == tuned_gen["requests"]
    assert [r["output"] for r in read_jsonl(out / "tuned" / "generations.jsonl")] != [
        r["output"] for r in tuned_rows
    ]


def test_compare_merges_the_human_review_when_there_is_one(tmp_path):
    eval_dir = tmp_path / "eval"
    for label, c1 in (("base", 0.2), ("tuned", 0.6)):
        (eval_dir / label).mkdir(parents=True)
        (eval_dir / label / "results.json").write_text(
            json.dumps(
                {
                    "model": label,
                    "compiler": "builtin",
                    "compile_at_k": {"1": c1},
                    "patterns_pass_rate": 0.5,
                    "factual_accuracy": None,
                    "humaneval": None,
                    "by_category": {},
                    "by_generation": {},
                    "n_prompts": 3,
                }
            )
        )
    assert "human_review" not in compare_dirs(eval_dir / "base", eval_dir / "tuned", eval_dir / "compare")
    overall = {
        "win_rate": 0.75,
        "ci_low": 0.41,
        "ci_high": 0.93,
        "n_prompts": 4,
        "n_ratings": 4,
        "wins": 3,
        "losses": 1,
        "ties": 0,
        "decisive_rate": 0.75,
    }
    summary = {
        "kind": "bbjtune-review",
        "version": 1,
        "runs": {"a": {"label": "base"}, "b": {"label": "tuned"}},
        "n_items": 3,
        "n_rated_items": 3,
        "reviewers": ["Ann"],
        "overall": overall,
        "by_category": {},
        "by_generation": {},
        "by_reviewer": {"Ann": overall},
        "scores": {"correctness": {"a": 2.5, "b": 3.5, "delta": 1.0, "n": 4}},
    }
    (eval_dir / "review").mkdir()
    (eval_dir / "review" / "results.json").write_text(json.dumps(summary))
    cmp = compare_dirs(eval_dir / "base", eval_dir / "tuned", eval_dir / "compare")
    assert cmp["human_review"]["summary"]["overall"]["win_rate"] == 0.75
    html = (eval_dir / "compare" / "report.html").read_text()
    assert "Human review" in html and "win rate of tuned" in html and "75.0%" in html
    assert cmp["humaneval_gate"]["status"] == "not_run"


def test_a_base_model_evaluated_alone_gets_the_training_datas_system_prompt(
    tmp_path, tiny_model_dir, suite_file
):
    # `eval run CONFIG --model BASE` must ask the base what the tuned model is asked: the stage's
    # base-vs-tuned evaluation gives both the trained system prompt, and so must the single-model path
    # (the 2026-12-07 base row of experiments/real-0.5b was asked without it).
    from bbjtune.artifacts import common_system_prompt

    data = tmp_path / "data"
    data.mkdir()
    system = "You are a BBj expert. Answer in ```bbj blocks."
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": "a"},
            ]
        }
        for i in range(3)
    ] + [
        {
            "messages": [
                {"role": "system", "content": "other"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"messages": [')
    assert common_system_prompt(data / "train.jsonl") == system  # the torn last line is left out
    assert common_system_prompt(tmp_path / "missing.jsonl") is None
    config = tmp_path / "run.yaml"
    config.write_text(
        f"name: sys\nmodel: {{source: {tiny_model_dir}}}\ndata: {{output_dir: {data}, chatml: [x.jsonl]}}\n"
        f"eval: {{output_dir: {tmp_path / 'eval'}}}\n"
    )
    out = run_cli(
        "eval",
        "run",
        str(config),
        "--model",
        str(tiny_model_dir),
        "--label",
        "base",
        "--suite",
        str(suite_file),
        "--limit",
        "1",
        "--no-humaneval",
        "--max-new-tokens",
        "4",
        "--compiler",
        "builtin",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    used = json.loads((tmp_path / "eval" / "base" / "settings.json").read_text())
    assert used["system_prompt"] == system


def test_refill_engine_gives_the_same_evaluation(tmp_path, tiny_model_dir, suite_file):
    """eval.engine: refill only changes how the answers are computed: same greedy answers, same scores."""
    suites = [load_suite(suite_file)]
    spec = {"backend": "transformers", "source": str(tiny_model_dir)}
    # a strong repetition penalty makes the tiny model's greedy answers differ from prompt to prompt
    cfg = settings(max_new_tokens=10, repeat_penalty=2.0, engine="refill", segment_tokens=3)
    assert cfg.refill_segment == 3 and settings().refill_segment is None

    def refill():
        return make_backend(
            "transformers",
            model=str(tiny_model_dir),
            dtype="float32",
            batch_size=4,
            refill_segment=cfg.refill_segment,
        )

    outputs = {}
    for name, factory, ecfg in (
        ("batched", tiny_factory(tiny_model_dir), settings(max_new_tokens=10, repeat_penalty=2.0)),
        ("refill", refill, cfg),
    ):
        evaluate_model(name, tmp_path / name, factory, spec, suites, ecfg, humaneval_style="completion")
        rows = read_jsonl(tmp_path / name / "generations.jsonl")
        outputs[name] = sorted((r["id"], r["output"], r["finish_reason"]) for r in rows)
    assert outputs["refill"] == outputs["batched"] and len(outputs["batched"]) == 5
    assert len({out for _, out, _ in outputs["batched"]}) > 2  # not one answer five times
