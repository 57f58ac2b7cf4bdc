"""End to end: `bbjtune data prepare` on a generated file holding every known defect, with exact counts.

The file is built here, line by line, so each expected count below is known by construction.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli

SYSTEM = "You are a BBj expert. Answer with BBj code in ```bbj blocks."
WORDS = (
    "apple river stone cloud amber forest silver candle harbor meadow lantern copper violet thunder "
    "orchard pebble canyon falcon glacier marble saddle timber velvet willow anchor beacon cobalt "
    "dune ember fjord garnet hollow ivory jasper kettle lagoon mosaic nectar onyx prairie quartz "
    "raven summit tundra umber vortex walnut yonder zephyr bramble cinder drift fable grove"
).split()
N_GOOD = 30
EVAL_PROMPT = (
    "Write a BBj program that reads the customer file and prints every customer name with its balance."
)


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def good_example(i: int, category: str, system: bool = True) -> dict:
    rng = random.Random(i)
    prompt = f"Task {i}: {words(rng, 14)}?"
    answer = (
        f"{words(rng, 150).capitalize()}.\n\n```bbj\nrem example {i}\nx = {i}\n"
        f'print "{rng.choice(WORDS)}", x\nend\n```\n\n{words(rng, 12).capitalize()}.'
    )
    messages = ([{"role": "system", "content": SYSTEM}] if system else []) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": messages, "category": category, "generation": "character", "task": "write"}


def conv(prompt: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "category": "alpha",
        "generation": "character",
        "task": "write",
    }


def build_messy(path: Path) -> dict:
    """Write the messy file; returns what prepare must find."""
    lines: list[bytes] = []

    def add(obj) -> None:
        lines.append((obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)).encode("utf-8"))

    goods = [good_example(i, "alpha" if i % 2 else "beta") for i in range(N_GOOD)]
    for g in goods:
        add(g)
    # -- lines that are not usable conversations (schema) ------------------------------------
    add('{"messages": [{"role": "user", "content": "broken <script>alert(1)</script>')  # malformed-json
    add(
        conv("Which role?", "A fine answer with enough text.")
        | {
            "messages": [
                {"role": "user", "content": "Hi there, a question"},
                {"role": "bot", "content": "An answer."},
            ]
        }
    )  # unknown-role
    add({"conversation": [{"role": "user", "content": "x"}]})  # missing-messages
    add(conv("Open a file in BBj please", "   "))  # empty-answer
    lines.append(
        b'{"messages": [{"role": "user", "content": "caf\xe9 latin-1 byte"}, '
        b'{"role": "assistant", "content": "An answer of some length."}]}'
    )  # not-utf8
    add(
        '{"messages": [{"role": "user", "content": "lone \\ud800 surrogate"}, '
        '{"role": "assistant", "content": "An answer of some length."}]}'
    )  # not-utf8
    add([1, 2, 3])  # not-an-object
    add(
        {
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "user", "content": "second"},
                {"role": "assistant", "content": "An answer of some length."},
            ]
        }
    )  # bad-role-order
    add("")  # blank line
    # -- filters ---------------------------------------------------------------------------------
    add(conv("Say something short about BBj strings", "OK, done."))  # too-short (9)
    add(
        conv("Show a counting loop in BBj", "Here is the loop:\n\n```bbj\nfor i = 1 to 10\n    print i\n")
    )  # truncated
    add(
        conv("How do I open a file in BBj?", "To open a file you use the OPEN verb and then the")
    )  # truncated
    add(
        conv(
            "Print a greeting in BBj with a typo",
            'Like this:\n\n```bbj\nprint "unterminated\nend\n```\n\nThat prints the greeting.',
        )
    )  # code error
    add(conv("Explain every verb of BBj in great depth", "Verb. " * 3000 + "Done."))  # too-long
    # -- duplicates -----------------------------------------------------------------------------
    add(goods[1])  # duplicate
    shouted = json.loads(json.dumps(goods[2]))
    shouted["messages"][1]["content"] = "  " + shouted["messages"][1]["content"].upper() + "  "
    shouted["messages"][2]["content"] = shouted["messages"][2]["content"].replace(" ", "   ")
    add(shouted)  # duplicate
    other_answer = json.loads(json.dumps(goods[3]))
    other_answer["messages"][2]["content"] = (
        'A different answer.\n\n```bbj\nprint "other"\nend\n```\n\nDone here.'
    )
    add(other_answer)  # duplicate-prompt
    near = json.loads(json.dumps(goods[4]))
    near["messages"][1]["content"] = near["messages"][1]["content"].replace("?", " please?")
    add(near)  # near-duplicate
    # -- kept, but repaired or counted ------------------------------------------------------------
    escaped = good_example(100, "alpha")
    escaped["messages"][2]["content"] = escaped["messages"][2]["content"].replace("\n", "\\n")
    add(escaped)  # escapes fixed
    secret = good_example(101, "beta")
    secret["messages"][2]["content"] = secret["messages"][2]["content"].replace(
        "```\n\n",
        '```\n\n```bbj\nsqlopen (1)"DSN=sales;UID=admin;PWD=hunter2"\napiKey$ = "AbCdEf1234567890"\n'
        'mail$ = "jane.doe@acme-corp.com"\nhost$ = "10.20.30.40"\nend\n```\n\n',
    )
    add(secret)  # scrubbed
    add(good_example(102, "alpha", system=False))  # system added
    html = good_example(103, "beta")
    html["messages"][1]["content"] += " <script>alert('x')</script>"
    add(html)  # escaped in report
    add(
        conv(
            EVAL_PROMPT, 'Read the file sequentially.\n\n```bbj\nopen (1)"CUSTOMER"\nend\n```\n\nThat is all.'
        )
    )  # overlaps-eval
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {
        "lines": len(lines),
        "schema": {
            "malformed-json": 1,
            "unknown-role": 1,
            "missing-messages": 1,
            "empty-answer": 1,
            "not-utf8": 2,
            "not-an-object": 1,
            "bad-role-order": 1,
        },
        "filters": {"too-short": 1, "truncated": 2, "too-long": 1},
        "dedupe": {"duplicate": 2, "duplicate-prompt": 1, "near-duplicate": 1},
        "decontaminate": {"overlaps-eval": 1},
        "kept_before_decontamination": N_GOOD
        + 6,  # goods + code error + escaped + secret + no-system + html + eval
    }


@pytest.fixture(scope="module")
def messy(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("messy")
    expected = build_messy(root / "messy.jsonl")
    (root / "evals.jsonl").write_text(json.dumps({"id": "e1", "prompt": EVAL_PROMPT}) + "\n")
    src = root / "src"
    src.mkdir()
    (src / "latin.bbj").write_bytes('rem Gr\xfc\xdfe\r\nprint "\xe4"\r\nend\r\n'.encode("latin-1"))
    (src / "zcopy.bbj").write_bytes('rem Gr\xfc\xdfe\nprint "\xe4"\nend\n'.encode("latin-1"))  # same after LF
    (src / "cont.src").write_text('print "a",\n:"b"\nend\n')
    (src / "empty.bbj").write_text("  \n")
    (src / "blob.bbl").write_bytes(b"\x00\x01\x02binary")
    (src / "README.md").write_text("# not a source\n")
    out = root / "out"
    result = run_cli(
        "data",
        "prepare",
        "--chatml",
        str(root / "messy.jsonl"),
        "--sources",
        str(src),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--set",
        "data.max_length=2000",
        "--set",
        "data.heldout_ratio=0.1",
        "--set",
        f"data.decontaminate_against=[{root / 'evals.jsonl'}]",
        cwd=root,
    )
    return {"root": root, "out": out, "expected": expected, "result": result}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_exit_code_says_something_was_rejected(messy):
    r = messy["result"]
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    for name in (
        "train.jsonl",
        "heldout.jsonl",
        "cpt.jsonl",
        "rejected.jsonl",
        "audit.json",
        "report.html",
        "manifest.json",
    ):
        assert (messy["out"] / name).is_file(), name


def test_every_defect_is_counted_exactly(messy):
    exp = messy["expected"]
    rejected = read_jsonl(messy["out"] / "rejected.jsonl")
    chatml = Counter(r["reason"] for r in rejected if r["file"].endswith("messy.jsonl"))
    want = {**exp["schema"], **exp["filters"], **exp["dedupe"], **exp["decontaminate"]}
    assert dict(chatml) == want


def test_nothing_is_lost(messy):
    exp, out = messy["expected"], messy["out"]
    train, heldout = read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")
    rejected = [r for r in read_jsonl(out / "rejected.jsonl") if r["file"].endswith("messy.jsonl")]
    blank = 1
    assert len(train) + len(heldout) + len(rejected) + blank == exp["lines"]
    assert len(train) + len(heldout) == exp["kept_before_decontamination"] - 1
    lines = sorted(r["line"] for r in rejected)
    assert len(set(lines)) == len(lines), "a line was rejected twice"


def test_rejected_lines_keep_the_original_text(messy):
    rejected = read_jsonl(messy["out"] / "rejected.jsonl")
    source = (messy["root"] / "messy.jsonl").read_bytes().split(b"\n")
    for r in rejected:
        if not r["file"].endswith("messy.jsonl"):
            continue
        original = source[r["line"] - 1]
        assert r["raw"] == original.decode("utf-8", errors="backslashreplace"), r
        assert r["detail"]
    by_reason = {r["reason"]: r for r in rejected}
    assert "\\xe9" in by_reason["not-utf8"]["raw"] or "\\ud800" in by_reason["not-utf8"]["raw"]
    assert "column" in by_reason["malformed-json"]["detail"]
    assert "'bot'" in by_reason["unknown-role"]["detail"]
    copies = [r["duplicate_of"].rsplit(":", 1)[1] for r in rejected if r["reason"] == "duplicate"]
    assert copies == ["2", "3"]  # goods[1] and goods[2] are lines 2 and 3


def test_repairs_are_applied_and_counted(messy):
    out = messy["out"]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["answers"]["escapes_fixed"] == 1
    assert audit["scrubbed"]["by_kind"] == {"password": 1, "api_key": 1, "email": 1, "ip": 1}
    assert audit["system_prompts"]["added"] == 1 and audit["system_prompts"]["missing"] == 1
    assert audit["code"]["examples_failed"] == 1  # reported (code_check: report), kept
    assert audit["blank_lines"] == 1
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "heldout.jsonl")
    text = json.dumps(rows)
    assert "hunter2" not in text and "AbCdEf1234567890" not in text and "acme-corp" not in text
    assert "10.20.30.40" not in text
    assert all(r["messages"][0] == {"role": "system", "content": SYSTEM} for r in rows)
    fixed = next(r for r in rows if "rem example 100" in r["messages"][2]["content"])
    assert "\\n" not in fixed["messages"][2]["content"] and "\n```bbj\n" in fixed["messages"][2]["content"]


def test_outputs_follow_the_interface(messy):
    from bbjtune.decontamination import example_id

    out = messy["out"]
    for row in read_jsonl(out / "train.jsonl") + read_jsonl(out / "heldout.jsonl"):
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["id"] == example_id(row["messages"]) and len(row["id"]) == 16
        assert row["category"] in ("alpha", "beta") and row["generation"] == "character"
    for row in read_jsonl(out / "cpt.jsonl"):
        assert set(row) == {"text", "source", "chunk", "n_chunks"} and 0 <= row["chunk"] < row["n_chunks"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert any(i["path"].endswith("messy.jsonl") and len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert [s["step"] for s in manifest["metrics"]["steps"]] == [
        "read",
        "repair",
        "filter",
        "deduplicate",
        "decontaminate-eval",
        "split",
        "decontaminate-heldout",
        "write",
    ]


def test_split_is_stratified_and_decontaminated(messy):
    out = messy["out"]
    train, heldout = read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")
    assert 3 <= len(heldout) <= 4  # 10% of 35
    assert {r["category"] for r in heldout} == {"alpha", "beta"}
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert EVAL_PROMPT not in json.dumps(train)


def test_cpt_corpus_from_sources_and_answers(messy):
    out = messy["out"]
    rows = read_jsonl(out / "cpt.jsonl")
    by_source = {r["source"]: r for r in rows}
    latin = next(r for s, r in by_source.items() if s.endswith("latin.bbj"))
    assert latin["text"] == 'rem Grüße\nprint "ä"\nend\n'
    cont = next(r for s, r in by_source.items() if s.endswith("cont.src"))
    assert cont["text"] == 'print "a",\n:"b"\nend\n'
    rejected = {
        Path(r["file"]).name: r["reason"] for r in read_jsonl(out / "rejected.jsonl") if r["line"] is None
    }
    assert rejected == {"zcopy.bbj": "duplicate-file", "empty.bbj": "empty-file", "blob.bbl": "binary-file"}
    answers = [r for r in rows if r["source"].startswith("chatml:")]
    train_ids = {r["id"] for r in read_jsonl(out / "train.jsonl")}
    assert answers and {r["source"][len("chatml:") :] for r in answers} <= train_ids
    assert not any('"unterminated' in r["text"] for r in answers)  # failing code is not used
    audit = json.loads((out / "audit.json").read_text())
    assert audit["cpt"]["skipped_files"][0].endswith("README.md")
    assert audit["cpt"]["encodings"] == {"latin-1": 2, "utf-8": 1}


def test_report_is_self_contained_and_escaped(messy):
    html = (messy["out"] / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "data:image/png;base64," in html
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html


def test_strict_stops_at_the_first_bad_line(messy, tiny_model_dir, tmp_path):
    r = run_cli(
        "data",
        "prepare",
        "--chatml",
        str(messy["root"] / "messy.jsonl"),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "strict"),
        "--strict",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"messy.jsonl:{N_GOOD + 1}" in r.stderr and "malformed JSON" in r.stderr
    assert not (tmp_path / "strict" / "train.jsonl").exists()


def test_audit_reports_without_writing_data(messy, tiny_model_dir, tmp_path):
    r = run_cli(
        "data",
        "audit",
        str(messy["root"] / "messy.jsonl"),
        "--model",
        str(tiny_model_dir),
        "--max-length",
        "2000",
        "--out",
        str(tmp_path / "audit"),
        cwd=tmp_path,
    )
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr + r.stdout
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == ["audit.json", "report.html"]
    exp = messy["expected"]
    assert audit["rejected"]["by_reason"] == {**exp["schema"], **exp["filters"], **exp["dedupe"]}
    assert audit["duplicates"]["exact_examples"] == 2 and audit["duplicates"]["near_duplicates"] == 1
    assert audit["duplicates"]["repeated_prompts"] == 3  # two exact copies and one other answer
    assert audit["tokens"]["over_limit"] == 1 and audit["tokens_exact"] is True


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--chatml", "nowhere/*.jsonl"], "matches no file"),
        (["--sources", "empty-dir"], "matches no file"),
        (["--sources", "docs-only"], "none is a BBj source"),
    ],
)
def test_missing_inputs_are_usage_errors(args, needle, tmp_path):
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "docs-only").mkdir()
    (tmp_path / "docs-only" / "notes.md").write_text("x")
    r = run_cli("data", "prepare", *args, "--out", "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and needle in r.stderr and "hint:" in r.stderr
    assert not (tmp_path / "o").exists()
