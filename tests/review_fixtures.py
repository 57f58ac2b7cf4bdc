"""Two small evaluation runs (base and tuned) for the review tests, written as `bbjtune eval` would,
and starting/stopping `bbjtune review` as a user does.

One base answer is hostile on purpose: it holds `<script>`, a Jinja expression and `</textarea>`,
so the tests can prove that model output is shown as text everywhere (its code also has a syntax
error, so the checker's inline diagnostics show up in the browser test's screenshot).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

BASE_LABEL = "qwen-base-zz7"
TUNED_LABEL = "qwen-tuned-qq9"
HOSTILE_MARK = "<script>alert(1)</script>"
HOSTILE_OUTPUT = (
    "Use OPEN and READ RECORD. " + HOSTILE_MARK + " Also {{ 7*7 }} and {% raw %} </textarea><b>bold</b>\n"
    '```bbj\nch = unt\nOPEN (ch)"data.txt"\nREAD RECORD (ch, END=eof line$\neof:\nCLOSE (ch)\n```\n'
)

# id, category, generation, prompt, base answer, tuned answer
PROMPTS = [
    (
        "hello",
        "strings",
        "character",
        "Print Hello World in BBj.",
        '```bbj\nPRINT "Hello World"\nEND\n```',
        '```bbj\nrem greet the user\nPRINT "Hello World"\nEND\n```',
    ),
    (
        "read-file",
        "file-io",
        "vpro5",
        "Read a text file line by line and close it at the end.",
        HOSTILE_OUTPUT,
        'Read until the END= branch fires:\n```bbj\nch = unt\nOPEN (ch)"data.txt"\nwhile 1\n'
        "  READ (ch, END=done)line$\n  PRINT line$\nwend\ndone:\nCLOSE (ch)\n```",
    ),
    (
        "counter-class",
        "oop",
        "gui",
        "Write a BBj class Counter with a method that adds one.",
        "```bbj\nclass public Counter\n  field public BBjNumber Count = 0\n  method public void add()\n"
        "    #Count = #Count + 1\n  methodend\nclassend\n```",
        "```bbj\nclass public Counter\n  field public BBjNumber Count = 0\n  method public void add()\n"
        "    #Count = #Count + 1\n  methodend\nclassend\n```\nCreate it with `new Counter()`.",
    ),
    (
        "window",
        "gui",
        "gui",
        "Open a window with BBjAPI.",
        '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10, 10, 300, 200, "Hello")\n'
        "process_events\n```",
        '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10, 10, 300, 200, "Hello")\n'
        'wnd!.setCallback(wnd!.ON_CLOSE, "bye")\nprocess_events\nbye:\nrelease\n```',
    ),
    (
        "loop",
        "strings",
        "character",
        "Count from 1 to 5.",
        "```bbj\nFOR i = 1 TO 5\n  PRINT i\nNEXT i\n```",
        "```bbj\nFOR i = 1 TO 5\n  PRINT STR(i)\nNEXT i\n```",
    ),
    (
        "broken",
        "strings",
        "character",
        "Print the length of a string.",
        '```bbj\nname$ = "BASIS"\nPRINT LEN(name$)\n```',
        '```bbj\nname$ = "BASIS\nPRINT LEN(name$)\n```',
    ),
    (
        "sql",
        "sql",
        "gui",
        "Open an SQL connection to the ChileCompany database.",
        '```bbj\nch = sqlunt\nSQLOPEN (ch)"ChileCompany"\nSQLCLOSE (ch)\n```',
        '```bbj\nch = sqlunt\nSQLOPEN (ch)"ChileCompany"\nSQLPREP (ch)"SELECT * FROM CUSTOMER"\n'
        "SQLEXEC (ch)\nSQLCLOSE (ch)\n```",
    ),
    (
        "empty",
        "error-handling",
        "gui",
        "Trap an error with ERR=.",
        "",
        '```bbj\nOPEN (1, ERR=failed)"missing.txt"\nEND\nfailed:\nPRINT "cannot open"\n```',
    ),
]


def _row(label: str, number: int, prompt: tuple, output: str, latency: float) -> dict:
    prompt_id, category, generation, text = prompt[:4]
    return {
        "id": prompt_id,
        "prompt": text,
        "category": category,
        "generation": generation,
        "task": "write",
        "sample": 0,
        "output": output,
        "code": "",
        "finish_reason": "stop",
        "error": None if output else "empty output",
        "latency_s": latency + number / 1000,
        "model": label,
        "suite": "bbj-core",
    }


def write_eval_runs(root: Path, extra_prompts: int = 0) -> tuple[Path, Path]:
    """root/eval/base and root/eval/tuned with generations.jsonl; returns the two run folders.

    The base run also answers a prompt the tuned run lacks, carries a second sample, and the tuned
    file has one broken line: all three must be handled without stopping the review.
    """
    base_dir, tuned_dir = root / "eval" / "base", root / "eval" / "tuned"
    base_dir.mkdir(parents=True, exist_ok=True)
    tuned_dir.mkdir(parents=True, exist_ok=True)
    prompts = list(PROMPTS) + [
        (
            f"extra-{k}",
            "strings",
            "character",
            f"Print the number {k}.",
            f"```bbj\nPRINT {k}\n```",
            f"```bbj\nPRINT STR({k})\n```",
        )
        for k in range(extra_prompts)
    ]
    base_rows = [_row(BASE_LABEL, n, p, p[4], 1.2345) for n, p in enumerate(prompts)]
    tuned_rows = [_row(TUNED_LABEL, n, p, p[5], 9.8765) for n, p in enumerate(prompts)]
    base_rows.append(
        _row(BASE_LABEL, 99, ("only-base", "strings", "character", "Only here."), "PRINT 1", 1.0)
    )
    base_rows.append({**base_rows[0], "sample": 1, "output": "a second sample that review ignores"})
    with open(base_dir / "generations.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in base_rows)
    with open(tuned_dir / "generations.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in tuned_rows[:3])
        fh.write("{this line is not json\n")
        fh.writelines(json.dumps(r) + "\n" for r in tuned_rows[3:])
    return base_dir, tuned_dir


def start_server(
    *args: str, cwd=REPO_ROOT, launcher: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `bbjtune review ARGS` and wait for the line with the address it prints.

    `launcher` replaces `python -m bbjtune` (e.g. to run it as another user), `env` the environment."""
    proc = subprocess.Popen(
        [*(launcher or [sys.executable, "-m", "bbjtune"]), "review", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    printed: dict[str, str] = {"stdout": ""}
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"review server exited early: {proc.stderr.read()}")
        printed["stdout"] += line
        if line.startswith("Access token: "):
            printed["token"] = line.split(": ", 1)[1].strip()
        if line.startswith("Open "):
            printed["url"] = line.split(" ", 1)[1].strip()
        if line.startswith("Press Ctrl+C"):
            return proc, printed
    proc.kill()
    raise AssertionError("review server did not start within 60 s")


def stop_server(proc: subprocess.Popen) -> tuple[str, str]:
    """Ctrl+C, as a user stops it: a clean exit (0) with a closing line."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err
