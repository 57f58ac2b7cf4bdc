from __future__ import annotations

import re


from bbjtune.data.derive import derive_pairs, documented_methods

SOURCE = """\
use java.util.HashMap
rem /**
rem  * Keeps prices per article.
rem  */
class public PriceList
    field private HashMap Prices! = new HashMap()
    rem /**
    rem  * Store the price of an article, replacing an older price.
    rem  *
    rem  * @param article$ The article number
    rem  * @param price The new price
    rem  */
    method public void setPrice(BBjString article$, BBjNumber price)
        #Prices!.put(article$, price)
        rem the old price is gone now
    methodend
    rem /** {@inheritDoc} */
    method public BBjString toString()
        methodret str(#Prices!)
    methodend
classend
"""


def test_documented_methods_are_found_with_their_docs():
    methods = list(documented_methods(SOURCE, "p.bbj"))
    assert [m.signature for m in methods] == [
        "method public void setPrice(BBjString article$, BBjNumber price)",
        "method public BBjString toString()",
    ]
    first = methods[0]
    assert first.class_name == "PriceList"
    assert first.description == "Store the price of an article, replacing an older price."
    assert first.tags == [("@param", "article$ The article number"), ("@param", "price The new price")]
    assert first.code.startswith("method public void setPrice") and first.code.rstrip().endswith("methodend")


def test_pairs_write_and_explain_keep_provenance(tmp_path):
    src = tmp_path / "PriceList.bbj"
    src.write_bytes(SOURCE.replace("\n", "\r\n").encode("latin-1"))
    pairs = list(derive_pairs([src], system="SYS"))
    kinds = sorted(p["derived"] for p in pairs)
    assert kinds == ["complete-program", "method-explain", "method-write"]  # inheritDoc is skipped
    write = next(p for p in pairs if p["derived"] == "method-write")
    assert write["messages"][0] == {"role": "system", "content": "SYS"}
    assert "`setPrice`" in write["messages"][1]["content"] and "PriceList" in write["messages"][1]["content"]
    assert write["messages"][2]["content"].startswith(
        "```bbj\nclass public PriceList\n\n    method public void setPrice"
    )
    assert write["messages"][2]["content"].endswith("classend\n```")
    assert "\r" not in write["messages"][2]["content"]
    assert write["source"] == str(src) and len(write["id"]) == 16
    explain = next(p for p in pairs if p["derived"] == "method-explain")
    assert explain["messages"][2]["content"].startswith("Store the price of an article")


def test_derived_code_from_real_corpus_passes_the_checker(corpus_dir):
    from bbjtune.bbj import check_source, extract_bbj

    # code-generator templates (placeholders like `(DB_NICE)`) are not BBj until expanded
    files = sorted(
        p
        for p in (corpus_dir / "real").rglob("*")
        if p.suffix in (".bbj", ".bbjt", ".src") and "(TBL_" not in p.read_text(encoding="latin-1")
    )
    pairs = [p for p in derive_pairs(files, system="S") if p["derived"] == "method-write"]
    assert len(pairs) >= 300
    failing = [
        p["id"]
        for p in pairs
        if any(d.severity == "error" for d in check_source(extract_bbj(p["messages"][2]["content"])))
    ]
    assert len(failing) / len(pairs) < 0.02, failing[:5]


def test_data_derive_command_writes_chatml(tmp_path):
    import json

    from conftest import run_cli

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "PriceList.bbj").write_text(SOURCE)
    out = run_cli(
        "data", "derive", "src", "--out", "derived.jsonl", "--system", "You are a BBj expert.", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "derived.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["messages"][0]["content"] == "You are a BBj expert." for r in rows)
    assert "3 instruction pairs" in out.stderr
    (tmp_path / "tiny.bbj").write_text('print "hi"\n')
    empty = run_cli("data", "derive", "tiny.bbj", "--out", "e.jsonl", cwd=tmp_path)
    assert empty.returncode == 0 and "nothing to derive from" in empty.stderr
    missing = run_cli("data", "derive", "nowhere", "--out", "x.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


# A reference library in the BBj language server's format (written for this test): doc blocks, each
# followed by the declaration it documents.
LIBRARY = """\
library

/@@
#### Syntax
\\`REPEAT(text{,count}{,ERR=lineref})\\`

#### Description

The **REPEAT()** function returns its text the given number of times.
@/
REPEAT(text: string, count?: int, ERR?!: lineref): string

/@@
Too short.
@/
SHORT(x: int): int

/@@
The CLOCK variable returns the seconds since midnight as a whole number.
@/
var CLOCK: int

/@@
If an error occurs, go on with the statement after the failing one.
@/
label *ONWARD

/@@
Window Wobble
@/
eventtype ON_WOBBLE

/@@
Shared Title
@/
eventtype ON_ONE

/@@
Shared Title
@/
eventtype ON_TWO
"""


def test_a_reference_library_gives_one_factual_pair_per_documented_name(tmp_path):
    lib = tmp_path / "builtins.bbl"
    lib.write_text(LIBRARY)
    pairs = {p["derived"]: p for p in derive_pairs([lib], system="S")}
    # SHORT's doc is too thin to teach anything; a title two events share names neither; no
    # "complete this program" pair from a library of declarations
    assert sorted(pairs) == ["reference-event", "reference-function", "reference-label", "reference-variable"]
    fn = pairs["reference-function"]
    assert "REPEAT()" in fn["messages"][1]["content"]
    answer = fn["messages"][2]["content"]
    assert answer.startswith("The **REPEAT()** function returns its text the given number of times.")
    assert "- `REPEAT(text{,count}{,ERR=lineref})`" in answer  # the syntax as documented
    assert "- `count`: an integer (optional)" in answer and "- `ERR=`: a line label (optional)" in answer
    assert answer.endswith("It returns a string.") and "####" not in answer
    assert fn["task"] == "factual" and fn["category"] == "reference" and fn["source"] == str(lib)
    var = pairs["reference-variable"]["messages"]
    assert var[1]["content"] == "What does the BBj system variable CLOCK hold?"
    assert var[2]["content"].endswith("`CLOCK` is an integer.")
    label = pairs["reference-label"]["messages"]
    assert label[1]["content"] == "What does ERR=*ONWARD do in BBj?"
    assert label[2]["content"].startswith("`ERR=*ONWARD` on a statement: if an error occurs, go on")
    event = pairs["reference-event"]["messages"]
    assert '"Window Wobble"' in event[1]["content"] and event[2]["content"].startswith("`ON_WOBBLE`")


def test_the_language_servers_builtins_pass_the_data_stage(corpus_dir, tmp_path):
    import json

    from conftest import run_cli

    builtins = corpus_dir / "language-server" / "builtins"
    out = run_cli("data", "derive", str(builtins), "--out", "ref.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pairs = [json.loads(line) for line in (tmp_path / "ref.jsonl").read_text().splitlines()]
    kinds = {p["derived"] for p in pairs}
    assert kinds == {"reference-function", "reference-variable", "reference-label", "reference-event"}
    assert len(pairs) >= 250 and len({p["id"] for p in pairs}) == len(pairs)
    assert not [
        p for p in pairs if "\\`" in p["messages"][2]["content"] or "@/" in p["messages"][2]["content"]
    ]
    # the data stage's own checks (the checker on any code, fragments, duplicates): nothing set aside
    audit = run_cli("data", "audit", "ref.jsonl", "--out", "audit", "--model", "tiny:demo", cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    steps = json.loads((tmp_path / "audit" / "audit.json").read_text())["steps"]
    assert steps[-1]["out"] == len(pairs)


def test_a_folder_of_sources_keeps_bbj_txt_files_and_skips_prose_ones(tmp_path):
    from bbjtune.data.cpt import find_sources

    (tmp_path / "prog.bbj").write_text(SOURCE)
    (tmp_path / "old.txt").write_text("rem an old program saved as text\nx = 1\nprint x\nend\n")
    (tmp_path / "LICENSE.txt").write_text(
        "Permission is hereby granted, free of charge, to any person obtaining a copy.\n"
        "The above copyright notice shall be included in all copies of the Software.\n"
    )
    (tmp_path / "compile-stderr.txt").write_text("prog.bbj: error at line 3 (12): unexpected token\n")
    files, skipped = find_sources([str(tmp_path)])
    assert sorted(p.name for p in files) == ["old.txt", "prog.bbj"]
    assert sorted(s.rsplit("/", 1)[-1] for s in skipped) == ["LICENSE.txt", "compile-stderr.txt"]
    assert not any("Permission" in m["content"] for p in derive_pairs(files, "sys") for m in p["messages"])


def test_bbjapi_pairs_name_only_real_methods_with_their_argument_counts():
    from bbjtune.bbj.api import api_table
    from bbjtune.data.derive import API_CLASS_METHODS, api_pairs

    pairs = api_pairs("sys")
    table = api_table()
    assert len({p["id"] for p in pairs}) == len(pairs)
    window = [p for p in pairs if p["source"] == "bbjapi:BBjWindow"]
    assert len(table.classes["BBjWindow"]["methods"]) > API_CLASS_METHODS  # asked one verb at a time
    adds = next(p for p in window if "add...()" in p["messages"][1]["content"])["messages"][2]["content"]
    assert "- `addButton()`: 1, 2, 3, 6 or 7 arguments" in adds
    assert "getText" not in adds and "addBbjEditBox" not in adds
    for pair in pairs:  # every listed method exists on the class with exactly those counts
        cls = table.classes[pair["source"].removeprefix("bbjapi:")]
        for name, counts in re.findall(r"^- `(\w+)\(\)`: (.*)$", pair["messages"][2]["content"], re.M):
            assert name in cls["methods"]
            assert sorted(int(c) for c in re.findall(r"\d+", counts)) == sorted(
                set(cls["methods"][name])
            ) or (counts == "no arguments" and cls["methods"][name] == [0])
    assert all(p["task"] == "factual" and "```" not in p["messages"][2]["content"] for p in pairs)


def test_derive_cli_writes_bbjapi_pairs_and_says_what_to_do_with_nothing(tmp_path):
    from conftest import run_cli

    out = tmp_path / "api.jsonl"
    result = run_cli("data", "derive", "--bbjapi", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) > 300
    assert "about the BBjAPI classes" in result.stderr
    result = run_cli("data", "derive", "--out", str(tmp_path / "none.jsonl"))
    assert result.returncode != 0 and "--bbjapi" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none.jsonl").exists()
