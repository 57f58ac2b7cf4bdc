"""Data: audit, clean and split the instruction data, build the stage 1 corpus, replay conversations.

`bbjtune data prepare CONFIG` (or `bbjtune run`) reads ChatML files and BBj sources and writes
train.jsonl, heldout.jsonl, cpt.jsonl, rejected.jsonl, audit.json and report.html (INTERFACES.md).

    scan.py, chatml.py   read every line once; bad lines set aside with file, line and reason
    clean.py, scrub.py   fragments, cut-off answers, duplicates and near copies; secrets removed
    split.py             held-out split with similar prompts kept together; decontamination
    cpt.py, derive.py    the stage 1 corpus from BBj sources; conversations derived from them
    replay.py            general coding conversations that keep the model's other skills
    outcome.py           what the passes hand each other; audit.py and report.py turn it into figures
    stage.py, cli.py     the pipeline stage and `bbjtune data`
"""
