"""The shipped BBj evaluation suites in evals/: schema, self-consistency, checker, decontamination.

Every case carries a reference answer written for this project. The reference must satisfy its own
`expect` patterns and its BBj code must pass the project's syntax checker; otherwise the patterns
(or the reference) are wrong. A few deliberately wrong answers (Python, VB, Java, and BBj with the
classic mistakes) must be rejected, so the patterns are known to discriminate. Eval prompts must not
be near-duplicates of the training examples in examples/chatml/.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVALS = ROOT / "evals"
CORE = EVALS / "bbj-core.jsonl"
CHALLENGE = EVALS / "bbj-challenge.jsonl"
README = EVALS / "README.md"
TRAINING_GLOB = "examples/chatml/*.jsonl"

CATEGORIES = (
    "file-io",
    "strings",
    "oop",
    "gui",
    "dwc",
    "sql",
    "error-handling",
    "character-ui",
    "conversion",
    "math-dates",
    "program-structure",
)
GENERATIONS = ("character", "vpro5", "gui", "dwc")
TASKS = ("write", "explain", "fix", "convert", "factual")
CODE_TASKS = ("write", "fix", "convert")
REQUIRED = {"id", "prompt", "category", "generation", "task", "expect", "reference"}
OPTIONAL = {"answer"}

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
ID_RE = re.compile(r"^[a-z]+(?:-[a-z]+)*-\d{3}$")
INLINE_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")  # every pattern is case-insensitive, flags written inline


# ---- how a scorer applies the patterns (documented in evals/README.md) ----


def code_of(answer: str) -> str:
    """The text `must_not` patterns are matched against: all fenced blocks, else the whole answer."""
    blocks = [body for _info, body in FENCE.findall(answer)]
    return "\n".join(blocks) if blocks else answer


def bbj_blocks(answer: str) -> list[str]:
    return [body for info, body in FENCE.findall(answer) if info.strip().lower() == "bbj"]


def failures(case: dict, answer: str) -> list[str]:
    """Why `answer` does not satisfy `case` (empty list: it passes every pattern)."""
    out = []
    for p in case["expect"]["must"]:
        if not re.search(p, answer):
            out.append(f"must {p!r} does not match")
    code = code_of(answer)
    for p in case["expect"]["must_not"]:
        m = re.search(p, code)
        if m:
            out.append(f"must_not {p!r} matches {m.group(0)!r}")
    if case.get("answer") and not re.search(case["answer"], answer):
        out.append(f"answer {case['answer']!r} does not match")
    return out


# ---- loading ----


def load(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            pytest.fail(f"{path.name}:{lineno}: not valid JSON ({e.msg})")
        assert isinstance(row, dict), f"{path.name}:{lineno}: a case must be a JSON object"
        row["_where"] = f"{path.name}:{lineno}"
        rows.append(row)
    return rows


CORE_ROWS = load(CORE)
CHALLENGE_ROWS = load(CHALLENGE)
ALL_ROWS = CORE_ROWS + CHALLENGE_ROWS
BY_ID = {r["id"]: r for r in ALL_ROWS}


def case_id(row: dict) -> str:
    return row["id"]


# ---- schema ----


@pytest.mark.parametrize("row", ALL_ROWS, ids=case_id)
def test_case_schema(row):
    where = row["_where"]
    keys = set(row) - {"_where"}
    assert REQUIRED <= keys, f"{where}: missing {sorted(REQUIRED - keys)}"
    assert keys <= REQUIRED | OPTIONAL, f"{where}: unknown fields {sorted(keys - REQUIRED - OPTIONAL)}"
    assert ID_RE.match(row["id"]), f"{where}: bad id {row['id']!r}"
    assert row["category"] in CATEGORIES, f"{where}: category {row['category']!r}"
    assert row["generation"] in GENERATIONS, f"{where}: generation {row['generation']!r}"
    assert row["task"] in TASKS, f"{where}: task {row['task']!r}"
    assert isinstance(row["prompt"], str) and len(row["prompt"].split()) >= 5, f"{where}: prompt too short"
    assert isinstance(row["reference"], str) and row["reference"].strip(), f"{where}: empty reference"
    expect = row["expect"]
    assert isinstance(expect, dict) and set(expect) == {"must", "must_not"}, (
        f"{where}: expect needs must and must_not"
    )
    assert expect["must"], f"{where}: at least one must pattern"
    patterns = expect["must"] + expect["must_not"] + ([row["answer"]] if "answer" in row else [])
    for p in patterns:
        assert isinstance(p, str), f"{where}: pattern {p!r} is not a string"
        flags = INLINE_FLAGS.match(p)
        assert flags and "i" in flags.group(1), (
            f"{where}: pattern must start with inline flags incl. i: {p!r}"
        )
        try:
            re.compile(p)
        except re.error as e:
            pytest.fail(f"{where}: pattern {p!r} does not compile: {e}")
    if row["task"] == "factual":
        assert row.get("answer"), f"{where}: factual cases need an answer regex"
    if row["task"] in CODE_TASKS:
        assert bbj_blocks(row["reference"]), f"{where}: a {row['task']} reference needs a ```bbj block"


def test_ids_unique_across_suites():
    ids = [r["id"] for r in ALL_ROWS]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup, f"duplicate ids: {dup}"
    assert all(r["id"].startswith("challenge-") for r in CHALLENGE_ROWS)
    assert all(r["id"].startswith(r["category"] + "-") for r in CORE_ROWS)


def test_suite_sizes_and_spread():
    assert len(CORE_ROWS) >= 160
    assert len(CHALLENGE_ROWS) >= 35
    cats = Counter(r["category"] for r in CORE_ROWS)
    assert all(cats[c] >= 10 for c in CATEGORIES), cats
    gens = Counter(r["generation"] for r in ALL_ROWS)
    assert all(gens[g] >= 20 for g in GENERATIONS), gens
    tasks = Counter(r["task"] for r in ALL_ROWS)
    assert all(tasks[t] >= 10 for t in TASKS), tasks


def test_prompts_are_distinct_within_the_suite():
    seen = {}
    for row in ALL_ROWS:
        key = " ".join(re.findall(r"[a-z0-9]+", row["prompt"].lower()))
        assert key not in seen, f"{row['id']} repeats the prompt of {seen[key]}"
        seen[key] = row["id"]


# ---- references against their own patterns ----


@pytest.mark.parametrize("row", ALL_ROWS, ids=case_id)
def test_reference_satisfies_its_patterns(row):
    problems = failures(row, row["reference"])
    assert not problems, f"{row['_where']} {row['id']}: " + "; ".join(problems)
    # References are also clean when a scorer matches must_not against the whole answer.
    prose_hits = [p for p in row["expect"]["must_not"] if re.search(p, row["reference"])]
    assert not prose_hits, f"{row['_where']} {row['id']}: must_not matches the reference text: {prose_hits}"


def _check_source():
    try:
        from bbjtune.bbj import check_source
    except ImportError as e:  # the checker ships with the package; this only guards partial checkouts
        pytest.skip(f"bbjtune.bbj.check_source is not available ({e})")
    return check_source


@pytest.mark.parametrize("row", ALL_ROWS, ids=case_id)
def test_reference_code_passes_the_checker(row):
    check_source = _check_source()
    for n, code in enumerate(bbj_blocks(row["reference"]), 1):
        errors = [d for d in check_source(code) if d.severity == "error"]
        assert not errors, f"{row['id']} block {n}: " + "; ".join(
            f"line {d.line}:{d.column} {d.message} | {d.source_line.strip()}" for d in errors
        )


def test_checker_rejects_broken_reference_code():
    # The previous test is only meaningful if the checker can fail: break real references.
    check_source = _check_source()
    code = bbj_blocks(BY_ID["oop-001"]["reference"])[0]
    assert not [d for d in check_source(code) if d.severity == "error"]
    broken = code.replace("    methodend\n", "", 1)
    assert [d for d in check_source(broken) if d.severity == "error"]
    code = bbj_blocks(BY_ID["file-io-001"]["reference"])[0]
    assert [
        d
        for d in check_source(code.replace('open (ch)"notes.txt"', 'open (ch"notes.txt"'))
        if d.severity == "error"
    ]


# ---- the patterns must reject wrong answers ----

PYTHON_ANSWER = """Here is the code:

```python
import os

def main():
    with open("data.txt") as f:
        for i, line in enumerate(f, 1):
            print(f"{i:04d} {line}")

class Invoice:
    def __init__(self, number):
        self.number = number
        self.total = 0

main()
```
"""

VB_ANSWER = """```vb
Private Sub Command1_Click()
    Dim total As Double
    Dim i As Integer
    For i = 1 To 10
        If i Mod 2 = 0 Then
            total = total + i
        End If
    Next i
    MsgBox "Total: " & Format(total, "0.00")
End Sub
```
"""

JAVA_ANSWER = """```java
public class Invoice {
    private double total;
    public void addLine(int qty, double price) { this.total += qty * price; }
    public double getTotal() { return this.total; }
}
```
"""

# Wrong answers that look like BBj but contain the mistake the case is about.
WRONG_BBJ = {
    "file-io-001": '```bbj\nch = unt\nopen (ch)"notes.txt"\nwhile not eof(ch)\n    read (ch)line$\n    print line$\nwend\n```\n',
    "file-io-004": '```bbj\nch = unt\nopen (ch)"CUSTMAST"\nread (ch,key="000450",end=gone)name$\ngone:\n```\n',
    "oop-001": "```bbj\nclass public Invoice\n    field public BBjNumber Total\n    method public BBjNumber getTotal()\n"
    "        return #Total\n    methodend\nend class\n```\n",
    "oop-007": "```bbj\nclass public StockLevel\n    field private BBjNumber OnHand\n    method public void receive(BBjNumber qty)\n"
    "        OnHand = OnHand + qty\n    methodend\nclassend\n```\n",
    "gui-001": '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10,10,200,100,"Hi")\n'
    'MsgBox "Hello"\n```\n',
    "gui-011": '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(100,100,260,120,"Hello")\n'
    'b! = wnd!.addButton(101,80,40,100,28,"OK")\nb!.setCallback(BBjAPI.ON_BUTTON_PUSH,"ok")\nprocess_events\n```\n',
    "gui-013": "```bbj\nctrl(sysgui,105,0)=name$\n```\n",
    "dwc-012": '```bbj\nwnd!.setStyle("display","grid")\nwnd!.setStyle("grid-template-columns","1fr 1fr")\n```\n',
    "sql-001": '```bbj\nconn! = BBjAPI().getJDBCConnection("ChileCompany")\nstmt! = conn!.createStatement()\n'
    'rs! = stmt!.executeQuery("SELECT * FROM CUSTOMER WHERE COUNTRY=\'" + country$ + "\'")\n'
    "while rs!.next()\n    print rs!.getString(1)\nwend\n```\n",
    "character-ui-012": '```bbj\nprint @(20,5),"TOTAL"\n```\nThe row comes first in @(row,column).\n',
    "math-dates-006": "```bbj\ndef fnleap(y)\n    if y % 4 = 0 then return 1\n    return 0\nfnend\n```\n",
    "strings-010": "It marks the variable as global, so every program can see it.",
    "challenge-001": '```bbj\nfruit = BBjAPI().makeVector()\nfruit.addItem("apple")\n```\n',
    "challenge-003": "```bbj\nclass public Cart\n    field private BBjNumber Total\n    method public BBjNumber getTotal()\n"
    "        return #Total\n    methodend\nclassend\n```\n",
    "challenge-004": '```bbj\nif qty > 100 then discount = 5\n    print "bulk order"\nfi\n```\n',
    "challenge-007": "```bbj\nextract record (och,key=ord$,end=no_order)ord_rec$\n```\n",
    "challenge-011": "```bbj\nfor i = 1 to items!.size()\n    print items!.getItem(i)\nnext i\n```\n",
    "challenge-016": '```bbj\nmsg$ = "Dear customer, "+\n    :"your order has shipped."\n```\n',
    "challenge-023": '```bbj\nwhile rs!.next()\n    print rs!.getString(0)," ",rs!.getString(1)\nwend\n```\n',
    "challenge-025": 'Use backslash escapes: `msg$ = "He said \\"hi\\"\\n"`.',
}


@pytest.mark.parametrize("row", ALL_ROWS, ids=case_id)
def test_patterns_reject_foreign_language_answers(row):
    for answer in (PYTHON_ANSWER, VB_ANSWER, JAVA_ANSWER, ""):
        assert failures(row, answer), f"{row['id']} accepts a non-BBj answer:\n{answer[:80]}"


@pytest.mark.parametrize("case_key", sorted(WRONG_BBJ))
def test_patterns_reject_the_classic_mistake(case_key):
    assert failures(BY_ID[case_key], WRONG_BBJ[case_key]), f"{case_key} accepts the wrong answer"


def test_code_of_uses_fences_only_when_present():
    assert code_of("prose `def f(x):`\n```bbj\nx=1\n```\n") == "x=1\n"
    assert code_of("no fences here") == "no fences here"


# ---- decontamination against the training examples ----


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _grams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    w = _words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _training_prompts() -> list[tuple[str, str]]:
    out = []
    for path in sorted(ROOT.glob(TRAINING_GLOB)):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the data audit reports malformed training lines; here only content matters
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list):
                continue
            user = "\n".join(
                m.get("content", "")
                for m in messages
                if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
            )
            if user.strip():
                out.append((f"{path.name}:{lineno}", user))
    return out


JACCARD_MAX = 0.2  # word 8-gram Jaccard similarity of eval prompt and training prompt
OVERLAP_MAX = 0.5  # shared 8-grams / 8-grams of the shorter of the two prompts


def test_prompts_are_not_near_duplicates_of_training_examples():
    training = _training_prompts()
    if not training:
        pytest.skip(f"no training examples at {TRAINING_GLOB}")
    index: dict[tuple[str, ...], set[int]] = {}
    train_grams = []
    for i, (_where, text) in enumerate(training):
        g = _grams(text)
        train_grams.append(g)
        for gram in g:
            index.setdefault(gram, set()).add(i)
    clashes = []
    for row in ALL_ROWS:
        g = _grams(row["prompt"])
        hits = Counter(i for gram in g for i in index.get(gram, ()))
        for i, shared in hits.items():
            jaccard = shared / len(g | train_grams[i])
            overlap = shared / min(len(g), len(train_grams[i]))
            if jaccard >= JACCARD_MAX or overlap >= OVERLAP_MAX:
                clashes.append(
                    f"{row['id']} ~ {training[i][0]} (jaccard {jaccard:.2f}, overlap {overlap:.2f})"
                )
    assert not clashes, "eval prompts too close to training prompts:\n" + "\n".join(clashes)


def test_decontamination_measure_flags_a_paraphrase():
    # The measure above must catch a lightly edited copy of a prompt.
    prompt = BY_ID["file-io-003"]["prompt"]
    edited = prompt.replace("Before a risky price update, make", "Please make").replace(
        "report how many", "print how many"
    )
    a, b = _grams(prompt), _grams(edited)
    assert len(a & b) / len(a | b) >= JACCARD_MAX


# ---- README counts are computed from the files ----


def count_tables() -> str:
    """The markdown the README must contain, computed from the suites."""
    lines = []
    for title, key, values in (
        ("category", "category", CATEGORIES),
        ("generation", "generation", GENERATIONS),
        ("task", "task", TASKS),
    ):
        core = Counter(r[key] for r in CORE_ROWS)
        chal = Counter(r[key] for r in CHALLENGE_ROWS)
        lines.append(f"| {title} | core | challenge | total |")
        lines.append("|---|---:|---:|---:|")
        for v in values:
            lines.append(f"| {v} | {core[v]} | {chal[v]} | {core[v] + chal[v]} |")
        lines.append(f"| **all** | {len(CORE_ROWS)} | {len(CHALLENGE_ROWS)} | {len(ALL_ROWS)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def test_readme_counts_match_the_suites():
    text = README.read_text(encoding="utf-8")
    expected = count_tables()
    assert expected in text, "evals/README.md counts are stale; replace the tables with:\n\n" + expected
