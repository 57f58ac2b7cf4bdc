"""The demo (`make demo` = `bbjtune run quickstart`): it shows learning, and its end says what to open."""

from __future__ import annotations

from bbjtune.pipeline import next_steps


def test_the_end_of_a_run_names_the_reports_and_the_review_command(tmp_path):
    run = tmp_path / "runs" / "demo"
    for d in ("data", "eval/base", "eval/tuned", "eval/compare"):
        (run / d).mkdir(parents=True)
        (run / d / "report.html").write_text("<html></html>")
    steps = dict((where, what) for what, where in next_steps({"data": run / "data", "train": run,
                                                               "eval": run / "eval"}))
    assert list(steps) == [str(run / "data" / "report.html"), str(run / "eval" / "compare" / "report.html"),
                           str(run / "eval" / "tuned" / "report.html"), str(run / "eval" / "base" / "report.html"),
                           f"bbjtune review {run / 'eval' / 'base'} {run / 'eval' / 'tuned'}"]
    assert next_steps({"train": run}) == []  # a training-only run has no report to point at
