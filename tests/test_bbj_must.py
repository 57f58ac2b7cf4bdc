"""Must-patterns derived from a reference answer (bbj/must.py): what the task's code uses, as regexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbjtune.bbj.must import derive_must_patterns, pattern_share

REPO = Path(__file__).resolve().parents[1]

FILE_ANSWER = """Read the file line by line:

```bbj
ch = unt
open (ch)"notes.txt"
while 1
    read (ch,end=*break)text$
    print str(n:"0000"), text$(1,10)
wend
close (ch)
end
```
"""


def test_patterns_name_verbs_functions_and_options_but_not_everyday_statements():
    patterns = derive_must_patterns(FILE_ANSWER)
    plain = [p.replace("(?i)", "").replace(r"(?<![\w.])", "") for p in patterns]
    # PRINT, WEND and END are in every program; text$(1,10) is a substring, not a function call
    assert plain == [r"OPEN\b", r"WHILE\b", r"READ\b", r"CLOSE\b", r"str\s*\(", r"\bEND\s*="]


def test_methods_come_first_and_declarations_and_constructors_are_not_calls():
    code = """```bbj
class public Greeter
    method public void greet(BBjString who!)
        print "hi ", who!
    methodend
classend
g! = new Greeter()
sysgui! = BBjAPI().openSysGui("X0")
win! = sysgui!.addWindow(10,10,200,100,"Hi")
g!.greet("you")
```"""
    patterns = derive_must_patterns(code)
    assert patterns[:3] == [r"(?i)\.openSysGui\s*\(", r"(?i)\.addWindow\s*\(", r"(?i)\.greet\s*\("]
    joined = " ".join(patterns)
    # `new Greeter()` and the class line construct/declare, they do not call
    assert "greeter" not in joined.lower()
    assert r"bbjapi\s*\(" in joined and "CLASS" in joined and "METHOD" in joined


def test_an_answer_that_misses_the_task_scores_low_and_prose_has_no_patterns():
    patterns = derive_must_patterns(FILE_ANSWER)
    python = "```python\nwith open('notes.txt') as f:\n    for n, line in enumerate(f):\n        print(n, line)\n```"
    assert pattern_share(FILE_ANSWER, patterns) == 1.0
    assert pattern_share(python, patterns) < 0.5
    assert derive_must_patterns("BBj has no such function; use CVS instead.") == []
    assert pattern_share("anything", []) == 1.0


def suite_references():
    for path in sorted((REPO / "evals").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            case = json.loads(line)
            if case.get("reference"):
                yield case["id"], case["reference"]


@pytest.mark.parametrize("case_id,reference", list(suite_references())[:200])
def test_every_eval_reference_passes_its_own_patterns(case_id, reference):
    # the derivation's own consistency on 200+ real references: a correct answer is never penalised
    patterns = derive_must_patterns(reference)
    assert pattern_share(reference, patterns) == 1.0, case_id
