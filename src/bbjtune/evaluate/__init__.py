"""Evaluation: did fine-tuning make the model better at BBj, and did it keep its Python?

Tier 1 compile@k (bbj/compile.py; the real bbjcpl when installed), tier 2 API/idiom patterns and
factual answers (patterns.py) and clean@k (compiles and passes bbj/quality.py's static checks),
tier 3 HumanEval pass@k in a sandbox (humaneval.py, sandbox.py);
tier 4, human review, reads the generations.jsonl written here (bbjtune.review). Generation itself
(the backends, generations.jsonl) lives in bbjtune.models: the data stage's replay answers use it too.

    suite.py        eval suite files (JSONL/YAML), validation, bad lines reported
    metrics.py      the metrics, declared once (key, labels, direction, format, aggregation)
    scoring.py      per-sample scores and the summaries in results.json (estimator.py: pass@k)
    run.py          one model: generate, score, report; score_dir re-scores from files
    report.py       report.html (self-contained, plots); compare.py: A vs B, the HumanEval gate
    stage.py        the pipeline stage: base and tuned, then compare; cli.py: `bbjtune eval`
    fim.py          the fill-in-the-middle suite: holes cut from held-out source files, scored
    humaneval.py    HumanEval; sandbox.py runs each answer (bwrap.py, treewatch.py: the memory cap)
                    and judge.py runs the problem's tests in a separate process
"""
