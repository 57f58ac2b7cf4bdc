"""Build examples/demo/short-programs.jsonl: short BBj requests with short answers, for the demo.

The quickstart demo trains a model of a few million random-initialised parameters for a few CPU
minutes. Such a model cannot learn the 5-60 line answers of examples/chatml/, but it can learn
the *shape* of an answer: one sentence, a ```bbj block of a few lines, the end of the turn. These
examples teach that shape: each is a request in the words of the evaluation prompts ("Write a
BBj program that ...") and a 2-8 line program that the checker accepts. They are generated from
the templates below (the values vary), so the file is reproducible:

    python examples/demo/build_short_programs.py           # rebuild the JSONL
    python examples/demo/build_short_programs.py --check   # fail if the JSONL is out of date

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "short-programs.jsonl"
sys.path.insert(0, str(HERE.parent))
from build_chatml import SYSTEM_PROMPT  # noqa: E402 (after the path it needs); one system prompt for all example data

WORDS = [
    "invoice",
    "customer",
    "order",
    "report",
    "BASIS",
    "Business BASIC",
    "warehouse",
    "ledger",
    "payroll",
    "inventory",
    "Hello, world",
    "backup done",
    "Good morning",
    "end of day",
    "price list",
]
FILES = ["notes.txt", "app.log", "orders.txt", "export.csv", "names.txt", "audit.log"]
TITLES = ["Customers", "Orders", "Settings", "Main", "Report", "Inventory"]

# (category, generation, request, sentence, code); {w} a word, {a} {b} {n} numbers, {f} a file, {t} a title
TEMPLATES = [
    (
        "program-structure",
        "character",
        'Write a BBj program that prints "{w}".',
        "PRINT writes to the terminal:",
        'print "{w}"\nend',
    ),
    (
        "math-dates",
        "character",
        "Write a BBj program that adds {a} and {b} and prints the sum.",
        "Assign both numbers, then print their sum:",
        "a = {a}\nb = {b}\nprint a + b\nend",
    ),
    (
        "program-structure",
        "character",
        "Write a BBj program that prints the numbers from 1 to {n}.",
        "A FOR loop counts for you:",
        "for i = 1 to {n}\n    print i\nnext i\nend",
    ),
    (
        "strings",
        "character",
        'Write a BBj program that prints the length of the text "{w}".',
        "LEN returns the number of characters:",
        'text$ = "{w}"\nprint len(text$)\nend',
    ),
    (
        "strings",
        "character",
        'Write a BBj program that prints "{w}" in upper case.',
        "CVS with mode 4 converts to upper case:",
        'text$ = "{w}"\nprint cvs(text$,4)\nend',
    ),
    (
        "math-dates",
        "character",
        "Write a BBj program that says whether {n} is even or odd.",
        "MOD gives the remainder of the division by 2:",
        'n = {n}\nif mod(n,2) = 0 then print "even" else print "odd"\nend',
    ),
    (
        "math-dates",
        "character",
        "Write a BBj program that doubles 1 until it is at least {n} and prints it.",
        "A WHILE loop repeats while its condition holds:",
        "x = 1\nwhile x < {n}\n    x = x * 2\nwend\nprint x\nend",
    ),
    (
        "strings",
        "character",
        'Write a BBj program that greets "{w}" by name.',
        "Join the strings with +:",
        'name$ = "{w}"\nprint "Hello, " + name$\nend',
    ),
    (
        "file-io",
        "character",
        "Write a BBj program that prints every line of the file {f}.",
        "READ with END= leaves the loop at the end of the file:",
        'ch = unt\nopen (ch)"{f}"\nwhile 1\n    read (ch,end=*break)line$\n    print line$\nwend\nclose (ch)\nend',
    ),
    (
        "file-io",
        "character",
        'Write a BBj program that writes the line "{w}" to the file {f}.',
        "Create the file, open it on a free channel and write:",
        'erase "{f}",err=*next\nstring "{f}"\nch = unt\nopen (ch)"{f}"\nwrite (ch)"{w}"\nclose (ch)\nend',
    ),
    (
        "math-dates",
        "character",
        "Write a BBj program that prints the squares of 1 to {n}.",
        "Multiply the loop variable by itself:",
        "for i = 1 to {n}\n    print i, i * i\nnext i\nend",
    ),
    (
        "math-dates",
        "character",
        "Write a BBj program that prints today's date.",
        "DATE(0) is today; the mask picks the format:",
        'print date(0:"%Yl-%Mz-%Dz")\nend',
    ),
    (
        "error-handling",
        "character",
        "Write a BBj program that opens {f} and prints a message when it is missing.",
        "ERR= jumps to a label when OPEN fails:",
        'ch = unt\nopen (ch,err=missing)"{f}"\nclose (ch)\nprint "found"\nend\nmissing:\nprint "{f} is missing"\nend',
    ),
    (
        "gui",
        "gui",
        'Write a BBj program that opens a window titled "{t}".',
        "Open the SysGui, add a window and wait for events:",
        (
            'sysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(100,100,300,200,"{t}")\n'
            'wnd!.setCallback(wnd!.ON_CLOSE,"done")\nprocess_events\ndone:\nrelease'
        ),
    ),
    (
        "strings",
        "character",
        'Write a BBj program that prints the first {k} characters of "{w}".',
        "A substring takes a start and a length:",
        'text$ = "{w}"\nprint text$(1,{k})\nend',
    ),
    (
        "program-structure",
        "character",
        "Write a BBj program that adds the numbers from 1 to {n}.",
        "Add each number to a total:",
        "total = 0\nfor i = 1 to {n}\n    total = total + i\nnext i\nprint total\nend",
    ),
]


def build(per_template: int = 12, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for category, generation, request, sentence, code in TEMPLATES:
        made = 0
        for _ in range(50 * per_template):  # a request with few variants is there as often as it varies
            if made == per_template:
                break
            w = rng.choice(WORDS)
            values = {
                "w": w,
                "a": rng.randint(2, 99),
                "b": rng.randint(2, 99),
                "n": rng.randint(3, 40),
                "f": rng.choice(FILES),
                "t": rng.choice(TITLES),
                "k": rng.randint(1, max(1, len(w) - 1)),
            }
            user = request.format(**values)
            if user in seen:
                continue
            seen.add(user)
            # The code alone: its first tokens (```bbj) are the same in every answer, which is what a
            # model this small picks up first; a sentence before it led the demo model to end at once.
            answer = f"```bbj\nrem {sentence}\n{code.format(**values)}\n```"
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": answer},
                    ],
                    "category": category,
                    "generation": generation,
                    "task": "write",
                }
            )
            made += 1
    rng.shuffle(rows)
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSONL is out of date")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.name} is out of date: run python examples/demo/build_short_programs.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} examples to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
