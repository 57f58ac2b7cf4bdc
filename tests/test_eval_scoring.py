"""Scorers with known answers: the pass@k estimator, patterns, compile checks, suite loading."""

from __future__ import annotations

import json
from math import comb

import pytest

from bbjtune.errors import BbjtuneError
from bbjtune.bbj.compile import compile_answer
from bbjtune.evaluate.estimator import mean_pass_at_k, pass_at_k
from bbjtune.evaluate.patterns import score_patterns
from bbjtune.evaluate.scoring import build_results, check_against_reference, score_bbj_samples, summarize_bbj
from bbjtune.evaluate.suite import EvalCase, limit_cases, load_suite

# results.json keys every evaluation writes (INTERFACES.md); test_eval_run checks a real run against them
RESULTS_KEYS = (
    "model",
    "compiler",
    "compile_at_k",
    "patterns_pass_rate",
    "factual_accuracy",
    "by_category",
    "by_generation",
    "humaneval",
    "n_prompts",
    "n_samples",
    "errors",
)

GOOD_BBJ = (
    '```bbj\nch = unt\nopen (ch)"notes.txt"\nread (ch,end=*break)text$\nclose (ch)\nprint text$\nend\n```\n'
)
BROKEN_BBJ = "Here you go:\n\n```bbj\nx = (1 + 2\nprint x\n```\n"


# ----------------------------------------------------------------------------- estimator


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the plain success rate
        (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),  # 1 - 3/10 = 0.7
        (4, 1, 3, 1 - 1 / 4),  # 1 - C(3,3)/C(4,3)
        (10, 0, 5, 0.0),
        (3, 3, 1, 1.0),
        (6, 4, 3, 1.0),  # fewer than k failures: some draw always passes
        (20, 3, 10, 1 - comb(17, 10) / comb(20, 10)),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_prompts_and_skips_short_ones():
    # prompt 1: 1 of 2 pass, prompt 2: 2 of 2 pass, prompt 3 has only 1 sample (skipped for k=2)
    counts = [(2, 1), (2, 2), (1, 0)]
    assert mean_pass_at_k(counts, 1) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert mean_pass_at_k(counts, 2) == pytest.approx((1.0 + 1.0) / 2)
    assert mean_pass_at_k([], 1) is None


# ----------------------------------------------------------------------------- patterns


def case(**kw) -> EvalCase:
    base = dict(suite="s", id="c1", prompt="p", category="file-io", generation="character", task="write")
    base.update(kw)
    return EvalCase(**base)


def test_patterns_report_missing_and_forbidden():
    c = case(must=[r"(?i)\bopen\s*\(", r"(?i)\bclose\s*\("], must_not=[r"(?i)with\s+open\s*\(", r"\bself\."])
    ok = score_patterns(c, GOOD_BBJ)
    assert ok.passed and ok.missing == [] and ok.forbidden == []
    bad = score_patterns(c, "with open('notes.txt') as f:\n    self.lines = f.read()\n")
    assert not bad.passed
    assert bad.missing == [r"(?i)\bclose\s*\("]  # "with open(" does contain "open("
    assert bad.forbidden == [r"(?i)with\s+open\s*\(", r"\bself\."]


def test_patterns_are_case_sensitive_unless_the_pattern_says_otherwise():
    c = case(must=["OPEN"])
    assert score_patterns(c, 'OPEN (1)"x"').passed
    assert not score_patterns(c, 'open (1)"x"').passed


def test_factual_answer_regex():
    c = case(task="factual", answer=r"(?i)\bunt\b")
    assert score_patterns(c, "Use UNT to get a free channel.").factual is True
    assert score_patterns(c, "Use channel 1.").factual is False
    assert score_patterns(c, "").factual is False
    assert score_patterns(case(), "anything").factual is None


# ----------------------------------------------------------------------------- compile


def test_valid_bbj_compiles_with_the_builtin_checker():
    result = compile_answer(GOOD_BBJ, compiler="builtin")
    assert result.compiles and result.compiler == "builtin" and result.diagnostics == []
    assert "open (ch)" in result.code


def test_broken_bbj_fails_with_the_line_and_the_diagnostics_kept():
    result = compile_answer(BROKEN_BBJ, compiler="builtin")
    assert not result.compiles
    assert result.reason.startswith("line 1:") and "')'" in result.reason
    assert result.diagnostics[0]["line"] == 1 and result.diagnostics[0]["severity"] == "error"


def test_an_answer_without_code_does_not_compile():
    result = compile_answer("BBj is a language by BASIS.", compiler="builtin")
    assert not result.compiles and result.reason == "no BBj code found in the answer"


def test_asking_for_bbjcpl_when_it_is_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BBJ_HOME", raising=False)
    with pytest.raises(BbjtuneError, match="bbjcpl"):
        compile_answer(GOOD_BBJ, compiler="bbjcpl")
    assert compile_answer(GOOD_BBJ, compiler="auto").compiler == "builtin"


# ----------------------------------------------------------------------------- per-sample scores and summaries


def test_scores_and_summary_have_the_known_values():
    c1 = case(id="a", must=[r"(?i)\bopen\b"])
    c2 = case(id="b", category="strings", generation="gui")
    c3 = case(id="q", task="factual", answer=r"(?i)\bunt\b", compile=False)
    rows = [
        {"suite": "s", "id": "a", "sample": 0, "output": GOOD_BBJ, "code": None, "error": None},
        {"suite": "s", "id": "a", "sample": 1, "output": BROKEN_BBJ, "code": None, "error": None},
        {
            "suite": "s",
            "id": "b",
            "sample": 0,
            "output": "",
            "code": "",
            "error": "the model returned an empty answer",
        },
        # sample 1 of b is missing (run killed): counted as failed
        {
            "suite": "s",
            "id": "q",
            "sample": 0,
            "output": "UNT returns a free channel",
            "code": "",
            "error": None,
        },
        {"suite": "s", "id": "q", "sample": 1, "output": "channel 0", "code": "", "error": None},
    ]
    scores = score_bbj_samples(rows, [c1, c2, c3], n_samples=2, compiler="builtin")
    assert len(scores) == 6
    by = {(s["id"], s["sample"]): s for s in scores}
    assert by[("a", 0)]["compiles"] is True and by[("a", 0)]["patterns_ok"] is True
    assert by[("a", 1)]["compiles"] is False and by[("a", 1)]["diagnostics"]
    assert by[("b", 0)]["compiles"] is False and "empty answer" in by[("b", 0)]["compile_reason"]
    assert by[("b", 1)]["error"].startswith("no generation")
    assert (
        by[("q", 0)]["compiles"] is None
        and by[("q", 0)]["factual"] is True
        and by[("q", 1)]["factual"] is False
    )

    summary = summarize_bbj(scores, [1, 2])
    # compiled prompts: a (1 of 2) and b (0 of 2); q is not compiled
    assert summary["compile_at_k"] == {"1": pytest.approx(0.25), "2": pytest.approx(0.5)}
    assert summary["patterns_pass_rate"] == pytest.approx(0.5)  # only a has patterns: 1 of 2 samples
    assert summary["factual_accuracy"] == pytest.approx(0.5)
    assert summary["n_prompts"] == 3 and summary["n_samples"] == 6

    results = build_results("m", scores, [1, 2], "builtin", None, [])
    for key in RESULTS_KEYS:
        assert key in results
    assert results["by_category"]["strings"]["compile_at_k"]["1"] == 0.0
    assert results["by_category"]["file-io"]["compile_at_k"]["1"] == pytest.approx(0.5)
    assert set(results["by_generation"]) == {"character", "gui"}


# ----------------------------------------------------------------------------- suite files


def test_a_suite_with_bad_lines_keeps_the_good_cases_and_reports_each_bad_line(tmp_path):
    good = {
        "id": "ok-1",
        "prompt": "Write BBj",
        "category": "strings",
        "generation": "character",
        "task": "write",
        "expect": {"must": ["(?i)print"], "must_not": []},
        "reference": '```bbj\nprint "x"\n```\n',
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "no-prompt", "prompt": ""}),
        json.dumps({**good, "id": "bad-regex", "expect": {"must": ["(unclosed"]}}),
        json.dumps({**good, "id": "typo", "expects": {}}),
        json.dumps(good),  # duplicate id
        "",
        json.dumps([1, 2]),
        json.dumps({**good, "id": "ok-2", "task": "explain"}),
    ]
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(lines) + "\n")
    suite = load_suite(path)
    assert [c.id for c in suite.cases] == ["ok-1", "ok-2"]
    problems = {p.line: p.reason for p in suite.problems}
    assert set(problems) == {2, 3, 4, 5, 6, 8}
    assert "not valid JSON" in problems[2]
    assert "'prompt'" in problems[3]
    assert "bad regex" in problems[4] and "(unclosed" in problems[4]
    assert "unknown key" in problems[5] and "expects" in problems[5]
    assert "duplicate id 'ok-1'" in problems[6] and "line 1" in problems[6]
    assert "object" in problems[8]
    assert suite.cases[0].compile is True and suite.cases[1].compile is False  # explain: prose, not compiled
    assert str(suite.problems[0]).startswith(f"{path}:2: ")


def test_yaml_suites_report_the_line_of_a_bad_case(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(
        "cases:\n"
        "  - id: y1\n    prompt: Print hello in BBj\n    category: strings\n    generation: character\n"
        "    task: write\n    expect: {must: ['(?i)print']}\n"
        "  - id: y2\n    prompt: ''\n    category: strings\n    generation: character\n    task: write\n"
    )
    suite = load_suite(path)
    assert [c.id for c in suite.cases] == ["y1"]
    assert [(p.line, "'prompt'" in p.reason) for p in suite.problems] == [(8, True)]


def test_a_missing_suite_is_one_clear_error(tmp_path):
    with pytest.raises(BbjtuneError, match="does not exist"):
        load_suite(tmp_path / "nope.jsonl")


def test_limit_spreads_over_categories_in_file_order():
    cases = [case(id=f"{cat}-{i}", category=cat) for cat in ("a", "b", "c") for i in range(4)]
    picked = limit_cases(cases, 5)
    assert [c.id for c in picked] == ["a-0", "a-1", "b-0", "b-1", "c-0"]
    assert limit_cases(cases, None) == cases and len(limit_cases(cases, 100)) == 12


def test_check_against_reference_finds_patterns_the_reference_breaks():
    c = case(
        must=[r"(?i)\bopen\b", r"(?i)\bwrite\b"],
        must_not=[r"(?i)\bclose\b"],
        answer=r"never",
        reference=GOOD_BBJ,
    )
    problems = check_against_reference(c, compiler="builtin")
    assert any("does not match the reference" in p and "write" in p for p in problems)
    assert any("must_not pattern matches" in p and "close" in p for p in problems)
    assert any("answer regex" in p for p in problems)
    assert check_against_reference(case(must=[r"(?i)open"], reference=GOOD_BBJ), compiler="builtin") == []
    broken = check_against_reference(case(reference=BROKEN_BBJ), compiler="builtin")
    assert broken and "does not compile" in broken[0]


def test_a_line_that_is_only_a_name_does_not_compile():
    from bbjtune.bbj.compile import compile_answer

    assert not compile_answer("```bbj\nStaticStaticStaticStatic\n```", compiler="builtin").compiles
    assert compile_answer("```bbj\nx = 1\nprint x\n```", compiler="builtin").compiles


def test_must_not_looks_at_code_not_at_the_explanation():
    from bbjtune.evaluate.suite import EvalCase

    case = EvalCase(
        id="t",
        prompt="p",
        category="oop",
        generation="gui",
        task="fix",
        suite="s",
        must=[r"(?i)methodret"],
        must_not=[r"(?im)^\s*return\b"],
    )
    good = "Replace the\nreturn with METHODRET:\n```bbj\nclass public A\nmethod public BBjNumber f()\n  methodret 1\nmethodend\nclassend\n```"
    bad = "```bbj\nclass public A\nmethod public BBjNumber f()\n  methodret 1\n  return\nmethodend\nclassend\n```"
    assert score_patterns(case, good).passed
    assert score_patterns(case, bad).forbidden


def test_a_failed_humaneval_gate_points_to_replay(monkeypatch):
    from rich.console import Console

    from bbjtune.evaluate import stage
    from bbjtune.evaluate.compare import humaneval_gate

    recorder = Console(record=True, width=200)
    monkeypatch.setattr(stage, "console", recorder)
    result = {"compile_at_k": {1: 0.5}, "patterns_pass_rate": 0.5, "factual_accuracy": 0.5, "errors": []}
    failed = humaneval_gate(0.561, 0.445, 5.0, "base", "tuned")
    assert failed["status"] == "fail"
    stage.print_summary({"base": result, "tuned": result}, {"humaneval_gate": failed, "regressions": []})
    assert "bbjtune data replay" in recorder.export_text()
    recorder = Console(record=True, width=200)
    monkeypatch.setattr(stage, "console", recorder)
    stage.print_summary(
        {"base": result}, {"humaneval_gate": humaneval_gate(0.561, 0.55, 5.0), "regressions": []}
    )
    assert "replay" not in recorder.export_text()
