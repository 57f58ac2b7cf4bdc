"""False alarms of the tier 2 checks on real BBj code (their precision), for benchmarks/RESULTS.md.

Every file here is correct BBj written by people: real programs (`bbj-corpus/real`), the language
server's snippets its tests assert valid, and its per-verb examples. Any tier 2 error on them is a
false alarm. The generation check needs a suite's patterns and is not run here.

    python benchmarks/tier2_precision.py [../shared/bbj-corpus] [--show]
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from bbjtune.bbj.checker import decode_source
from bbjtune.bbj.quality import check_quality

VALID_LABELS = frozenset({"valid", "valid-parse"})


def corpus_files(root: Path) -> dict[str, list[Path]]:
    real = sorted(p for p in (root / "real").rglob("*") if p.suffix.lower() in (".bbj", ".bbjt", ".src", ".bbl"))
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


def measure(root: Path) -> dict[str, dict]:
    out = {}
    for name, files in corpus_files(root).items():
        rules: Counter = Counter()
        flagged, alarms = [], 0
        lines = 0
        t0 = time.perf_counter()
        for path in files:
            text = decode_source(path.read_bytes())
            lines += text.count("\n") + 1
            errors = [f for f in check_quality(text) if f.severity == "error"]
            alarms += len(errors)
            rules.update(f.rule for f in errors)
            if errors:
                flagged.append((path, errors))
        out[name] = {"files": len(files), "lines": lines, "files_flagged": len(flagged), "false_alarms": alarms,
                     "by_rule": dict(rules), "seconds": round(time.perf_counter() - t0, 2), "flagged": flagged}
    return out


def main(argv: list[str]) -> int:
    show = "--show" in argv
    args = [a for a in argv if a != "--show"]
    root = Path(args[0] if args else "../shared/bbj-corpus")
    if not (root / "real").is_dir():
        print(f"{root}/real not found: pass the bbj-corpus folder", file=sys.stderr)
        return 2
    print("| corpus | files | lines | files with a false alarm | false alarms | by rule | seconds |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, r in measure(root).items():
        rules = ", ".join(f"{k} {v}" for k, v in sorted(r["by_rule"].items())) or "-"
        print(f"| {name} | {r['files']} | {r['lines']:,} | {r['files_flagged']} | {r['false_alarms']} | {rules} "
              f"| {r['seconds']} |")
        if show:
            for path, errors in r["flagged"]:
                for f in errors:
                    print(f"    {path.relative_to(root)}:{f.line}: {f.rule}: {f.message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
