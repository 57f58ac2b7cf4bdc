"""How well the gateway reads the BBj generation a question names (`bbj.generation.generation_asked`).

1. Precision on labelled prompts: the project's training examples (examples/chatml) and evaluation
   prompts (evals/), each with its generation: how many questions it names a generation for, and
   how many of those it names the wrong family (objects: gui, dwc; mnemonics: vpro5, character).
2. On saved evaluation answers (eval directories with cases.jsonl and generations.jsonl, e.g.
   experiments/real-0.5b/2026-12-07/eval/rft-dpo-q8_0): among the answers that compile, those the
   case's own generation fails (tier 2's generation patterns), how many the gateway now fails too
   from the question alone, and how many others it would fail wrongly.

    python benchmarks/generation_asked.py experiments/real-0.5b/2026-12-07/eval/rft-dpo-q8_0
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from bbjtune.bbj.compile import compile_answer
from bbjtune.bbj.generation import FAMILY, generation_asked
from bbjtune.bbj.quality import check_quality

ROOT = Path(__file__).resolve().parents[1]


def precision(rows: list[tuple[str, str]]) -> dict[str, int]:
    named = [(generation_asked(q), label) for q, label in rows]
    named = [(g, label) for g, label in named if g]
    wrong = sum(FAMILY[g] != FAMILY[label] for g, label in named)
    return {"prompts": len(rows), "named": len(named), "wrong_family": wrong}


def _mismatch(code: str, generation: str | None) -> bool:
    return generation is not None and any(
        f.rule == "generation-mismatch" for f in check_quality(code, generation=generation)
    )


def on_answers(eval_dir: Path) -> dict[str, int]:
    cases = {}
    for line in (eval_dir / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        c = json.loads(line)
        cases[(c["suite"], c["id"])] = c
    out = {"compiling": 0, "wrong_generation": 0, "caught": 0, "false_alarms": 0}
    for line in (eval_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        case = cases.get((r["suite"], r["id"]))
        if case is None or r.get("sample", 0) != 0:
            continue
        result = compile_answer(r["output"], "builtin")
        if not result.code.strip() or not result.compiles:
            continue
        out["compiling"] += 1
        truth = _mismatch(result.code, case["generation"])
        flagged = _mismatch(result.code, generation_asked(case["prompt"]))
        out["wrong_generation"] += truth
        out["caught"] += truth and flagged
        out["false_alarms"] += flagged and not truth
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dirs", nargs="*", type=Path, help="saved evaluation directories")
    a = parser.parse_args()
    train = []
    for path in sorted(glob.glob(str(ROOT / "examples/chatml/*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            question = next(m["content"] for m in row["messages"] if m["role"] == "user")
            train.append((question, row["generation"]))
    evals = []
    for path in sorted(glob.glob(str(ROOT / "evals/*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            evals.append((row["prompt"], row["generation"]))
    print(f"training examples: {precision(train)}")
    print(f"evaluation prompts: {precision(evals)}")
    for d in a.eval_dirs:
        print(f"{d}: {on_answers(d)}")


if __name__ == "__main__":
    main()
