"""The data stage's pieces on small inputs: line checks, repairs, filters, scrubbing, split, chunking."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bbjtune.data.chatml import LineProblem, iter_chatml, parse_line
from bbjtune.data.clean import (
    ExampleInfo,
    SimilarityIndex,
    char_shingles,
    filter_and_dedupe,
    fix_literal_escapes,
    has_literal_escapes,
    minhash,
    text_key,
    truncation_reason,
    word_shingles,
)
from bbjtune.data.cpt import SourceProblem, chunk_text, decode_source, statement_units
from bbjtune.data.scrub import scrub_text
from bbjtune.data.split import split_heldout
from bbjtune.decontamination import ContaminationIndex
from bbjtune.data.tokens import TokenCounter
from bbjtune.errors import BbjtuneError

ESTIMATE = TokenCounter(None, "estimate")


def line(messages, **extra) -> bytes:
    return json.dumps({"messages": messages, **extra}).encode()


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# ----------------------------------------------------------------------------- chatml


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"messages": [', "malformed-json"),
        (b'"just a string"', "not-an-object"),
        (b'{"text": "hello"}', "missing-messages"),
        (b'{"messages": []}', "missing-messages"),
        (b'{"messages": ["hi"]}', "bad-message"),
        (line(msgs(("user", "q"), ("assistant", 5))), "bad-message"),
        (line(msgs(("human", "q"), ("assistant", "a"))), "unknown-role"),
        (line(msgs(("assistant", "a"), ("user", "q"))), "bad-role-order"),
        (line(msgs(("user", "q"), ("assistant", "a"), ("user", "q2"))), "bad-role-order"),
        (line(msgs(("user", "q"), ("system", "s"), ("assistant", "a"))), "bad-role-order"),
        (line(msgs(("user", " \n"), ("assistant", "a"))), "empty-prompt"),
        (line(msgs(("user", "q"), ("assistant", ""))), "empty-answer"),
        (line(msgs(("system", ""), ("user", "q"), ("assistant", "a"))), "empty-system-prompt"),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}', "not-utf8"),
    ],
)
def test_each_bad_line_has_its_reason(raw, reason):
    with pytest.raises(LineProblem) as exc:
        parse_line(raw)
    assert exc.value.reason == reason and exc.value.detail


def test_good_lines_keep_extra_keys_and_multi_turn():
    messages, extra = parse_line(
        line(
            msgs(("system", "s"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")),
            category="oop",
            task="fix",
        )
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert extra == {"category": "oop", "task": "fix"}


def test_reading_handles_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(
        b"\xef\xbb\xbf"
        + line(msgs(("user", "q"), ("assistant", "a")))
        + b"\r\n\r\n"
        + line(msgs(("user", "q2"), ("assistant", "a2")))
        + b"\r\n"
    )
    items = list(iter_chatml(p))
    assert items[1] is None
    assert [(i.line, i.prompt) for i in items if i] == [(1, "q"), (3, "q2")]
    with open(p, "rb") as fh:  # offsets point at the line's start, for rejected.jsonl
        fh.seek(items[2].offset)
        assert fh.readline().startswith(b'{"messages"')


def test_utf16_file_is_a_usage_error(tmp_path):
    p = tmp_path / "u16.jsonl"
    p.write_bytes('{"messages": []}\n'.encode("utf-16"))
    with pytest.raises(BbjtuneError, match="UTF-16"):
        list(iter_chatml(p))


# ----------------------------------------------------------------------------- repairs and filters


def test_literal_escapes():
    assert has_literal_escapes('Use this:\\n```bbj\\nprint \\"hi\\"\\n```')
    assert not has_literal_escapes("line one\nline two")
    assert not has_literal_escapes("one literal \\n among\nreal\nline\nbreaks")
    assert fix_literal_escapes('a\\nb\\tc \\"q\\"') == 'a\nb\tc "q"'


@pytest.mark.parametrize(
    "answer, cut",
    [
        ("Here:\n```bbj\nprint 1\n", True),
        ("To open a file you use the OPEN verb and then the", True),
        ("You pass the channel, the key,", True),
        ("It works like this...", True),
        ("Open the file first.\n\n`", True),
        ("Here:\n```bbj\nprint 1\nend\n```\nThat prints one.", False),
        ("Here:\n```bbj\nprint 1\nend\n```", False),
        ('print "x"\nend', False),  # bare code, not a sentence
        ("Yes.", False),
        ("Here:\n```bbj\nprint 1\nend\n```\nSee also `PRINT`", False),  # short trailing note
    ],
)
def test_truncation_heuristic(answer, cut):
    assert bool(truncation_reason(answer)) is cut, truncation_reason(answer)


def _info(i, prompt="p", answer="a" * 50, **kw) -> ExampleInfo:
    pk, ak = text_key(prompt), text_key(answer)
    base = dict(
        index=i,
        file="f.jsonl",
        line=i + 1,
        offset=0,
        prompt_key=pk,
        answer_key=ak,
        example_key=hashlib.blake2b(pk + ak).digest(),
        system_key=None,
        answer_chars=len(answer),
        example_sig=minhash(word_shingles(prompt + "\n" + answer)),
        prompt_sig=minhash(char_shingles(prompt)),
    )
    base.update(kw)
    return ExampleInfo(**base)


def test_filter_order_and_duplicates():
    long_answer = " ".join(f"word{i}" for i in range(200))
    infos = [
        _info(0, "first prompt", long_answer),
        _info(1, "first prompt", long_answer),  # exact copy
        _info(2, "first prompt", "another answer " * 10),  # repeated prompt
        _info(3, "first prompt, please", long_answer),  # near copy
        _info(4, "short", "ok", answer_chars=2),  # fragment (and a repeat of nothing)
        _info(5, "cut", "x" * 40, truncated="never closed"),
        _info(6, "bad code", "y" * 40, code_error="line 1: oops"),
        _info(7, "long", "z" * 40, n_tokens=5000),
        _info(8, "fine", "w" * 40),
    ]
    kw = dict(
        min_answer_chars=10,
        drop_truncated=True,
        code_check="reject",
        max_length=1000,
        drop_too_long=True,
        duplicate_prompts="keep-first",
        near_duplicate_threshold=0.9,
    )
    got = {d.index: d.reason for d in filter_and_dedupe(infos, **kw)}
    assert got == {
        1: "duplicate",
        2: "duplicate-prompt",
        3: "near-duplicate",
        4: "too-short",
        5: "truncated",
        6: "code-error",
        7: "too-long",
    }
    relaxed = {
        d.index: d.reason
        for d in filter_and_dedupe(
            infos,
            **{
                **kw,
                "code_check": "report",
                "duplicate_prompts": "keep-all",
                "drop_truncated": False,
                "drop_too_long": False,
            },
        )
    }
    assert relaxed == {1: "duplicate", 3: "near-duplicate", 4: "too-short"}


def test_similarity_index_estimates_jaccard():
    base = " ".join(f"t{i}" for i in range(404))
    changed = " ".join([f"t{i}" for i in range(380)] + [f"u{i}" for i in range(24)])
    a, b, c = word_shingles(base), word_shingles(changed), word_shingles(base.replace("t", "v"))
    assert len(a) == 400 and len(np.intersect1d(a, b)) == 376  # true Jaccard 376/424 = 0.887
    index = SimilarityIndex(0.8)
    index.add("a", minhash(a))
    hits = index.matches(minhash(b))
    assert hits and hits[0][1] == "a" and abs(hits[0][0] - 376 / 424) < 0.08
    assert index.matches(minhash(c)) == []
    assert minhash(a).dtype == np.uint32 and (minhash(a) == minhash(word_shingles(base.upper()))).all()
    assert len(char_shingles("abc")) == 1 and len(char_shingles("Hello  World")) == len(
        char_shingles("hello world")
    )


# ----------------------------------------------------------------------------- scrubbing


@pytest.mark.parametrize(
    "text, kinds, gone",
    [
        ('sqlopen (1)"DSN=sales;UID=admin;PWD=hunter2"', {"password": 1}, "hunter2"),
        ('url$ = "jdbc:mysql://bob:s3cret@db.acme.com/erp"', {"password": 1}, "s3cret"),
        ('password$ = "Tr0ub4dor&3"', {"password": 1}, "Tr0ub4dor"),
        ('apiKey$ = "AbCdEf1234567890"', {"api_key": 1}, "AbCdEf1234567890"),
        ("aws key AKIAIOSFODNN7EXAMPLE here", {"api_key": 1}, "AKIAIOSFODNN7EXAMPLE"),
        ('hdr$ = "Authorization: Bearer abcdef1234567890xyz"', {"api_key": 1}, "abcdef1234567890xyz"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", {"api_key": 1}, "MIIEow"),
        ('mail$ = "jane.doe@acme-corp.com"', {"email": 1}, "jane.doe"),
        ('host$ = "192.168.10.5"', {"ip": 1}, "192.168.10.5"),
    ],
)
def test_scrub_finds_secrets(text, kinds, gone):
    new, counts = scrub_text(text)
    assert dict(counts) == kinds and gone not in new
    assert scrub_text(new) == (new, {})  # placeholders are left alone: scrubbing twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        'PRINT "Password: ",',
        "IF pwd$ = input$ THEN GOTO ok",
        'compass$ = "north"',
        'tokenizer$ = "split words"',
        "loopback 127.0.0.1 and 0.0.0.0 and docs 192.0.2.7",
        "version 300.1.2.3",
        'mail$ = "user@example.com"',
        "@(10,5) File@(x) sysgui!",
        'print "token=1"',
    ],
)
def test_scrub_leaves_ordinary_code_alone(text):
    assert scrub_text(text) == (text, {})


# ----------------------------------------------------------------------------- split and decontamination


def test_split_is_deterministic_stratified_and_keeps_groups_together():
    infos = []
    for i in range(200):
        cat = "a" if i < 150 else "b"
        prompt = f"unique prompt number {i} about {'apples' if i % 3 else 'pears'} {i * 7919 % 1000}"
        infos.append(_info(i, prompt, category=cat))
    for j in range(200, 206):  # six copies of one prompt: one group
        infos.append(_info(j, "the very same prompt text", category="a"))
    held = split_heldout(infos, 0.1, 42, 0.7)
    assert held == split_heldout(infos, 0.1, 42, 0.7)
    assert held != split_heldout(infos, 0.1, 7, 0.7)
    assert abs(len(held) - 21) <= 6
    cats = [infos[i].category for i in held]
    assert 0 < cats.count("b") <= cats.count("a")
    group = set(range(200, 206))
    assert group <= held or not (group & held)


def test_the_split_depends_on_the_examples_not_on_how_their_file_is_spelled():
    """`bbjtune data prepare` run from the project (examples/x.jsonl) and from elsewhere (/abs/examples/
    x.jsonl) holds out the same examples; so does the same data after a file is renamed."""
    import dataclasses

    infos = [_info(i, f"prompt number {i} about topic {i % 7}", category="ab"[i % 2]) for i in range(120)]
    held = split_heldout(infos, 0.1, 42, 0.7)
    for spelled in ("/home/me/project/f.jsonl", "data/renamed.jsonl"):
        moved = [dataclasses.replace(info, file=spelled) for info in infos]
        assert split_heldout(moved, 0.1, 42, 0.7) == held


def test_split_with_zero_ratio_holds_nothing_out():
    infos = [_info(i, f"p{i}") for i in range(10)]
    assert split_heldout(infos, 0.0, 1, 0.7) == set()


def test_contamination_index():
    index = ContaminationIndex(8, 0.5)
    index.add("eval s:1", "Write a BBj program that prints every line of a text file with line numbers")
    index.add("eval s:2", "Sort an array")  # shorter than n words: must appear whole
    index.add("eval s:3", "Hi")  # one or two words: only an identical prompt matches
    hit = index.match(
        "Please write a BBj program that prints every line of a text file with line numbers, thanks"
    )
    assert hit and hit.label == "eval s:1" and hit.overlap == 1.0
    assert index.match("Write a BBj program that opens a window with a button") is None
    assert index.match("How do I sort an array in BBj?").label == "eval s:2"
    assert index.match("hi").label == "eval s:3" and index.match("hi there") is None


# ----------------------------------------------------------------------------- stage 1 corpus


def test_decode_source():
    assert decode_source("a\r\nb\rc".encode("latin-1")) == ("a\nb\nc\n", "utf-8")
    assert decode_source("Gr\xfc\xdfe\n".encode("latin-1")) == ("Grüße\n", "latin-1")
    assert decode_source(b"\xef\xbb\xbfprint 1\n") == ("print 1\n", "utf-8")
    for data, reason in ((b"\x00\x01bin", "binary-file"), (b" \n\t\n", "empty-file")):
        with pytest.raises(SourceProblem) as exc:
            decode_source(data)
        assert exc.value.reason == reason


def test_statement_units_keep_continuations_and_latin1_controls():
    text = 'a = 1\nprint "x",\n:"y",\n:"z"\n  :not a continuation\nb\x85c\n'
    units = statement_units(text)
    assert units == ["a = 1\n", 'print "x",\n:"y",\n:"z"\n', "  :not a continuation\n", "b\x85c\n"]
    assert "".join(units) == text


def test_chunks_are_lossless_within_budget_and_cut_at_good_places():
    method = "method public void m{0}()\n" + "    x = {0}\n" * 6 + "methodend\n\n"
    text = "class public C\n" + "".join(method.format(i) for i in range(30)) + "classend\n"
    budget = 120
    pairs, oversized = chunk_text(text, budget, ESTIMATE)
    chunks = [c for c, _ in pairs]
    assert "".join(chunks) == text and oversized == 0 and len(chunks) > 3
    assert all(n == sum(ESTIMATE.count(statement_units(c))) <= budget for c, n in pairs)
    assert (
        sum(c.endswith("methodend\n\n") or c.endswith("methodend\n") for c in chunks[:-1]) >= len(chunks) - 2
    )
    cont = "print 1,\n" + ":2,\n" * 200 + ":3\n"  # one statement longer than the budget stays whole
    pairs, oversized = chunk_text("x=1\n" + cont, 50, ESTIMATE)
    assert pairs[-1][0] == cont and oversized == 1
    assert chunk_text("short\n", 50, ESTIMATE) == ([("short\n", 2)], 0)


def test_scan_in_worker_processes_gives_the_same_result(tmp_path):
    from bbjtune.data.scan import ScanOptions, scan_chatml

    path = tmp_path / "many.jsonl"
    rows = []
    for i in range(300):
        answer = f"Answer {i}:\n\n```bbj\nx = {i}\nprint x\nend\n```\n\nDone with {i}." if i % 7 else "ok"
        rows.append(
            line(
                msgs(("user", f"question {i % 250} about item {i % 250}"), ("assistant", answer)),
                category=f"c{i % 3}",
            )
        )
    rows.insert(50, b"{broken")
    path.write_bytes(b"\n".join(rows) + b"\n")
    options = ScanOptions(fix_escapes=True, scrub=True, check_code=True)
    spools = [tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"]
    results = []
    for workers, spool_path in zip((1, 2), spools):
        with open(spool_path, "w") as spool:
            results.append(
                scan_chatml(
                    [path], spool=spool, tokens=ESTIMATE, options=options, strict=False, workers=workers
                )
            )
    one, two = results
    assert spools[0].read_bytes() == spools[1].read_bytes()
    assert [r.line for r in one.rejections] == [r.line for r in two.rejections] == [51]
    fields = (
        "index",
        "line",
        "prompt_key",
        "example_key",
        "n_tokens",
        "truncated",
        "code_blocks",
        "category",
    )
    assert [[getattr(i, f) for f in fields] for i in one.infos] == [
        [getattr(i, f) for f in fields] for i in two.infos
    ]
    assert all((a.example_sig == b.example_sig).all() for a, b in zip(one.infos, two.infos))
    assert one.code.blocks == two.code.blocks > 200 and one.system_prompts == two.system_prompts


def test_cpt_corpus_drops_copies_and_near_copies(tmp_path):
    import io

    from bbjtune.data.cpt import CptCorpus

    program = "".join(f'print "line {i} of the program", {i}\n' for i in range(60))
    files = {
        "a.bbj": program,
        "b.bbj": program.replace("\n", "\r\n"),  # same after LF
        "c.bbj": program.replace("line 7 ", "row 7 "),
        "d.bbj": "print 1\nend\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
    for near_dedupe, expected in (
        (False, {"b.bbj": "duplicate-file"}),
        (True, {"b.bbj": "duplicate-file", "c.bbj": "near-duplicate-file"}),
    ):
        out = io.StringIO()
        corpus = CptCorpus(out, ESTIMATE, 100, scrub=True, near_dedupe=near_dedupe, near_threshold=0.9)
        for name in sorted(files):
            corpus.add_file(tmp_path / name)
        corpus.add_answer("abc", [("print 1\nend\n", True), ("x = (\n", False), ("print 2\n", True)])
        stats = corpus.finish()
        assert {Path(r.file).name: r.reason for r in corpus.rejections} == expected
        rows = [json.loads(x) for x in out.getvalue().splitlines()]
        assert [r["text"] for r in rows if r["source"] == "chatml:abc"] == [
            "print 2\n"
        ]  # d.bbj has the first
        assert stats.answer_blocks == 3 and stats.answer_blocks_failing_check == 1
        assert stats.answer_blocks_duplicate == 1 and stats.tokens == sum(stats.chunk_tokens)
        assert abs(stats.tokens - sum(ESTIMATE.count([r["text"] for r in rows]))) < 0.02 * stats.tokens
        a_chunks = [r for r in rows if r["source"].endswith("a.bbj")]
        assert len(a_chunks) > 1 and "".join(r["text"] for r in a_chunks) == program


def test_split_never_holds_out_the_only_example_of_a_category():
    infos = [_info(i, f"prompt number {i} on its own", category="big") for i in range(40)]
    topics = [
        "orbital mechanics",
        "baking sourdough",
        "tax forms",
        "jazz chords",
        "sailing knots",
        "moss gardens",
    ]
    infos += [_info(40 + k, f"how about {topic}?", category=f"rare{k}") for k, topic in enumerate(topics)]
    held = split_heldout(infos, 0.1, 3, 0.7)  # 4.6 to hold out: the remainder would go to a singleton
    assert len(held) == 4 and all(infos[i].category == "big" for i in held)
