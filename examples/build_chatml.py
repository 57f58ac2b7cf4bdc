"""Assemble examples/chatml/bbj-instructions.jsonl from the hand-written sources.

The examples are written by hand in examples/chatml/source/*.txt, one file per category, so
that BBj developers can read and edit them as plain text. Each example looks like:

    @@@ example
    category: file-io
    generation: character
    task: write
    @@@ user
    (the request, as a developer would type it)
    @@@ assistant
    (the answer: prose plus ```bbj blocks)

Run from the repository root:

    python examples/build_chatml.py           # rebuild the JSONL
    python examples/build_chatml.py --check   # fail if the JSONL is out of date
    python examples/build_chatml.py --stats   # print the counts tables used in README.md
    python examples/build_chatml.py --lint    # run bbjtune's checker over every bbj block

Standard library only (the lint step imports bbjtune when it is asked for).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE / "chatml" / "source"
OUTPUT = HERE / "chatml" / "bbj-instructions.jsonl"
PROGRAMS_DIR = HERE / "programs"
PROGRAM_SUFFIXES = (".bbj", ".src", ".bbjt", ".bbl")

SYSTEM_PROMPT = (
    "You are a BBj expert. BBj is BASIS International's Business BASIC, the successor of BBx "
    "and Visual PRO/5, running on Java. Answer with correct, idiomatic BBj in ```bbj code "
    "blocks, keep to the UI generation the user works in (character UI, Visual PRO/5, "
    "BBj GUI or DWC), and explain briefly."
)

ALLOWED = {
    "category": (
        "file-io",
        "strings",
        "oop",
        "gui",
        "dwc",
        "sql",
        "error-handling",
        "character-ui",
        "math-dates",
        "program-structure",
    ),
    "generation": ("character", "vpro5", "gui", "dwc"),
    "task": ("write", "explain", "fix", "convert"),
}

MARKER = re.compile(r"^@@@ (example|user|assistant)\s*$")
BBJ_BLOCK = re.compile(r"^```bbj[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class SourceError(Exception):
    """A malformed example in a source file (file and line in the message)."""


def parse_file(path: Path) -> list[dict]:
    """Split one source file into examples; each keeps its file and starting line."""
    examples: list[dict] = []
    current: dict | None = None
    section: str | None = None
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        marker = MARKER.match(line)
        if marker:
            kind = marker.group(1)
            if kind == "example":
                current = {"file": path.name, "line": number, "meta": {}, "user": [], "assistant": []}
                examples.append(current)
                section = "meta"
            elif current is None:
                raise SourceError(f"{path.name}:{number}: '@@@ {kind}' before any '@@@ example'")
            else:
                section = kind
            continue
        if current is None:
            if line.strip():
                raise SourceError(f"{path.name}:{number}: text before the first '@@@ example'")
            continue
        if section == "meta":
            if not line.strip():
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise SourceError(f"{path.name}:{number}: expected 'key: value', got {line!r}")
            current["meta"][key.strip()] = value.strip()
        else:
            current[section].append(line)
    return examples


def to_record(example: dict) -> dict:
    """Validate one parsed example and turn it into a JSONL record."""
    where = f"{example['file']}:{example['line']}"
    meta = example["meta"]
    for key, allowed in ALLOWED.items():
        value = meta.get(key)
        if value not in allowed:
            raise SourceError(f"{where}: {key} must be one of {', '.join(allowed)}; got {value!r}")
    unknown = set(meta) - set(ALLOWED)
    if unknown:
        raise SourceError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    user = "\n".join(example["user"]).strip()
    assistant = "\n".join(example["assistant"]).strip()
    if not user or not assistant:
        raise SourceError(f"{where}: both '@@@ user' and '@@@ assistant' need text")
    if assistant.count("```") % 2:
        raise SourceError(f"{where}: unbalanced ``` fence in the answer")
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ],
        "category": meta["category"],
        "generation": meta["generation"],
        "task": meta["task"],
    }


def load_records() -> list[tuple[str, dict]]:
    records = []
    for path in sorted(SOURCE_DIR.glob("*.txt")):
        for example in parse_file(path):
            records.append((f"{example['file']}:{example['line']}", to_record(example)))
    prompts = collections.Counter(r["messages"][1]["content"] for _, r in records)
    repeated = [p for p, n in prompts.items() if n > 1]
    if repeated:
        raise SourceError(f"duplicate user prompt: {repeated[0][:80]!r}")
    return records


def render(records: list[tuple[str, dict]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for _, r in records)


def stats(records: list[tuple[str, dict]]) -> str:
    """Markdown tables of the counts per generation, task and category."""
    rows = [r for _, r in records]
    out = [f"Total examples: {len(rows)}", ""]
    for key in ("generation", "task", "category"):
        counts = collections.Counter(r[key] for r in rows)
        out.append(f"| {key} | examples |")
        out.append("|---|---:|")
        out.extend(f"| {value} | {counts[value]} |" for value in ALLOWED[key])
        out.append("")
    gen_by_task = collections.Counter((r["generation"], r["task"]) for r in rows)
    out.append("| generation \\ task | " + " | ".join(ALLOWED["task"]) + " |")
    out.append("|---|" + "---:|" * len(ALLOWED["task"]))
    for gen in ALLOWED["generation"]:
        out.append(f"| {gen} | " + " | ".join(str(gen_by_task[(gen, t)]) for t in ALLOWED["task"]) + " |")
    out.append("")
    out.append(program_stats())
    return "\n".join(out)


def program_generation(text: str) -> str:
    """Which UI generation a program belongs to, judged from what it uses."""
    lower = text.lower()
    if "getwebmanager()" in lower or "$01001000$" in lower:
        return "dwc"
    if "'window'(" in lower:
        return "vpro5"
    if "opensysgui" in lower or "class public" in lower:
        return "gui"
    return "character"


def program_stats() -> str:
    """One row per program: generation, lines, line endings and encoding."""
    rows = ["| program | generation | lines | line endings | encoding |", "|---|---|---:|---|---|"]
    counts: collections.Counter = collections.Counter()
    for path in sorted(PROGRAMS_DIR.iterdir()):
        if path.suffix not in PROGRAM_SUFFIXES:
            continue
        data = path.read_bytes()
        try:
            text, encoding = data.decode("utf-8"), "UTF-8" if max(data, default=0) > 127 else "ASCII"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "Latin-1"
        eol = "CRLF" if b"\r\n" in data else "LF"
        generation = program_generation(text)
        counts[generation] += 1
        rows.append(f"| {path.name} | {generation} | {len(text.splitlines())} | {eol} | {encoding} |")
    summary = ", ".join(f"{g} {counts[g]}" for g in ALLOWED["generation"])
    return f"Programs: {sum(counts.values())} ({summary})\n\n" + "\n".join(rows)


def lint(records: list[tuple[str, dict]]) -> int:
    """Run bbjtune's syntax checker over every ```bbj block; return the number of failing blocks.

    Only errors count; warnings are printed but do not fail the run.
    """
    from bbjtune.bbj import check_source  # imported here: only --lint needs the package

    failures = 0
    for where, record in records:
        answer = record["messages"][2]["content"]
        for index, block in enumerate(BBJ_BLOCK.findall(answer), start=1):
            diagnostics = check_source(block, f"{where} block {index}")
            for diagnostic in diagnostics:
                print(
                    f"{where} block {index} line {diagnostic.line}: {diagnostic.severity}: "
                    f"{diagnostic.message} [{diagnostic.code}]"
                )
                print(f"    {diagnostic.source_line.strip()}")
            if any(d.severity == "error" for d in diagnostics):
                failures += 1
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if the JSONL is out of date")
    mode.add_argument("--stats", action="store_true", help="print counts as markdown tables")
    mode.add_argument("--lint", action="store_true", help="check every bbj block with bbjtune")
    args = parser.parse_args(argv)
    try:
        records = load_records()
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = render(records)
    if args.stats:
        print(stats(records))
        return 0
    if args.lint:
        failures = lint(records)
        print(f"{failures} failing block(s) in {len(records)} examples")
        return 1 if failures else 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.name} is out of date: run python examples/build_chatml.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.name} is up to date ({len(records)} examples)")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(records)} examples to {OUTPUT.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
