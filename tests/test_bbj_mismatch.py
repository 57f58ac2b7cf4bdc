"""Tier 2's type-mismatch rule (bbj/mismatch.py): a string and a number mixed where BBj stops with
error 26, caught on the forms models write, and never raised where the types are not plain."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbjtune.bbj.api import tokenized
from bbjtune.bbj.lexer import logical_lines, split_physical_lines
from bbjtune.bbj.mismatch import check_type_mismatch
from bbjtune.bbj.quality import check_quality
from bbjtune.data.cpt import decode_source

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "bbj-corpus"


def mismatches(code: str) -> list[str]:
    return [m.message for m in check_type_mismatch(tokenized(logical_lines(split_physical_lines(code))))]


@pytest.mark.parametrize(
    "line, shown",
    [
        ('print "Total: " + total', '`"Total: " + total` adds a number to a string'),
        ('print "Channel "+str(ch1)+" is "+ch1', '`" is " + ch1` adds a number to a string'),
        ("name$ = 5", "`name$ = 5` puts a number into the string variable `name$`"),
        ('let sql = "SELECT price FROM item"', "puts a string into the number variable `sql`"),
        ("qty = ctrl(gui,110,1)", "`qty = ctrl(gui,110,1)` puts a string"),  # CTRL() returns the text
        ("files$ = unt", "puts a number into the string variable `files$`"),
        ("a$[1] = 1", "puts a number into the string variable `a$`"),
        ("x = 1; y$ = x + 1", "`y$ = x+1` puts a number"),
        ("if ok then a$ = 1", "`a$ = 1` puts a number"),
        ("if number$ > 99999999 then stop", "`number$ > 99999999` compares a string with a number"),
        ('while line <> "Q"', '`line <> "Q"` compares a number with a string'),
        ("x = a$ * 2", "`*` needs numbers, and `a$` is a string"),
        ('msg$ = "n=" + #count', '`"n=" + #count` adds a number to a string'),
        ("x = num(a$) + date(0)", "`num(a$) + date(0)` adds a string to a number"),
        ('print str(n + "1")', '`n + "1"` adds a string to a number'),  # inside a call's argument
        ("x = fnsum(1) + fnname$(2)", "adds a string to a number"),  # DEF FN kinds by their suffix
        ("if a$ = 5 then print 1", "`a$ = 5` compares a string with a number"),  # = in a condition
        ('sysgui = BBjAPI().openSysGui("X0")', "puts a BBj object into the number variable `sysgui`"),
        ('w = sysgui!.addWindow(10,10,200,200,"x")', "an object variable's name ends with `!` (`w!`)"),
        ("api$ = BBjAPI()", "puts a BBj object into the string variable `api$`"),
        ("class public Inv\nclassend\ninv = new Inv()", "`inv = new Inv()` puts a BBj object"),
    ],
)
def test_string_and_number_mixed_are_caught(line, shown):
    found = mismatches(line)
    assert len(found) == 1 and shown in found[0], found
    assert "error 26" in found[0]


@pytest.mark.parametrize(
    "line",
    [
        'print "Total: " + str(total)',
        'name$ = "x" + chr(10) + $0D0A$',
        "x = len(a$) + 1",
        'flag = a$ = "y"',  # a comparison's result is a number
        "read (ch,key=k$,dom=*next)a$",  # NAME=value options
        'open (1,mode="O_APPEND")"f"',
        'x$ = str(n:"##0.00")',
        'print @(0,0),"x",n',
        "print 'CS'+\"hi\"",
        "x = w!.getText() + 1",  # objects and their methods: unknown
        "n = String.valueOf(1) + 1",  # Java classes: unknown
        'x = rec.amt + "x"',  # template fields without a suffix: unknown
        'a$ = rec.name$ + "x"',
        "for i = 1 to len(a$) step 2",
        "y = -x + 1",
        'dim r$:"name:c(20)"',
        'a$ = day + "x"',  # DAY holds a string, but a program may own a numeric DAY
        'x! = "a" + b!',
        'x = a$(1,3) = "ab"',
        "print a$, b + 1",
        'if a$ <> "" and b > 1 then x = 1',
        'call "x.bbj", a$ + "x", n + 1',
        "x = cast(BBjNumber, y!) + 1",
        'sql$ = "SELECT * FROM T WHERE A=" + str(a)',
        "x = max(1, 2) * 3 + a[1]",
        "rem a$ = 5 is only a comment",
        'x = iff(a > 1, "big", 0)',  # functions of either kind: unknown
        "lib$ = BBjAPI().getConfig().getCurrentCommandLine()",  # a chain ending in an unknown result
        "hash$ = new String(b!)",  # BBj turns Java strings and numbers into its own
        "x = new java.lang.Integer(5)",
        "n = BBjAPI().getSysGui().getAvailableContext()",
        "v! = BBjAPI().makeVector()",
        "c = w!.getControl(5).getID()",
        'if pos("x"=a$) then stop',  # POS's = inside its parentheses
        "if num(a$,err=*next) = 5 then stop",
    ],
)
def test_plain_or_unknown_types_give_no_finding(line):
    assert mismatches(line) == []


def test_a_declared_type_wins_over_the_missing_suffix():
    code = """\
class public Ticket
    field public BBjString subject
    field public BBjNumber number
    method public BBjString label(BBjString prefix)
        methodret prefix + ":" + #subject + str(#number)
    methodend
    method public BBjString bad()
        methodret "#" + #number
    methodend
classend
"""
    found = check_type_mismatch(tokenized(logical_lines(split_physical_lines(code))))
    assert [(m.line, m.message.split(":")[0]) for m in found] == [
        (8, '`"#" + #number` adds a number to a string')
    ]


def test_the_finding_is_a_tier2_error_on_its_line():
    findings = check_quality('x = 1\nprint "Total: " + x\nend\n')
    assert [(f.rule, f.line, f.severity) for f in findings] == [("type-mismatch", 2, "error")]


@pytest.mark.skipif(not (CORPUS / "real").is_dir(), reason="../shared/bbj-corpus is not present")
def test_real_programs_and_the_language_servers_type_tests():
    """No finding on the real programs; the language server's own 'return/target mismatch' tests
    (validation-function-calls 017-023, e.g. `B$=ABS(2)`) are all caught."""
    lines = 0
    for path in sorted((CORPUS / "real").rglob("*.bbj")):
        text, _ = decode_source(path.read_bytes())
        lines += text.count("\n")
        assert mismatches(text) == [], path
    assert lines > 10_000
    snippets = sorted((CORPUS / "language-server" / "snippets").glob("validation-function-calls__0[12]*.bbj"))
    targets = [p for p in snippets if 17 <= int(p.stem.rsplit("__", 1)[1]) <= 23]
    assert len(targets) == 7
    for path in targets:
        assert len(mismatches(path.read_text())) == 1, path


@pytest.mark.parametrize(
    "line, shown",
    [
        ('x$ = str(n, "###", 3, 1)', "STR() takes 1 to 2 arguments, not 4"),
        ("x$ = cvs(a$)", "CVS() takes 2 arguments, not 1"),
        ("x$ = ath()", "ATH() takes 1 argument, not 0"),
        ("x = max()", "MAX() takes at least 1 argument, not 0"),
        ('d$ = date("YYYY-MM-DD")', 'argument 1 of DATE() is a number, and `"YYYY-MM-DD"` is a string'),
        ("x$ = cvs(whse, 3)", "argument 1 of CVS() is a string, and `whse` is a number"),
        ("print hta(abs(4.5))", "argument 1 of HTA() is a string, and `abs(4.5)` is a number"),
    ],
)
def test_builtin_functions_get_possible_argument_counts_and_kinds(line, shown):
    found = check_type_mismatch(tokenized(logical_lines(split_physical_lines(line))))
    assert len(found) == 1 and shown in found[0].message, found
    assert found[0].rule == ("bad-arity" if "takes" in shown else "type-mismatch")


@pytest.mark.parametrize(
    "line",
    [
        "x = max(1, 2, 3, 4, 5)",  # MAX takes any number
        'x$ = ath("8", err=*next)',  # NAME=value options are not arguments
        'r = msgbox("Hello!", "IconInfo", "Greetings", MODE="theme=primary")',  # documented `expr`
        'x$ = date(0:"%Y-%Mz-%Dz")',
        "size = dec(fin(ch)(1,4))",  # FIN(ch), then a substring of its result
        'chanopt (1,mode="123") "BAUD=9600"',  # the CHANOPT verb, not the function
        "methodret (a! <> null()) and (b! <> null())",  # the AND operator, not AND()
        "x$ = and(a$, $7F$)",
        "library\nASC(param:string, ERR?:lineref): int",  # a library's declarations are not calls
    ],
)
def test_builtin_calls_that_are_fine(line):
    assert check_type_mismatch(tokenized(logical_lines(split_physical_lines(line)))) == []


@pytest.mark.skipif(not (CORPUS / "language-server").is_dir(), reason="../shared/bbj-corpus is not present")
def test_the_language_servers_builtin_call_tests():
    """Its validation-function-calls tests: no valid one flagged; of those it flags, all but ADJN("2")
    (ADJN's argument is documented `val`, so its kind is left unknown) are caught."""
    import json

    root = CORPUS / "language-server"
    missed, false = [], []
    for line in (root / "index.jsonl").read_text(encoding="utf-8").splitlines():
        test = json.loads(line)
        if not test["id"].startswith("validation-function-calls/"):
            continue
        code = (root / test["path"]).read_text(encoding="utf-8")
        flagged = [f for f in check_quality(code) if f.severity == "error"]
        if test["label"] == "valid" and flagged:
            false.append(code)
        if test["label"] == "invalid-semantic" and not flagged:
            missed.append(code.strip())
    assert false == []
    assert missed == ['? ADJN("2")']


def test_the_builtins_table_is_what_the_build_script_makes_of_the_reference():
    source = CORPUS / "language-server" / "builtins" / "functions.bbl"
    if not source.exists():
        pytest.skip("../shared/bbj-corpus is not present")
    import json

    from conftest import benchmark_module

    module = benchmark_module("build_builtins_table")
    built = module.build(source.read_text(encoding="utf-8"))
    assert built == json.loads(module.OUT.read_text(encoding="utf-8"))
    assert built["functions"]["MAX"]["variadic"] and not built["functions"]["ABS"]["variadic"]
    assert built["functions"]["MSGBOX"]["options"] == ["MODE", "TIM", "ERR"]
