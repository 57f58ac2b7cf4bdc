"""The fill-in-the-middle suite: holes cut from held-out files, the four metrics, and base vs tuned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbjtune.config import EvalConfig
from bbjtune.evaluate import fim
from bbjtune.models.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

PROGRAM = """rem count the lines of a file
ch = unt
open (ch)"notes.txt"
n = 0
while 1
  read (ch,end=done)line$
  n = n + 1
  print "line ", n, ": ", line$
wend
done:
close (ch)
total$ = str(n)
print "total: " + total$
if n > 10 then print "long file"
for i = 1 to 3
  print i
next i
end
"""
BROKEN = "rem does not compile\nprint (\nend\n"


def records() -> list[dict[str, str]]:
    second = PROGRAM.replace("notes.txt", "other.txt").replace("for i = 1 to 3", "for i = 1 to 5")
    return [
        {"source": "held/a.bbj", "text": PROGRAM},
        {"source": "held/b.bbj", "text": second},
        {"source": "held/broken.bbj", "text": BROKEN},
    ]


def test_cases_come_from_compiling_files_and_rebuild_them():
    cases, info = fim.build_cases(
        records(), samples=24, seed=1, compiler="builtin", context_lines_before=5, context_lines_after=3
    )
    assert info["files_not_compiling"] == ["held/broken.bbj"] and info["files_used"] == 2
    assert len(cases) == 24 and len({c.id for c in cases}) == 24
    assert {c.kind for c in cases} == {"line", "block", "statement"}
    texts = {r["source"]: r["text"] for r in records()}
    for c in cases:
        assert c.before + c.prefix + c.middle + c.suffix + c.after == texts[c.source]  # nothing lost
        assert c.prompt() == f"{FIM_PREFIX}{c.prefix}{FIM_SUFFIX}{c.suffix}{FIM_MIDDLE}"
        assert c.prefix.count("\n") <= 5 and c.suffix.count("\n") <= 3  # the window an editor sends
        assert not c.middle.lstrip().lower().startswith("rem") and c.middle.strip()
        if c.kind == "line":
            assert c.middle.endswith("\n") and c.middle.count("\n") == 1
        elif c.kind == "block":
            assert 2 <= c.middle.count("\n") <= 4
        else:  # the rest of a statement: the cursor is inside the line, its line end stays in the suffix
            assert "\n" not in c.middle and c.suffix.startswith("\n") and not c.prefix.endswith("\n")
    again, _ = fim.build_cases(
        records(), samples=24, seed=1, compiler="builtin", context_lines_before=5, context_lines_after=3
    )
    assert [c.to_dict() for c in again] == [c.to_dict() for c in cases]


def _row(case: fim.FimCase, output: str, finish: str = "stop", error: str | None = None) -> dict:
    return {
        "suite": "fim",
        "id": case.id,
        "sample": 0,
        "output": output,
        "finish_reason": finish,
        "error": error,
    }


def test_scores_exact_similar_compiling_and_stopping():
    cases, _ = fim.build_cases(records()[:1], samples=30, seed=2, kinds=["line"], compiler="builtin")
    case = next(c for c in cases if c.middle == "total$ = str(n)\n")
    follow = case.suffix.split("\n")[0]  # 'print "total: " + total$'
    rows = {
        "right": _row(case, "total$ = str(n)"),  # no line end: exact, but the file breaks
        "right_nl": _row(case, "total$ = str(n)\n"),
        "near": _row(case, "total$ = str(m)\n"),
        "broken": _row(case, "total$ = str(n\n"),
        "runs_on": _row(case, f"total$ = str(n)\n{follow}\n"),
        "cut": _row(case, "total$ = str(n)\n", finish="length"),
        "failed": _row(case, "", finish="error", error="HTTP 500"),
    }
    got = {}
    for name, row in rows.items():
        (score,) = fim.score_fim([row], [case], 1, "builtin")
        got[name] = score
    assert got["right"]["exact"] and not got["right"]["compiles"]
    assert got["right_nl"]["exact"] and got["right_nl"]["compiles"] and got["right_nl"]["stopped"]
    assert not got["near"]["exact"] and 0.9 < got["near"]["edit_similarity"] < 1.0 and got["near"]["compiles"]
    assert not got["broken"]["compiles"] and "line" in got["broken"]["compile_reason"]
    assert got["runs_on"]["ran_past_suffix"] and not got["runs_on"]["stopped"]
    assert got["cut"]["exact"] and not got["cut"]["stopped"]  # ended by the length limit
    assert not any(got["failed"][k] for k in ("exact", "compiles", "stopped"))
    summary = fim.summarize_fim(list(got.values()))
    assert summary["n_samples"] == 7 and summary["exact_match"] == round(3 / 7, 4)
    assert summary["stop_rate"] == round(4 / 7, 4) and set(summary["by_kind"]) == {"line"}
    assert fim.edit_similarity("abc", "abc") == 1.0 and fim.edit_similarity("abc", "xyz") == 0.0
    assert fim.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_what_an_editor_shows_cuts_a_run_on_completion_where_editors_do():
    cases, _ = fim.build_cases(records()[:1], samples=40, seed=2, compiler="builtin")
    line = next(c for c in cases if c.kind == "line" and c.middle == "total$ = str(n)\n")
    follow = line.suffix.split("\n")[0]  # 'print "total: " + total$'
    more = "print total$\nprint total$\n"
    # a line hole: the right line, then the line below the cursor again and more: cut before it
    assert fim.shown(line, f"total$ = str(n)\n{follow}\n{more}") == "total$ = str(n)\n"
    assert fim.shown(line, f"total$ = str(n)\n{more}") == f"total$ = str(n)\n{more}"  # nothing to cut at
    statement = next(c for c in cases if c.kind == "statement")
    below = next(ln for ln in statement.suffix.split("\n") if ln.strip())  # the line after the cursor's
    # the same rule inside a statement: the rest of the line, then the line below again: cut before it
    assert fim.shown(statement, f"{statement.middle}\n{below}\nx = 1\n") == statement.middle + "\n"
    assert fim.shown(statement, f"{statement.middle}\nx = 1\n") == f"{statement.middle}\nx = 1\n"
    rows = [
        _row(line, f"total$ = str(n)\n{follow}\n{more}", finish="length"),  # right, then runs on
        _row(line, f"total$ = str(m)\n{follow}\n"),  # wrong either way
        _row(statement, f"{statement.middle}\n{below}\n" + "x = 1\n" * 20, finish="length"),
    ]
    scores = fim.score_fim([rows[0], rows[2]], [line, statement], 1, "builtin")  # one row per (case, sample)
    runs_on, statement_score = scores
    assert not runs_on["exact"] and runs_on["shown_exact"] and runs_on["shown_compiles"]
    assert runs_on["shown_edit_similarity"] == 1.0 > runs_on["edit_similarity"]
    assert statement_score["shown_exact"] and not statement_score["exact"]
    (wrong,) = fim.score_fim(rows[1:2], [line], 1, "builtin")
    assert not wrong["shown_exact"] and 0.9 < wrong["shown_edit_similarity"] < 1.0
    summary = fim.summarize_fim([runs_on, wrong, statement_score])
    assert summary["exact_match"] == 0.0 and summary["shown_exact_match"] == round(2 / 3, 4)
    assert summary["by_kind"]["statement"]["shown_compile_at_1"] == 1.0
    old = [{k: v for k, v in s.items() if not k.startswith("shown_")} for s in scores]  # scored before
    assert fim.summarize_fim(old)["shown_exact_match"] is None


def test_base_vs_tuned_report_fim_next_to_the_other_tiers(tmp_path, tiny_model_dir):
    """The tiny model's completions are noise; what is checked is that FIM runs and is reported end to end."""
    from bbjtune.evaluate.compare import compare_dirs
    from bbjtune.models.backend import make_backend
    from bbjtune.evaluate.run import evaluate_model, score_dir

    suite = tmp_path / "mini.jsonl"
    suite.write_text(
        json.dumps(
            {
                "id": "hello",
                "prompt": "Print hello in BBj.",
                "category": "strings",
                "generation": "character",
                "task": "write",
                "expect": {"must": ["(?i)print"]},
            }
        )
        + "\n"
    )
    from bbjtune.evaluate.suite import load_suite

    ecfg = EvalConfig.model_validate(
        {
            "max_new_tokens": 8,
            "temperature": 0.0,
            "batch_size": 4,
            "compiler": "builtin",
            "humaneval": {"enabled": False},
            "fim": {"samples": 6, "max_new_tokens": 6},
        }
    )
    cases, _ = fim.build_cases(records(), 6, 0, compiler="builtin")

    def factory():
        return make_backend("transformers", model=str(tiny_model_dir), dtype="float32", batch_size=4)

    results = {}
    for label in ("base", "tuned"):
        results[label] = evaluate_model(
            label,
            tmp_path / label,
            factory,
            {"source": str(tiny_model_dir)},
            [load_suite(suite)],
            ecfg,
            fim_cases=cases,
        )
    r = results["tuned"]
    assert r["fim"]["n_cases"] == 6 and r["fim"]["n_samples"] == 6
    assert r["n_prompts"] == 1  # the FIM holes are not counted as BBj prompts
    rows = [json.loads(x) for x in (tmp_path / "tuned" / "generations.jsonl").read_text().splitlines()]
    fim_rows = [x for x in rows if x["suite"] == "fim"]
    assert len(fim_rows) == 6 and all(x["finish_reason"] in ("stop", "length") for x in fim_rows)
    assert all(x["tokens"] <= 6 for x in fim_rows)  # eval.fim.max_new_tokens, not eval.max_new_tokens
    assert "Fill-in-the-middle" in (tmp_path / "tuned" / "report.html").read_text()
    # re-scoring from the files alone gives the same numbers
    assert score_dir(tmp_path / "tuned")["fim"] == r["fim"]
    cmp = compare_dirs(tmp_path / "base", tmp_path / "tuned", tmp_path / "compare")
    assert {"FIM exact match", "FIM edit similarity", "FIM compile@1", "FIM stop rate"} <= set(cmp["tiers"])
    assert cmp["tiers"]["FIM compile@1"]["delta"] == 0.0  # the same model twice
    assert set(cmp["fim_by_kind"]) == {"line", "block", "statement"}
    assert "Fill-in-the-middle, by hole" in (tmp_path / "compare" / "report.html").read_text()

    # other FIM cases later: only the FIM samples are made again, the BBj answers are kept
    hello = next(x for x in rows if x["suite"] == "mini")
    again = evaluate_model(
        "tuned",
        tmp_path / "tuned",
        factory,
        {"source": str(tiny_model_dir)},
        [load_suite(suite)],
        ecfg,
        fim_cases=cases[:3],
    )
    assert again["fim"]["n_cases"] == 3
    rows = [json.loads(x) for x in (tmp_path / "tuned" / "generations.jsonl").read_text().splitlines()]
    assert [x for x in rows if x["suite"] == "mini"] == [hello]
    assert sorted(x["id"] for x in rows if x["suite"] == "fim") == sorted(c.id for c in cases[:3])


def test_eval_stage_builds_the_suite_from_the_data_stage_files(tmp_path, tiny_model_dir):
    from bbjtune.config import validate_config
    from bbjtune.evaluate.stage import load_fim_cases

    cfg = validate_config(
        {
            "name": "t",
            "output_dir": str(tmp_path / "run"),
            "model": {"source": str(tiny_model_dir)},
            "data": {"chatml": ["unused.jsonl"]},
            "eval": {"compiler": "builtin", "fim": {"samples": 9}},
        }
    )
    assert load_fim_cases(cfg) == []  # no heldout_sources.jsonl: a note, no suite, no crash
    cfg.data_dir.mkdir(parents=True)
    (cfg.data_dir / "heldout_sources.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    cases = load_fim_cases(cfg)
    assert len(cases) == 9 and {Path(c.source).name for c in cases} <= {"a.bbj", "b.bbj"}
    cfg.eval.fim.enabled = False
    assert load_fim_cases(cfg) == []


def test_a_fim_token_ends_a_local_completion(tiny_model_dir):
    """The transformers backend stops on FIM structure tokens (decoding drops them, so a stop string cannot)."""
    import torch

    from bbjtune.models.generate import Request, Sampling, TransformersBackend
    from bbjtune.models.fim import FIM_STOP_TOKENS

    backend = TransformersBackend.load(str(tiny_model_dir), dtype="float32", batch_size=2)
    fim_prefix = backend.tokenizer.convert_tokens_to_ids(FIM_PREFIX)
    push = torch.zeros(backend.model.config.vocab_size)
    push[fim_prefix] = 1e4  # the model now always wants to write <|fim_prefix|>
    backend.model.lm_head.register_forward_hook(lambda module, args, out: out + push)
    prompt = fim.FimCase("x", "a.bbj", "line", "", "n = 0\n", "", "print n\n", "", 2).prompt()
    sampling = Sampling(temperature=0.0, max_new_tokens=5)
    ((_, [with_stops]),) = list(backend.generate([Request(text=prompt, stop=FIM_STOP_TOKENS)], sampling))
    ((_, [without]),) = list(backend.generate([Request(text=prompt)], sampling))
    assert (with_stops.finish_reason, with_stops.text, with_stops.tokens) == ("stop", "", 0)
    assert without.finish_reason == "length" and without.tokens == 5
