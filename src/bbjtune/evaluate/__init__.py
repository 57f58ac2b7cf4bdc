"""Evaluation: did fine-tuning make the model better at BBj, and did it keep its Python?

Tier 1 compile@k (compile.py; the real bbjcpl when installed), tier 2 API/idiom patterns and
factual answers (patterns.py) and clean@k (compiles and passes bbj/quality.py's static checks), tier 3 HumanEval pass@k in a sandbox (humaneval.py, sandbox.py);
tier 4, human review, reads the generations.jsonl written here (bbjtune.serve).

    suite.py        eval suite files (JSONL/YAML), validation, bad lines reported
    generate*.py    backends: transformers (batched), OpenAI-compatible HTTP, GGUF via llama.cpp
    generations.py  generations.jsonl, written before scoring, resumable
    scoring.py      per-sample scores and the summaries in results.json (estimator.py: pass@k)
    run.py          one model: generate, score, report; score_dir re-scores from files
    report.py       report.html (self-contained, plots); compare.py: A vs B, the HumanEval gate
    stage.py        the pipeline stage: base and tuned, then compare; cli.py: `bbjtune eval`
"""
