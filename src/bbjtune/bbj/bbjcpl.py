"""Adapter for the real BBj compiler, `bbjcpl`, shipped with a licensed BBj installation.

`bbjcpl -N file.bbj` checks a program without writing output. Its exit status is 0 whether or
not the program compiles; errors are lines on stderr of the form

    /path/to/file.bbj: error at line 30 (3):     method public void broken())

where 30 is the BBx line number (10 x the physical line in unnumbered programs) and 3 the
physical line. There is no message text, and one mistake may produce several lines (a broken
METHOD line also flags its METHODEND). An empty stderr means the program compiles.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from bbjtune.errors import BbjtuneError

from .diagnostics import Diagnostic

_ERROR_LINE_RE = re.compile(r"^(?P<file>.*?): error at line (?P<bbx>\d+) \((?P<line>\d+)\): ?(?P<source>.*)$")
BBJCPL_MESSAGE = "bbjcpl reports an error on this line"
_NAMES = ("bbjcpl", "bbjcpl.exe", "bbjcpl.bat", "bbjcpl.sh")


def find_bbjcpl() -> Path | None:
    """`bbjcpl` on PATH, else in `$BBJ_HOME/bin`; None when neither has it."""
    found = shutil.which("bbjcpl")
    if found:
        return Path(found)
    home = os.environ.get("BBJ_HOME")
    if home:
        for name in _NAMES:
            candidate = Path(home) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def parse_bbjcpl_output(stderr: str, stdout: str = "", filename: str | None = None) -> list[Diagnostic]:
    """Turn bbjcpl's output into diagnostics.

    Error lines are read from both streams. Other non-blank stderr lines (a Java exception, a
    licence problem) become `bbjcpl-message` errors at line 1, so they are never silently
    dropped; other stdout lines (banners) are ignored. `filename` replaces the path bbjcpl
    printed (a temporary file when checking text).
    """
    out: list[Diagnostic] = []
    for stream, keep_other in ((stderr, True), (stdout, False)):
        for raw in stream.splitlines():
            line = raw.rstrip("\r")
            m = _ERROR_LINE_RE.match(line)
            if m:
                source = m.group("source")
                physical = int(m.group("line"))
                column = len(source) - len(source.lstrip()) + 1
                out.append(
                    Diagnostic(
                        file=filename if filename is not None else m.group("file"),
                        line=physical,
                        column=column,
                        message=BBJCPL_MESSAGE,
                        severity="error",
                        code="bbjcpl",
                        source_line=source,
                        bbx_line=int(m.group("bbx")),
                    )
                )
            elif keep_other and line.strip():
                out.append(
                    Diagnostic(
                        file=filename,
                        line=1,
                        column=1,
                        message=f"bbjcpl: {line.strip()}",
                        severity="error",
                        code="bbjcpl-message",
                        source_line="",
                        bbx_line=10,
                    )
                )
    return out


def run_bbjcpl(
    text_or_path: str | os.PathLike,
    timeout: float = 60.0,
    filename: str | None = None,
    executable: str | os.PathLike | None = None,
) -> list[Diagnostic]:
    """Run `bbjcpl -N` and return its verdict as diagnostics (an empty list: it compiles).

    A `str` is program text, written to a temporary file; a `Path` (any os.PathLike) is a file
    checked where it is. Raises BbjtuneError when bbjcpl is missing, cannot run, times out, or
    prints only messages that are not error lines (it then did not check the program).
    """
    exe = Path(executable) if executable is not None else find_bbjcpl()
    if exe is None:
        raise BbjtuneError(
            "bbjcpl was not found on PATH or in $BBJ_HOME/bin",
            "set BBJ_HOME to your BBj installation or install BBj; or use the built-in checker",
        )
    if isinstance(text_or_path, str):
        name = Path(filename).name if filename else "program.bbj"
        if not name.lower().endswith((".bbj", ".bbjt", ".src", ".bbl", ".txt")):
            name += ".bbj"
        with tempfile.TemporaryDirectory(prefix="bbjtune-bbjcpl-") as tmp:
            source = Path(tmp) / name
            source.write_text(text_or_path, encoding="utf-8")
            diagnostics = _run(exe, source, timeout, filename)
            # bbjcpl printed the temporary path: report the caller's name (or none)
            return [replace(d, file=filename) for d in diagnostics]
    path = Path(text_or_path)
    if not path.is_file():
        raise BbjtuneError(f"{path}: no such file", "check the path")
    return _run(exe, path, timeout, filename if filename is not None else str(path))


def _run(exe: Path, source: Path, timeout: float, filename: str | None) -> list[Diagnostic]:
    try:
        proc = subprocess.run(
            [str(exe), "-N", str(source)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BbjtuneError(
            f"bbjcpl did not finish within {timeout:g} s on {filename or source.name}",
            "raise the timeout, or use the built-in checker",
        ) from None
    except OSError as exc:
        raise BbjtuneError(
            f"cannot run {exe}: {exc.strerror or exc}",
            "check the BBj installation (BBJ_HOME) and that bbjcpl is executable",
        ) from None
    diagnostics = parse_bbjcpl_output(proc.stderr, proc.stdout, filename)
    if diagnostics and all(d.code == "bbjcpl-message" for d in diagnostics):
        raise BbjtuneError(
            f"bbjcpl did not check {filename or source.name}: {diagnostics[0].message}",
            "check the BBj installation and licence, or use the built-in checker",
        )
    return diagnostics
