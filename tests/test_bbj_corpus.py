"""Conformance of the built-in checker with real BBj code and the BBj language server's tests.

Reads ../shared/bbj-corpus (relative to the repository root) and skips when it is absent.

- Real programs (bbj-corpus/real) and the language server's examples: at least 99.5% accepted.
  Code-generator templates are not BBj until expanded (`class public (DB_NICE)(TBL_NICE)Form`)
  and are excluded by that rule, not by name; they must be rejected.
- Every language-server snippet labelled valid / valid-parse: no errors.
- Every language-server negative of kind syntax-or-structure: flagged.
- The three real bbjcpl captures: our bbjcpl-format output is the same lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bbjtune.bbj import check_file, check_source
from bbjtune.bbj.checker import decode_source
from bbjtune.bbj.diagnostics import format_bbjcpl

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bbj-corpus"
LS = CORPUS / "language-server"
pytestmark = pytest.mark.skipif(not (CORPUS / "real").is_dir(), reason="../shared/bbj-corpus is not present")

TEMPLATE_PLACEHOLDER = re.compile(r"\((DB|TBL)_[A-Z_]+\)")  # generator placeholders such as (DB_NICE)


def program_files() -> list[Path]:
    files = sorted((CORPUS / "real").glob("*/*")) + sorted((LS / "examples").glob("*.bbj"))
    return [f for f in files if f.suffix.lower() in (".bbj", ".bbjt", ".src")]


def is_generator_template(path: Path) -> bool:
    return bool(TEMPLATE_PLACEHOLDER.search(decode_source(path.read_bytes())))


def snippets() -> list[dict]:
    return [
        json.loads(line) for line in (LS / "index.jsonl").read_text(encoding="utf-8").splitlines() if line
    ]


def error_list(diagnostics) -> list[str]:
    return [
        f"{d.line}:{d.column} {d.code}: {d.message} | {d.source_line.strip()[:80]}"
        for d in diagnostics
        if d.severity == "error"
    ]


def test_real_programs_are_accepted():
    files = [f for f in program_files() if not is_generator_template(f)]
    assert len(files) >= 150
    rejected = {str(f.relative_to(CORPUS)): error_list(check_file(f)) for f in files}
    rejected = {name: errs for name, errs in rejected.items() if errs}
    accepted = 1 - len(rejected) / len(files)
    assert accepted >= 0.995, json.dumps(rejected, indent=1)


def test_generator_templates_are_rejected():
    templates = [f for f in program_files() if is_generator_template(f)]
    assert templates
    for path in templates:
        assert error_list(check_file(path)), path


def test_language_server_positive_snippets_have_no_errors():
    rows = [r for r in snippets() if r["label"] in ("valid", "valid-parse")]
    assert len(rows) >= 350
    failures = {r["id"]: error_list(check_file(LS / r["path"])) for r in rows}
    assert {k: v for k, v in failures.items() if v} == {}


def test_language_server_syntax_negatives_are_flagged():
    rows = [r for r in snippets() if r["kind_hint"] == "syntax-or-structure" and r["label"] != "unknown"]
    assert len(rows) >= 12
    missed = [r["id"] for r in rows if not error_list(check_file(LS / r["path"]))]
    assert missed == []


def test_language_server_line_break_negatives_get_a_warning():
    # The language server flags these in validation, while its parser accepts them (other
    # snippets with the same text are labelled valid-parse): a warning satisfies both.
    rows = [
        r
        for r in snippets()
        if r["kind_hint"] == "syntax-or-structure"
        and r["label"] == "unknown"
        and any("needs to start in a new line" in line for line in r["expect_lines"])
    ]
    assert len(rows) == 3
    for r in rows:
        diagnostics = check_file(LS / r["path"])
        assert [d.code for d in diagnostics if d.code == "line-break"], r["id"]
        assert not error_list(diagnostics), r["id"]


def test_language_server_test_data_is_clean():
    assert error_list(check_file(LS / "test-data" / "class-def.bbj")) == []


def test_builtin_library_files_parse():
    for path in sorted((LS / "builtins").glob("*.bbl")):
        assert error_list(check_file(path)) == [], path


@pytest.mark.parametrize("name", ["no-errors", "single-error", "multiple-errors"])
def test_bbjcpl_format_matches_the_real_captures(name):
    program = LS / "cpl-fixtures" / f"{name}.bbj"
    captured = (LS / "cpl-fixtures" / f"{name}-stderr.txt").read_text(encoding="utf-8")
    real_path = captured.split(": error at line")[0] if captured else "x.bbj"
    ours = format_bbjcpl(check_source(program.read_text(encoding="utf-8"), real_path), real_path)
    assert ours == captured


def test_real_files_with_crlf_and_latin1_decode_and_pass():
    manifest = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = manifest[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in manifest[1:]]
    special = [
        r
        for r in rows
        if r["local_path"].startswith("real/")
        and r["local_path"].endswith(".bbj")
        and (r["encoding"] == "latin1" or r["eol"] == "crlf")
    ]
    assert any(r["encoding"] == "latin1" for r in special) and any(r["eol"] == "crlf" for r in special)
    for r in special:
        path = CORPUS / r["local_path"]
        if not is_generator_template(path):
            assert error_list(check_file(path)) == [], r["local_path"]
