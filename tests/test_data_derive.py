from __future__ import annotations


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
    missing = run_cli("data", "derive", "nowhere", "--out", "x.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
