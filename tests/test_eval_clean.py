"""clean@k in scoring, results.json, the report and eval compare; must_not looks at code only."""

from __future__ import annotations

from bbjtune.evaluate.compare import compare_results
from bbjtune.evaluate.patterns import score_patterns
from bbjtune.evaluate.report import model_report_html
from bbjtune.evaluate.scoring import build_results, score_bbj_samples, summarize_bbj
from bbjtune.evaluate.suite import EvalCase

CLEAN = (
    '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10, 10, 300, 200, "Hi")\n'
    "process_events\n```\n"
)
INVENTED = (
    '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10, 10, 300, 200, "Hi")\n'
    'ed! = wnd!.addBbjEditBox(101, 10, 10, 100, 20, "")\nprocess_events\n```\n'
)
BROKEN = "```bbj\nx = (1 + 2\n```\n"


def case(**kw) -> EvalCase:
    base = {"suite": "s", "id": "c1", "prompt": "p", "category": "gui", "generation": "gui", "task": "write"}
    base.update(kw)
    return EvalCase(**base)


def rows_for(cid: str, outputs: list[str]) -> list[dict]:
    return [{"suite": "s", "id": cid, "sample": i, "output": o} for i, o in enumerate(outputs)]


def test_a_compiling_answer_with_an_invented_method_is_not_clean():
    cases = [case(id="a"), case(id="b")]
    rows = rows_for("a", [CLEAN, INVENTED]) + rows_for("b", [INVENTED, BROKEN])
    scores = score_bbj_samples(rows, cases, 2, compiler="builtin")
    by = {(s["id"], s["sample"]): s for s in scores}
    assert by[("a", 0)]["compiles"] and by[("a", 0)]["clean"] and by[("a", 0)]["findings"] == []
    assert by[("a", 1)]["compiles"] and not by[("a", 1)]["clean"]
    assert by[("a", 1)]["findings"][0]["rule"] == "unknown-method"
    assert by[("b", 1)]["clean"] is False  # does not compile
    head = summarize_bbj(scores, [1, 2])
    assert head["compile_at_k"] == {"1": 0.75, "2": 1.0}
    assert head["clean_at_k"] == {"1": 0.25, "2": 0.5}
    results = build_results("m", scores, [1, 2], "builtin", None, [])
    assert results["clean_at_k"] == {"1": 0.25, "2": 0.5}
    assert results["by_generation"]["gui"]["clean_at_k"]["1"] == 0.25
    assert results["by_category"]["gui"]["clean_at_k"]["1"] == 0.25
    html = model_report_html({**results, "suites": ["s"]}, scores, rows)
    assert "clean@1" in html and "unknown-method" in html


def test_the_suite_generation_and_must_not_patterns_decide_clean():
    cases = [case(id="c", generation="character", category="character-ui")]
    scores = score_bbj_samples(rows_for("c", [CLEAN]), cases, 1, compiler="builtin")
    assert scores[0]["compiles"] and not scores[0]["clean"]
    assert {f["rule"] for f in scores[0]["findings"]} == {"generation-mismatch"}
    cases = [case(id="d", must_not=[r"(?i)\bprocess_events\b"])]
    scores = score_bbj_samples(rows_for("d", [CLEAN]), cases, 1, compiler="builtin")
    assert not scores[0]["clean"]


def test_prose_answers_and_old_scores_have_no_clean():
    cases = [case(id="e", task="explain", compile=False)]
    scores = score_bbj_samples(rows_for("e", ["It opens a window."]), cases, 1, compiler="builtin")
    assert scores[0]["clean"] is None
    old = [{"suite": "s", "id": "x", "sample": 0, "compiles": True, "patterns_ok": None, "factual": None}]
    assert summarize_bbj(old, [1])["clean_at_k"] == {}


def test_compare_shows_clean_deltas():
    def res(compile1, clean1):
        return {
            "model": "m",
            "compile_at_k": {"1": compile1},
            "clean_at_k": {"1": clean1},
            "patterns_pass_rate": 0.1,
            "factual_accuracy": None,
            "by_category": {
                "gui": {
                    "compile_at_k": {"1": compile1},
                    "clean_at_k": {"1": clean1},
                    "patterns_pass_rate": 0.1,
                    "factual_accuracy": None,
                }
            },
            "by_generation": {},
        }

    cmp = compare_results(res(0.5, 0.2), res(0.7, 0.1))
    assert cmp["tiers"]["clean@1"]["delta"] == -0.1
    assert any(r.startswith("clean@1") for r in cmp["regressions"])
    assert cmp["by_category"]["gui"]["clean@1"]["b"] == 0.1
    old = {k: v for k, v in res(0.5, 0.2).items() if k != "clean_at_k"}
    assert "clean@1" not in compare_results(old, {**old})["tiers"]


def test_must_not_ignores_the_prose_around_unfenced_code():
    c = case(must_not=[r"(?i)\bself\.\w+"], generation="character")
    prose = "Unlike Python, where you would write self.count in a method, BBj uses fields here.\n"
    assert score_patterns(c, prose + "count = count + 1\nprint count\n").passed
    assert score_patterns(c, "self.count = 1\nprint count\n").forbidden
    # an explain answer has no code: its prose is what must_not is about
    assert score_patterns(case(task="explain", compile=False, must_not=[r"(?i)\bself\.\w+"]), prose).forbidden
