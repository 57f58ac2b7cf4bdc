"""The adapter for the real bbjcpl: finding it, running it, and reading its output.

The real compiler needs a licensed BBj installation, so these tests use the three real
captures of `bbjcpl -N` in ../shared/bbj-corpus/language-server/cpl-fixtures, and a test
double of the process (tests/fixtures/bbjcpl/fake-bbj-home/bin/bbjcpl) that replays them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bbjtune.bbj import check_source, check_with
from bbjtune.bbj.bbjcpl import BBJCPL_MESSAGE, find_bbjcpl, parse_bbjcpl_output, run_bbjcpl
from bbjtune.errors import BbjtuneError

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT.parent / "shared" / "bbj-corpus" / "language-server" / "cpl-fixtures"
FAKE_HOME = ROOT / "tests" / "fixtures" / "bbjcpl" / "fake-bbj-home"
needs_captures = pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/bbj-corpus is not present")


@pytest.fixture
def no_bbjcpl(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("BBJ_HOME", raising=False)


@pytest.fixture
def fake_bbjcpl(monkeypatch, tmp_path):
    """BBJ_HOME points at the replaying test double; nothing named bbjcpl on PATH."""
    monkeypatch.setenv(
        "PATH", str(tmp_path) + os.pathsep + os.path.dirname(sys.executable)
    )  # python3 for the double
    monkeypatch.setenv("BBJ_HOME", str(FAKE_HOME))
    monkeypatch.setenv("FAKE_BBJCPL_CAPTURES", str(CAPTURES))
    return FAKE_HOME / "bin" / "bbjcpl"


# ---------------------------------------------------------------------------- parsing output
@needs_captures
def test_parses_the_real_multiple_errors_capture_exactly():
    stderr = (CAPTURES / "multiple-errors-stderr.txt").read_text(encoding="utf-8")
    found = parse_bbjcpl_output(stderr)
    path = "/Users/beff/_workspace/bbj-language-server/bbj-vscode/test/test-data/cpl-fixtures/multiple-errors.bbj"
    assert [(d.file, d.line, d.bbx_line, d.column, d.source_line) for d in found] == [
        (path, 3, 30, 5, "    method public void firstBroken())"),
        (path, 5, 50, 5, "    methodend"),
        (path, 6, 60, 5, "    method public void secondBroken("),
        (path, 8, 80, 5, "    methodend"),
    ]
    assert all(d.severity == "error" and d.code == "bbjcpl" and d.message == BBJCPL_MESSAGE for d in found)


@needs_captures
def test_parses_the_real_single_error_and_no_error_captures():
    single = parse_bbjcpl_output(
        (CAPTURES / "single-error-stderr.txt").read_text(encoding="utf-8"), filename="s.bbj"
    )
    assert [(d.file, d.line, d.bbx_line) for d in single] == [("s.bbj", 3, 30), ("s.bbj", 5, 50)]
    assert parse_bbjcpl_output((CAPTURES / "no-errors-stderr.txt").read_text(encoding="utf-8")) == []


def test_parses_windows_paths_crlf_and_stdout():
    stderr = "C:\\work\\app\\x.bbj: error at line 120 (12): \tprint (\r\n"
    (d,) = parse_bbjcpl_output(stderr, "BBj compiler banner\n")
    assert (d.file, d.line, d.bbx_line, d.source_line, d.column) == (
        "C:\\work\\app\\x.bbj",
        12,
        120,
        "\tprint (",
        2,
    )
    (d,) = parse_bbjcpl_output("", "a.bbj: error at line 0010 (1): x =\n")
    assert (d.line, d.bbx_line) == (1, 10)


def test_other_stderr_lines_are_kept_as_messages():
    found = parse_bbjcpl_output("Exception in thread main: no licence\n", filename="a.bbj")
    assert [(d.code, d.line, d.file) for d in found] == [("bbjcpl-message", 1, "a.bbj")]
    assert "no licence" in found[0].message


# ---------------------------------------------------------------------------- finding and running
def test_find_bbjcpl_uses_bbj_home(fake_bbjcpl):
    assert find_bbjcpl() == fake_bbjcpl


def test_find_bbjcpl_uses_path(monkeypatch, no_bbjcpl):
    monkeypatch.setenv("PATH", str(FAKE_HOME / "bin"))
    assert find_bbjcpl() == FAKE_HOME / "bin" / "bbjcpl"


def test_find_bbjcpl_returns_none_when_absent(no_bbjcpl):
    assert find_bbjcpl() is None


@needs_captures
@pytest.mark.parametrize("name", ["no-errors", "single-error", "multiple-errors"])
def test_run_bbjcpl_on_a_file_replays_the_capture(fake_bbjcpl, name):
    program = CAPTURES / f"{name}.bbj"
    expected = parse_bbjcpl_output((CAPTURES / f"{name}-stderr.txt").read_text(encoding="utf-8"))
    found = run_bbjcpl(program)
    assert [(d.file, d.line, d.bbx_line, d.source_line) for d in found] == [
        (str(program), d.line, d.bbx_line, d.source_line) for d in expected
    ]


@needs_captures
def test_run_bbjcpl_on_text_reports_the_callers_name(fake_bbjcpl):
    text = (CAPTURES / "single-error.bbj").read_text(encoding="utf-8")
    assert [(d.file, d.line) for d in run_bbjcpl(text, filename="mine.bbj")] == [
        ("mine.bbj", 3),
        ("mine.bbj", 5),
    ]
    assert {d.file for d in run_bbjcpl(text)} == {None}


@needs_captures
def test_the_builtin_checker_agrees_with_the_captures():
    for program in sorted(CAPTURES.glob("*.bbj")):
        real = parse_bbjcpl_output((CAPTURES / f"{program.stem}-stderr.txt").read_text(encoding="utf-8"))
        ours = [d for d in check_source(program.read_text(encoding="utf-8")) if d.severity == "error"]
        assert [(d.line, d.bbx_line, d.source_line) for d in ours] == [
            (d.line, d.bbx_line, d.source_line) for d in real
        ], program.name


@needs_captures
def test_output_that_is_not_a_verdict_raises(fake_bbjcpl):
    with pytest.raises(BbjtuneError, match="did not check"):
        run_bbjcpl("x = 1\n")  # the test double has no capture for this program


@needs_captures
def test_a_hanging_bbjcpl_times_out(fake_bbjcpl, monkeypatch):
    monkeypatch.setenv("FAKE_BBJCPL_SLEEP", "10")
    with pytest.raises(BbjtuneError, match="did not finish"):
        run_bbjcpl(CAPTURES / "no-errors.bbj", timeout=0.5)


# ---------------------------------------------------------------------------- choosing a compiler
@needs_captures
def test_auto_uses_bbjcpl_when_found(fake_bbjcpl):
    text = (CAPTURES / "multiple-errors.bbj").read_text(encoding="utf-8")
    found, used = check_with("auto", text, "m.bbj")
    assert used == "bbjcpl"
    assert [d.line for d in found] == [3, 5, 6, 8]
    assert all(d.code == "bbjcpl" for d in found)


def test_fragments_are_compiled_inside_a_class_and_mapped_back(fake_bbjcpl, monkeypatch, tmp_path):
    # A synthetic capture (not a real one): what bbjcpl would print for the wrapped fragment.
    fragment = "method public void m()\n  print 1 2\nmethodend\n"
    (tmp_path / "frag.bbj").write_text("class public BbjtuneFragment\n" + fragment + "classend\n")
    (tmp_path / "frag-stderr.txt").write_text(
        "/x/frag.bbj: error at line 30 (3):   print 1 2\n/x/frag.bbj: error at line 50 (5): classend\n"
    )
    monkeypatch.setenv("FAKE_BBJCPL_CAPTURES", str(tmp_path))
    found, used = check_with("bbjcpl", fragment, "answer.bbj", fragment=True)
    assert used == "bbjcpl"
    assert [(d.line, d.bbx_line, d.source_line) for d in found] == [
        (2, 20, "  print 1 2"),
        (3, 30, "methodend"),
    ]
    assert check_with("builtin", fragment.replace(" 2", ""), fragment=True) == ([], "builtin")


def test_auto_falls_back_to_builtin(no_bbjcpl):
    found, used = check_with("auto", 'print "a" "b"\n', "a.bbj")
    assert used == "builtin" and [d.line for d in found] == [1]


def test_explicit_bbjcpl_without_an_installation_is_a_user_error(no_bbjcpl):
    with pytest.raises(BbjtuneError) as info:
        check_with("bbjcpl", "x = 1\n")
    assert "BBJ_HOME" in info.value.hint


def test_unknown_compiler_is_a_user_error():
    with pytest.raises(BbjtuneError):
        check_with("javac", "x = 1\n")
