"""Self-training's fresh prompts: derived from the sources by the data stage, sampled by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from train_helpers import (
    SYSTEM,
    conversation,
    data_config,
    fenced,
    make_config,
    read_jsonl,
    write_data,
    write_jsonl,
)

from bbjtune.config import SELFTRAIN_PROMPTS_FILE, SelfSampleConfig
from bbjtune.data import selftrain_prompts as fresh
from bbjtune.data.derive import derive_pairs
from bbjtune.train.inputs import load_conversations
from bbjtune.train.samples import FRESH, TRAIN, training_prompts
from bbjtune.train.selftrain import report_section, source_stats

QUIET = Console(stderr=True, quiet=True)

# Four documented methods: one is also a training prompt, one overlaps an eval prompt, one fails the
# checker, one is fresh; the complete-the-program pair of the whole file overlaps the eval prompt too
# (its first half holds the vowels method's comment) and fails the checker.
GREETER = """class public Greeter

    field private BBjString Name$

    rem /**
    rem  * Builds a friendly greeting for the person whose name is given.
    rem  * @param who$ the person's name
    rem  * @return the greeting text
    rem  */
    method public BBjString greet(BBjString who$)
        msg$ = "Hello, " + who$ + "!"
        methodret msg$
    methodend

    rem /**
    rem  * Counts the vowels in a text, ignoring upper and lower case.
    rem  * @param text$ the text to look at
    rem  */
    method public BBjNumber vowels(BBjString text$)
        n = 0
        for i = 1 to len(text$)
            if pos(cvs(text$(i,1),8)="AEIOU") then n = n + 1
        next i
        methodret n
    methodend

    rem /**
    rem  * Writes every line of the customer file to the console window.
    rem  */
    method public void listCustomers()
        ch = unt
        open (ch)"CUSTOMER"
        while 1
            read (ch,end=done)line$
            print line$
        wend
        done:
        close (ch)
    methodend

    rem /**
    rem  * Returns the broken sum of two numbers for the checker to reject.
    rem  */
    method public BBjNumber broken(BBjNumber a, BBjNumber b)
        s = (a + b
        methodret s
    methodend

classend
"""
EVAL_PROMPT = "Counts the vowels in a text, ignoring upper and lower case."


def asks(row_or_messages) -> str:
    messages = row_or_messages["messages"] if isinstance(row_or_messages, dict) else row_or_messages
    return next(m["content"] for m in messages if m["role"] == "user")


def prepare_with_sources(tmp_path: Path, code_check: str):
    from bbjtune.data.stage import prepare

    src = tmp_path / "src"
    src.mkdir()
    (src / "Greeter.bbj").write_text(GREETER, encoding="utf-8")
    greet = next(p for p in derive_pairs([src / "Greeter.bbj"], SYSTEM) if "`greet`" in asks(p))
    chatml = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": greet["messages"]}, *({"messages": fenced(conversation(i))} for i in range(4))],
    )
    evals = write_jsonl(tmp_path / "evals.jsonl", [{"id": "v1", "prompt": EVAL_PROMPT}])
    cfg = data_config(
        tmp_path, [chatml], sources=[str(src)], decontaminate_against=[str(evals)], code_check=code_check
    )
    out = prepare(cfg, cfg.data_dir, console=QUIET)
    return cfg, out


def test_data_stage_writes_fresh_prompts_not_trained_on_nor_evaluated(tmp_path):
    cfg, out = prepare_with_sources(tmp_path, "reject")
    rows = read_jsonl(cfg.data_dir / SELFTRAIN_PROMPTS_FILE)
    train = {asks(r) for r in read_jsonl(cfg.data_dir / "train.jsonl")}
    assert any("`greet`" in p for p in train)  # the training copy stayed in train.jsonl
    assert [r["derived"] for r in rows] == ["method-write"] and "`listCustomers`" in asks(rows[0])
    assert not {asks(r) for r in rows} & train and all(EVAL_PROMPT not in asks(r) for r in rows)
    reference = rows[0]["messages"][-1]
    assert reference["role"] == "assistant" and 'open (ch)"CUSTOMER"' in reference["content"]
    assert rows[0]["source"].endswith("Greeter.bbj") and rows[0]["messages"][0]["content"] == SYSTEM
    counts = {
        "derived": 5,
        "kept": 1,
        "skipped": {fresh.IN_TRAINING: 1, fresh.OVERLAPS_EVAL_OR_HELDOUT: 2, fresh.FAILS_CHECKER: 1},
    }
    manifest = json.loads((cfg.data_dir / "manifest.json").read_text())
    assert (
        manifest["metrics"]["selftrain_prompts"] == counts and SELFTRAIN_PROMPTS_FILE in manifest["outputs"]
    )
    assert json.loads((cfg.data_dir / "audit.json").read_text())["selftrain_prompts"] == counts
    assert out.counts["selftrain_prompts"] == 1
    report = (cfg.data_dir / "report.html").read_text(encoding="utf-8")
    assert "selftrain-prompts.jsonl" in report and "1 prompt is a training prompt" in report


def test_references_failing_the_checker_stay_unless_code_check_rejects(tmp_path):
    cfg, _ = prepare_with_sources(tmp_path, "report")
    rows = read_jsonl(cfg.data_dir / SELFTRAIN_PROMPTS_FILE)
    assert sorted(r["derived"] for r in rows) == ["method-write", "method-write"]
    assert any("`broken`" in asks(r) for r in rows)


def write_fresh(data_dir: Path, requests: list[str]) -> None:
    write_jsonl(
        data_dir / SELFTRAIN_PROMPTS_FILE,
        [
            {
                "messages": fenced(
                    [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": request},
                        {"role": "assistant", "content": f'rem {n}\nopen (1)"CUST{n}"\nclose (1)'},
                    ]
                ),
                "id": f"f{n}",
                "source": f"prog{n}.bbj",
                "derived": "method-write",
            }
            for n, request in enumerate(requests)
        ],
    )


FRESH_REQUESTS = [
    "Write the BBj method `openA` that opens the file of accounts.",
    "Write the BBj method `openB` that opens the file of branches.",
    "Write the BBj method `openC` that opens the file of carriers.",
]


@pytest.fixture
def prepared(tmp_path, tiny_model_dir):
    data_dir = write_data(tmp_path / "data", n_train=6, n_heldout=0)
    cfg = make_config(tmp_path, tiny_model_dir, data_dir, data__decontaminate_against=[])
    return cfg, load_conversations(data_dir / "train.jsonl"), data_dir


def test_sampling_takes_fresh_prompts_by_default_and_train_or_both_on_request(prepared):
    cfg, train, data_dir = prepared
    today = training_prompts(cfg, train, SelfSampleConfig(prompts="train"))
    assert today.prompts and {p.source for p in today.prompts} == {TRAIN}
    write_fresh(data_dir, FRESH_REQUESTS)
    found = training_prompts(cfg, train, SelfSampleConfig())
    assert [p.context[-1]["content"] for p in found.prompts] == FRESH_REQUESTS
    assert {p.source for p in found.prompts} == {FRESH} and not found.notes
    assert [p.id for p in training_prompts(cfg, train, SelfSampleConfig(prompts="train")).prompts] == [
        p.id for p in today.prompts
    ]  # `train` keeps today's set, fresh file or not
    both = training_prompts(cfg, train, SelfSampleConfig(prompts="both"))
    assert {p.id for p in both.prompts} == {p.id for p in [*today.prompts, *found.prompts]}
    some = training_prompts(cfg, train, SelfSampleConfig(prompts="both", max_prompts=4, seed=3))
    again = training_prompts(cfg, train, SelfSampleConfig(prompts="both", max_prompts=4, seed=3))
    assert len(some.prompts) == 4 and [p.id for p in some.prompts] == [p.id for p in again.prompts]


def test_sampling_falls_back_to_training_prompts_with_a_note(prepared):
    cfg, train, data_dir = prepared
    missing = training_prompts(cfg, train, SelfSampleConfig())
    assert missing.prompts and {p.source for p in missing.prompts} == {TRAIN}
    assert len(missing.notes) == 1 and "prepare the data again" in missing.notes[0]
    write_fresh(data_dir, [])
    empty = training_prompts(cfg, train, SelfSampleConfig())
    assert [p.id for p in empty.prompts] == [p.id for p in missing.prompts]
    assert "has no prompts" in empty.notes[0] and "training prompts instead" in empty.notes[0]


def test_round_stats_and_report_give_the_pass_rate_per_prompt_source(prepared):
    cfg, train, data_dir = prepared
    write_fresh(data_dir, FRESH_REQUESTS)
    prompts = training_prompts(cfg, train, SelfSampleConfig(prompts="both")).prompts
    verdict = {"compiles": True, "clean": True, "patterns_ok": True, "ran_on": False}
    rows = [
        {"prompt_id": p.id, "sample": s, "verdict": {**verdict, "passed": p.source == TRAIN or s == 0}}
        for p in prompts
        for s in range(2)
    ]
    stats = source_stats(prompts, rows)
    n_train = sum(p.source == TRAIN for p in prompts)
    assert stats[FRESH] == {
        "prompts": 3,
        "samples": 6,
        "compile_rate": 1.0,
        "clean_rate": 1.0,
        "pass_rate": 0.5,
    }
    assert stats[TRAIN]["pass_rate"] == 1.0 and stats[TRAIN]["prompts"] == n_train
    section = report_section("rft", [{"round": 1, "checks": "x", "prompt_sources": stats}])
    assert "fresh 50.0% of 6 samples (3 prompts)" in section and "train 100.0%" in section
