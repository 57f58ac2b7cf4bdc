"""`bbjtune check` end to end: files, directories and stdin, in every output format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_HOME = ROOT / "tests" / "fixtures" / "bbjcpl" / "fake-bbj-home"
CAPTURES = ROOT.parent / "shared" / "bbj-corpus" / "language-server" / "cpl-fixtures"

GOOD = 'rem greet\nname$ = "World"\nprint "Hello, ", name$\n'
BAD = 'x = 1\nprint "a" "b"\nfor i = 1 10\n'


def run_check(*args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    environment.pop("BBJ_HOME", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bbjtune", "check", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "good.bbj").write_text(GOOD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.src").write_text(BAD)
    (tmp_path / "notes.txt").write_text("not BBj at all ((((\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "skip.bbj").write_text(BAD)
    return tmp_path


def test_valid_file_exits_0(tree):
    result = run_check(str(tree / "good.bbj"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert b"0 with errors" in result.stderr


def test_invalid_file_exits_1_with_bbjcpl_lines(tree):
    path = str(tree / "sub" / "bad.src")
    result = run_check("--format", "bbjcpl", path)
    assert result.returncode == 1
    assert result.stdout.decode() == (
        f'{path}: error at line 20 (2): print "a" "b"\n{path}: error at line 30 (3): for i = 1 10\n'
    )


def test_human_format_shows_the_line_and_a_caret(tree):
    result = run_check(str(tree / "sub" / "bad.src"))
    out = result.stdout.decode().splitlines()
    assert result.returncode == 1
    assert out[0].endswith(
        "bad.src:2:11: error: unexpected a string after the statement (missing ';' or operator?) "
        "[unexpected-token]"
    )
    assert out[1:3] == ['    print "a" "b"', "    " + " " * 10 + "^"]


def test_directory_is_walked_for_bbj_sources_in_json(tree):
    result = run_check("-f", "json", str(tree))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    files = {Path(f["file"]).name: f for f in report["files"]}
    assert set(files) == {"good.bbj", "bad.src"}  # .txt and hidden directories are skipped
    assert files["good.bbj"]["valid"] and not files["bad.src"]["valid"]
    assert files["bad.src"]["errors"] == 2 and files["bad.src"]["compiler"] == "builtin"
    assert {d["line"] for d in files["bad.src"]["diagnostics"]} == {2, 3}
    assert (report["checked"], report["invalid"]) == (2, 1)


def test_stdin(tree):
    result = run_check("-f", "json", "-", stdin=GOOD.encode())
    assert result.returncode == 0
    assert json.loads(result.stdout)["files"][0]["file"] == "<stdin>"
    result = run_check("-f", "bbjcpl", "-", stdin=BAD.encode())
    assert result.returncode == 1
    assert result.stdout.decode().startswith('<stdin>: error at line 20 (2): print "a" "b"')


def test_warnings_can_be_hidden(tmp_path):
    source = tmp_path / "w.bbj"
    source.write_text("for i = 1 to 3\nprint i\n")
    shown = json.loads(run_check("-f", "json", str(source)).stdout)["files"][0]
    hidden = json.loads(run_check("-f", "json", "--no-warnings", str(source)).stdout)["files"][0]
    assert (shown["warnings"], hidden["warnings"]) == (1, 0)


def test_fragment_flag(tmp_path):
    (tmp_path / "m.bbj").write_text("method public void run()\n  print 1\nmethodend\n")
    assert run_check("-c", "builtin", str(tmp_path / "m.bbj")).returncode == 1
    assert run_check("-c", "builtin", "--fragment", str(tmp_path / "m.bbj")).returncode == 0


def test_binary_and_latin1_files(tmp_path):
    (tmp_path / "blob.bbj").write_bytes(bytes(range(256)))
    (tmp_path / "latin.bbj").write_bytes('x$ = "Gr\xfc\xdfe"\n'.encode("latin-1"))
    report = json.loads(run_check("-f", "json", str(tmp_path)).stdout)
    by_name = {Path(f["file"]).name: f for f in report["files"]}
    assert by_name["blob.bbj"]["diagnostics"][0]["code"] == "binary-file"
    assert by_name["latin.bbj"]["valid"]


def test_bad_usage_exits_2_without_traceback(tmp_path):
    for args in (["nope.bbj"], ["--format", "xml", "x"], ["--compiler", "gcc", "x"], [str(tmp_path)]):
        result = run_check(*args)
        assert result.returncode == 2, args
        assert b"Traceback" not in result.stderr and b"error:" in result.stderr


def test_explicit_bbjcpl_without_installation_exits_2_with_a_hint(tmp_path):
    (tmp_path / "a.bbj").write_text(GOOD)
    result = run_check("--compiler", "bbjcpl", str(tmp_path / "a.bbj"))
    assert result.returncode == 2
    assert b"BBJ_HOME" in result.stderr


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/bbj-corpus is not present")
def test_auto_uses_an_installed_bbjcpl(tmp_path):
    env = {"BBJ_HOME": str(FAKE_HOME), "FAKE_BBJCPL_CAPTURES": str(CAPTURES)}
    result = run_check("-f", "json", str(CAPTURES / "single-error.bbj"), env=env)
    assert result.returncode == 1
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["compiler"] == "bbjcpl"
    assert [d["line"] for d in entry["diagnostics"]] == [3, 5]
