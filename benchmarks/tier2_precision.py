"""False alarms of the tier 2 checks on real BBj code (their precision), for benchmarks/RESULTS.md.

Every file here is correct BBj written by people: real programs (`bbj-corpus/real`), the language
server's snippets its tests assert valid, and its per-verb examples; and the reference answers of
the project's eval suites (checked with their suite's generation and must_not patterns). Any tier 2
error on them is a false alarm. "calls checked" counts the method calls whose receiver's type was
known, i.e. how much the API check covered.

    python benchmarks/tier2_precision.py [../shared/bbj-corpus] [--show]
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from bbjtune.bbj.api import Program, tokenized
from bbjtune.bbj.checker import decode_source
from bbjtune.bbj.cli import SOURCE_EXTENSIONS
from bbjtune.bbj.extract import extract_bbj
from bbjtune.bbj.lexer import logical_lines, split_physical_lines
from bbjtune.bbj.quality import check_quality
from bbjtune.evaluate.suite import load_suite

EVALS = Path(__file__).resolve().parents[1] / "evals"

VALID_LABELS = frozenset({"valid", "valid-parse"})


def corpus_files(root: Path) -> dict[str, list[Path]]:
    real = sorted(p for p in (root / "real").rglob("*") if p.suffix.lower() in SOURCE_EXTENSIONS)
    ls = root / "language-server"
    snippets = []
    index = ls / "index.jsonl"
    if index.exists():
        for line in index.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("label") in VALID_LABELS:
                snippets.append(ls / row["path"])
    examples = sorted((ls / "examples").glob("*.bbj"))
    return {"real": real, "snippets (valid)": snippets, "examples": examples}


def sources(root: Path) -> dict[str, list[tuple[str, str, dict]]]:
    """(name, code, check_quality arguments) per corpus."""
    out = {
        name: [(str(p.relative_to(root)), decode_source(p.read_bytes()), {}) for p in files]
        for name, files in corpus_files(root).items()
    }
    refs = []
    for suite in sorted(EVALS.glob("*.jsonl")):
        for case in load_suite(suite).cases:
            if case.compile and case.reference:
                refs.append(
                    (
                        f"{suite.name}:{case.id}",
                        extract_bbj(case.reference),
                        {"generation": case.generation, "must_not": case.must_not},
                    )
                )
    out["eval suite references"] = refs
    return out


def measure(root: Path) -> dict[str, dict]:
    out = {}
    for name, items in sources(root).items():
        rules: Counter = Counter()
        flagged, alarms = [], 0
        lines = calls = 0
        seconds = 0.0
        for path, text, kw in items:
            lines += text.count("\n") + 1
            program = Program(tokenized(logical_lines(split_physical_lines(text))))
            program.check_calls()
            calls += program.calls_checked
            t0 = time.perf_counter()
            errors = [f for f in check_quality(text, **kw) if f.severity == "error"]
            seconds += time.perf_counter() - t0
            alarms += len(errors)
            rules.update(f.rule for f in errors)
            if errors:
                flagged.append((path, errors))
        out[name] = {
            "files": len(items),
            "lines": lines,
            "calls": calls,
            "files_flagged": len(flagged),
            "false_alarms": alarms,
            "by_rule": dict(rules),
            "seconds": round(seconds, 2),
            "flagged": flagged,
        }
    return out


def main(argv: list[str]) -> int:
    show = "--show" in argv
    args = [a for a in argv if a != "--show"]
    root = Path(args[0] if args else "../shared/bbj-corpus")
    if not (root / "real").is_dir():
        print(f"{root}/real not found: pass the bbj-corpus folder", file=sys.stderr)
        return 2
    print(
        "| corpus | files | lines | calls checked | files with a false alarm | false alarms | by rule | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, r in measure(root).items():
        rules = ", ".join(f"{k} {v}" for k, v in sorted(r["by_rule"].items())) or "-"
        print(
            f"| {name} | {r['files']} | {r['lines']:,} | {r['calls']:,} | {r['files_flagged']} | {r['false_alarms']} | {rules} "
            f"| {r['seconds']} |"
        )
        if show:
            for path, errors in r["flagged"]:
                for f in errors:
                    print(f"    {path}:{f.line}: {f.rule}: {f.message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
