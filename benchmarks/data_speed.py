"""Benchmark: `bbjtune data audit` and `bbjtune data prepare` on a synthetic 10,000-example data set.

The data set looks like the real thing: one fixed system prompt, prompts of 10-60 words, answers
with prose and ```bbj blocks (10-40 lines each), four BBj generations, nine categories, and the
known defects at realistic rates: ~4% repeated prompts, ~1% fragments, ~1% cut-off answers, ~1%
literal \\n escapes, ~0.5% malformed lines, some secrets in code. Raw BBj source files (200 by
default) go into the stage 1 corpus.

Each command runs as a subprocess, as a user would run it; wall time and the peak resident memory
of that process (`wait4` rusage) are measured. `--sizes 10000,40000` shows how memory grows with
the file (it should not grow with the file the way a load-everything approach would).

    python benchmarks/data_speed.py                  # 10,000 examples, the figure in RESULTS.md
    python benchmarks/data_speed.py --smoke          # 300 examples, a few seconds (CI)
    python benchmarks/data_speed.py --sizes 10000,40000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

SYSTEM = (
    "You are a BBj expert. BBj is BASIS International's Business BASIC. Answer with correct, idiomatic BBj "
    "in ```bbj code blocks and explain briefly."
)
CATEGORIES = (
    "file-io",
    "strings",
    "oop",
    "gui",
    "dwc",
    "sql",
    "error-handling",
    "character-ui",
    "math-dates",
)
GENERATIONS = ("character", "vpro5", "gui", "dwc")
TASKS = ("write", "explain", "fix", "convert")
VOCAB = (
    "customer order invoice balance record file channel key template string window button grid report "
    "total amount date price item stock vendor account ledger field value list table column row page "
    "screen menu option dialog event callback method class object array number text line label error "
    "message user name address city state zip phone email status code level index count sum average"
).split()
FILLER = (
    "the a an and or to of in on with for from by that this which when then each every all some "
    "first next last new old open close read write print show add remove update check keep use"
).split()


def sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(VOCAB if rng.random() < 0.45 else FILLER) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def ident(rng: random.Random) -> str:
    return rng.choice(VOCAB) + rng.choice(["", "_" + rng.choice(VOCAB), str(rng.randint(1, 99))])


def bbj_program(rng: random.Random, lines: int) -> str:
    out = [f"rem {sentence(rng, 6)}"]
    depth = 0
    for _ in range(lines):
        kind = rng.random()
        pad = "    " * depth
        if kind < 0.2:
            out.append(f'{pad}{ident(rng)}$ = "{" ".join(rng.choices(VOCAB, k=3))}"')
        elif kind < 0.35:
            out.append(f"{pad}{ident(rng)} = {rng.randint(0, 9999)} * {rng.randint(1, 12)}")
        elif kind < 0.5:
            out.append(f'{pad}print {ident(rng)}$, " ", str({ident(rng)}:"###,##0.00")')
        elif kind < 0.6 and depth < 2:
            out.append(f"{pad}for i = 1 to {rng.randint(2, 50)}")
            depth += 1
        elif kind < 0.7 and depth:
            depth -= 1
            out.append("    " * depth + "next i")
        elif kind < 0.8:
            out.append(f'{pad}if {ident(rng)} > {rng.randint(1, 500)} then print "{rng.choice(VOCAB)}"')
        elif kind < 0.9:
            ch = rng.randint(1, 9)
            out.append(f'{pad}open ({ch},err=*next)"{rng.choice(VOCAB)}.dat"')
            out.append(f'{pad}read record ({ch},key="{rng.randint(1000, 9999)}",dom=*next){ident(rng)}$')
            out.append(f"{pad}close ({ch})")
        else:
            out.append(f"{pad}rem {sentence(rng, 5)}")
    while depth:
        depth -= 1
        out.append("    " * depth + "next i")
    out.append("end")
    return "\n".join(out) + "\n"


def make_example(rng: random.Random, i: int) -> dict:
    prompt = " ".join(sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(1, 3)))
    parts = [sentence(rng, rng.randint(10, 30))]
    for _ in range(rng.choice((1, 1, 1, 2))):
        parts.append(f"```bbj\n{bbj_program(rng, rng.randint(10, 40))}```")
        parts.append(sentence(rng, rng.randint(8, 25)))
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"[{i}] {prompt}"},
        {"role": "assistant", "content": "\n\n".join(parts)},
    ]
    return {
        "messages": messages,
        "category": rng.choice(CATEGORIES),
        "generation": rng.choice(GENERATIONS),
        "task": rng.choice(TASKS),
    }


def write_dataset(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write n lines with the defects mixed in; returns how many of each defect went in."""
    rng = random.Random(seed)
    planted = {"repeated_prompt": 0, "fragment": 0, "truncated": 0, "escapes": 0, "malformed": 0, "secret": 0}
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            roll = rng.random()
            ex = make_example(rng, i)
            if roll < 0.04 and recent:
                ex["messages"][1] = dict(rng.choice(recent)["messages"][1])
                planted["repeated_prompt"] += 1
            elif roll < 0.05:
                ex["messages"][2]["content"] = rng.choice(["Yes.", "See above", "ok", "```bbj"])
                planted["fragment"] += 1
            elif roll < 0.06:
                ex["messages"][2]["content"] = ex["messages"][2]["content"][: rng.randint(60, 200)]
                planted["truncated"] += 1
            elif roll < 0.07:
                ex["messages"][2]["content"] = ex["messages"][2]["content"].replace("\n", "\\n")
                planted["escapes"] += 1
            elif roll < 0.075:
                fh.write(json.dumps(ex)[: rng.randint(10, 200)] + "\n")
                planted["malformed"] += 1
                continue
            elif roll < 0.08:
                ex["messages"][2]["content"] += (
                    f'\n\n```bbj\nsqlopen (1)"DSN=erp;UID=sa;PWD=pw{i}x"\n'
                    f'mail$ = "clerk{i}@acme-corp.com"\nend\n```'
                )
                planted["secret"] += 1
            recent = (recent + [ex])[-50:]
            fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
    return planted


def write_sources(folder: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = "\n".join(bbj_program(rng, rng.randint(30, 400)) for _ in range(rng.randint(1, 3)))
        data = text.replace("\n", "\r\n") if i % 3 == 0 else text
        (folder / f"prog{i:04d}.{rng.choice(['bbj', 'src', 'bbjt'])}").write_bytes(data.encode("latin-1"))


def run_measured(args: list[str], cwd: Path) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MiB, exit code, CPU seconds) of one command. CPU time does not
    depend on what else the machine is doing; wall time does."""
    env = {**os.environ, "BBJTUNE_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace"))
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(args)}")
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def bench(n: int, n_sources: int, model: str, work: Path, workers: int | None) -> dict:
    data = work / f"chatml-{n}.jsonl"
    planted = write_dataset(data, n)
    write_sources(work / "src", n_sources)
    evals = work / "evals.jsonl"
    evals.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"e{i}",
                    "prompt": make_example(random.Random(10_000 + i), i)["messages"][1]["content"],
                }
            )
            + "\n"
            for i in range(100)
        )
    )
    bbjtune = [sys.executable, "-m", "bbjtune"]
    extra = ["--set", f"data.workers={workers}"] if workers else []
    audit = run_measured(
        [*bbjtune, "data", "audit", str(data), "--model", model, "--out", str(work / "audit"), *extra], work
    )
    prepare = run_measured(
        [
            *bbjtune,
            "data",
            "prepare",
            "--chatml",
            str(data),
            "--sources",
            str(work / "src"),
            "--model",
            model,
            "--out",
            str(work / f"out-{n}"),
            "--set",
            f"data.decontaminate_against=[{evals}]",
            *extra,
        ],
        work,
    )
    summary = json.loads((work / f"out-{n}" / "audit.json").read_text())
    return {
        "examples": n,
        "workers": workers or "auto",
        "file_mib": round(data.stat().st_size / 2**20, 1),
        "sources": n_sources,
        "audit_s": round(audit[0], 1),
        "audit_cpu_s": round(audit[3], 1),
        "audit_peak_rss_mib": round(audit[1]),
        "prepare_s": round(prepare[0], 1),
        "prepare_cpu_s": round(prepare[3], 1),
        "prepare_peak_rss_mib": round(prepare[1]),
        "load_average": round(os.getloadavg()[0], 1),
        "train": summary["split"]["train"],
        "heldout": summary["split"]["heldout"],
        "cpt_chunks": summary["cpt"]["chunks"],
        "rejected": summary["rejected"]["by_reason"],
        "planted": planted,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000", help="comma-separated example counts")
    ap.add_argument("--sources", type=int, default=200, help="raw BBj source files for the stage 1 corpus")
    ap.add_argument("--model", default="tiny:demo", help="tokenizer source for token counts")
    ap.add_argument("--smoke", action="store_true", help="300 examples and 10 sources (a quick check)")
    ap.add_argument(
        "--workers", type=int, help="processes reading the ChatML (default: the stage's own choice)"
    )
    ap.add_argument("--keep", type=Path, help="keep the generated data and outputs in this folder")
    args = ap.parse_args()
    sizes = [300] if args.smoke else [int(s) for s in args.sizes.split(",")]
    n_sources = 10 if args.smoke else args.sources
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [bench(n, n_sources, args.model, work, args.workers) for n in sizes]
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "python": platform.python_version(),
                "model": args.model,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
