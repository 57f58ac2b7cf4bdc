"""`bbjtune check`: check BBj source files the way `bbjcpl -N` does."""

from __future__ import annotations

from typing import Annotated

import typer

from bbjtune.errors import BbjtuneError

from .compile import check_compiler
from .checker import check_bytes, check_with, decode_source, not_utf8_at
from .diagnostics import Diagnostic, format_bbjcpl, format_human, has_errors, sort_diagnostics
from .lexer import split_physical_lines
from .quality import GENERATION_PATTERNS, check_quality

# Extensions searched for when a directory is given. Files named explicitly are checked whatever
# their extension. `.bbx` is left out: it usually holds tokenized (binary) programs.
SOURCE_EXTENSIONS = (".bbj", ".bbjt", ".src", ".bbl")
FORMATS = ("human", "bbjcpl", "json")
GENERATIONS = tuple(GENERATION_PATTERNS)  # the generations whose hallmarks tier 2 knows

PathsArg = Annotated[
    list[str],
    typer.Argument(
        help="BBj files, directories (searched recursively for .bbj .bbjt .src .bbl), or - for "
        "standard input.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="human: message and caret under the column; bbjcpl: the lines bbjcpl -N "
        "prints (errors only); json: one object per file.",
    ),
]
CompilerOpt = Annotated[
    str,
    typer.Option(
        "--compiler",
        "-c",
        help="builtin: bbjtune's own checker; bbjcpl: the real compiler of a BBj "
        "installation (PATH or $BBJ_HOME/bin); auto: bbjcpl when it is installed, else builtin.",
    ),
]
WarningsOpt = Annotated[
    bool, typer.Option("--warnings/--no-warnings", help="Show warnings (likely mistakes that still compile).")
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds bbjcpl may take per file.")]
FragmentOpt = Annotated[
    bool,
    typer.Option(
        "--fragment", help="The files are pieces of a class: METHOD and FIELD may stand outside CLASS."
    ),
]
Tier2Opt = Annotated[
    bool,
    typer.Option(
        "--tier2",
        help="Also run the checks beyond syntax (as clean@k does): BBjAPI methods that do not "
        "exist or get an impossible number of arguments, builtin functions with impossible arguments, strings, "
        "numbers and objects mixed (error 26), undefined labels, "
        "no statement, runaway repetition.",
    ),
]
GenerationOpt = Annotated[
    str | None,
    typer.Option(
        "--generation",
        help="With --tier2: the BBj generation the code should be (character, vpro5, gui, dwc); "
        "the other generation's hallmarks are then errors.",
    ),
]


def check(
    paths: PathsArg,
    format: FormatOpt = "human",
    compiler: CompilerOpt = "auto",
    warnings: WarningsOpt = True,
    timeout: TimeoutOpt = 60.0,
    fragment: FragmentOpt = False,
    tier2: Tier2Opt = False,
    generation: GenerationOpt = None,
) -> None:
    """Check BBj programs for syntax errors; exit 1 when any file has an error.

    The built-in checker knows BBj's verbs, expressions, option lists, CLASS/METHOD structure and \
line continuations, needs no BBj licence, and can print its findings in bbjcpl -N's own format.

    Examples: bbjtune check src/   ·   bbjtune check -f bbjcpl MyClass.bbj   ·   cat x.bbj | bbjtune check -
    """
    import json
    import sys

    for stream in (sys.stdout, sys.stderr):  # a source line must never crash the output
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    if format not in FORMATS:
        raise BbjtuneError(f"unknown format {format!r}", f"use one of: {', '.join(FORMATS)}")
    if generation is not None and generation not in GENERATIONS:
        raise BbjtuneError(f"unknown generation {generation!r}", f"use one of: {', '.join(GENERATIONS)}")
    check_compiler(compiler)

    results = []
    encodings: dict[str, str] = {}
    for name, read, path in _sources(paths):
        data = read()
        binary = b"\x00" in data[:8192]  # binary data is never handed to bbjcpl
        text = decode_source(data)
        bad = None if binary else not_utf8_at(data)
        encodings[name] = "utf-8" if bad is None else "latin-1"
        if bad is not None and format != "json":
            sys.stderr.write(
                f"note: {name}: not valid UTF-8 (byte 0x{bad[1]:02X} on line {bad[0]}): read as "
                "Latin-1 (ISO-8859-1), as BBj sources are often Latin-1 or CP1252; messages show "
                "its characters as Latin-1\n"
            )
        if compiler == "builtin" or binary:
            diagnostics, used = check_bytes(data, name, fragment=fragment), "builtin"
        else:
            diagnostics, used = check_with(
                compiler, text, name, timeout=timeout, path=path, fragment=fragment
            )
        if tier2 and format != "bbjcpl":  # bbjcpl's format is the compiler's, syntax only
            diagnostics = sort_diagnostics([*diagnostics, *_tier2(text, name, generation)])
        if not warnings:
            diagnostics = [d for d in diagnostics if d.severity == "error"]
        results.append((name, diagnostics, used))

    failed = [name for name, diagnostics, _ in results if has_errors(diagnostics)]
    if format == "json":
        payload = {
            "files": [
                {
                    "file": name,
                    "compiler": used,
                    "encoding": encodings[name],
                    "valid": not has_errors(diagnostics),
                    "errors": sum(d.severity == "error" for d in diagnostics),
                    "warnings": sum(d.severity == "warning" for d in diagnostics),
                    "diagnostics": [d.to_dict() for d in diagnostics],
                }
                for name, diagnostics, used in results
            ],
            "checked": len(results),
            "invalid": len(failed),
        }
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    elif format == "bbjcpl":
        for name, diagnostics, _ in results:
            sys.stdout.write(format_bbjcpl(diagnostics, name))
    else:
        errors = warns = 0
        for name, diagnostics, _ in results:
            sys.stdout.write(format_human(diagnostics, name))
            errors += sum(d.severity == "error" for d in diagnostics)
            warns += sum(d.severity == "warning" for d in diagnostics)
        used = sorted({u for _, _, u in results})
        sys.stderr.write(
            f"checked {_count(len(results), 'file')} with {'/'.join(used)}: {len(failed)} with "
            f"errors ({_count(errors, 'error')}, {_count(warns, 'warning')})\n"
        )
    if failed:
        raise typer.Exit(1)


def _tier2(text: str, name: str, generation: str | None) -> list:
    """The tier 2 findings of one file as diagnostics (code = the rule)."""
    lines = split_physical_lines(text)
    return [
        Diagnostic(
            name,
            f.line,
            1,
            f.message,
            f.severity,
            f.rule,
            lines[f.line - 1] if 0 < f.line <= len(lines) else "",
            10 * f.line,
        )
        for f in check_quality(text, generation=generation)
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _sources(paths: list[str]):
    """(display name, reader, path or None for stdin) for every file to check, in a stable order."""
    import sys
    from pathlib import Path

    if not paths:
        raise BbjtuneError("no files given", "name BBj files or directories, or - for standard input")
    out = []
    for raw in paths:
        if raw == "-":
            out.append(("<stdin>", sys.stdin.buffer.read, None))
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in SOURCE_EXTENSIONS
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise BbjtuneError(
                    f"{raw}: no BBj files ({' '.join(SOURCE_EXTENSIONS)}) in this directory",
                    "name the files to check explicitly",
                )
            out.extend((str(p), _reader(p), p) for p in found)
        elif path.is_file():
            out.append((raw, _reader(path), path))
        else:
            raise BbjtuneError(f"{raw}: no such file or directory", "check the path")
    return out


def _reader(path):
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise BbjtuneError(
                f"{path}: cannot read ({exc.strerror or exc})", "check the file's permissions"
            ) from None

    return read
