"""The built-in BBj checker on hand-written programs: what it accepts, what it flags, and where."""

from __future__ import annotations

import random
import time

import pytest

from bbjtune.bbj import Diagnostic, check_file, check_source
from bbjtune.bbj.checker import check_bytes
from bbjtune.bbj.diagnostics import format_bbjcpl, format_human


def errors(text: str) -> list[Diagnostic]:
    return [d for d in check_source(text) if d.severity == "error"]


def warnings(text: str) -> list[Diagnostic]:
    return [d for d in check_source(text) if d.severity == "warning"]


VALID = {
    "assignments": 'a = 1, b$ = "say ""hi""", c% = 7, d! = null()\nlet x = -1 + .5 * 2 ^ 3 / 4, y = 1E3\n',
    "strings-hex-mnemonics": "crlf$ = $0D0A$ + $$\nprint 'CS',@(0,0),\"hello\",'LF',\nx$ = 'WINDOW'(1,1,80,24,\"t\",$00$)\n",
    "backslash-is-literal": 'path$ = "C:\\temp\\"\n',
    "print-forms": 'print\n? "a";\nprint (1)"x",y$,\nwrite record (ch,key=k$,err=*next)rec$\nprint ; rem nothing\n',
    "channel-io": 'open (ch,mode="O_CREATE",err=fail)"file.txt"\nread (ch,key="K",dom=*next,end=done)a$,b,*\n'
    "extract record (2,ind=3)r$\nremove (ch,key=k$)\nclose (ch)\nfail:\ndone:\n",
    "verify-list": 'input (0,err=*same)@(5,2),"Name: ",n$:("Q"=quit,len=1,20)\nquit: stop\n',
    "dim-and-templates": 'dim a$(10,"."), b[5,5], c$[1:n](20), r$:"name:c(20*),amt:n(10*)"\n'
    'r.name$ = "Ann"\nredim r$\ndim x!\n',
    "if-forms": "if a = 1 then b = 2\nif a then b = 1 else b = 2 fi; print b\nif a <> 0 b = 3\n"
    'IF a = 1 THEN\n  print "one"\nELSE\n  print "other"\nENDIF\nif x then a = 1 fi if y then b = 2 fi\n',
    "loops": "for i = 1 to 10 step 2\n  print i\nnext i\nwhile j < 3\n  j = j + 1\nwend\nrepeat\n  k = k + 1\nuntil k > 5\n"
    "for i = 1 to 3; x = x + i; next\n",
    "switch": 'switch n\n  case 1; print "one"; break\n  case 2, 3\n    print "few"\n    break\n  case default\n    print "many"\nswend\n',
    "jumps-and-labels": "seterr oops\ngosub work\non n goto a1, a2\ngoto *next\nwork: return\na1:\na2: exitto done\noops: retry\ndone: end\n",
    "programs": 'call "lib.bbj::sub", err=*next, a$, b\nenter a$, b\nrun "next.bbj"\nexit 1\nrelease\nexecute cmd$, err=*next\n',
    "def-fn": 'def fnsq(x) = x * x\ndef fnpad$(s$, n)\n  if len(s$) < n then s$ = s$ + " "\n  return s$\nfnend\nprint fnsq(3), fnpad$("a", 3)\n',
    "class": "use java.util.HashMap\nuse ::lib/Shapes.bbj::Shape\nclass public Circle extends Shape implements Comparable\n"
    "  field private BBjNumber Radius = 1\n  field public static java.util.List Items!\n"
    "  method public Circle(BBjNumber r)\n    #Radius = r\n  methodend\n"
    "  method public BBjNumber area()\n    methodret 3.14 * #Radius ^ 2\n  methodend\n"
    "  method public static String[] names(String[] in!, int n)\n    methodret in!\n  methodend\nclassend\n"
    "c! = new Circle(2)\nprint c!.area()\nm! = new HashMap()\nx! = cast(BBjString[], y!)\n#helper()\n",
    "interface": "interface public Named extends Comparable\n  method public BBjString name()\ninterfaceend\n",
    "declare": 'declare auto BBjString s!\ndeclare java.lang.String@ t!\nt! = new java.lang.String@("x")\n',
    "bbjapi-gui": 'sysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10,10,200,100,"Hi")\n'
    'wnd!.setCallback(wnd!.ON_CLOSE,"done")\nprocess_events, err=*same\ndone: release\n',
    "sql": 'sqlopen (1,mode="AUTO_COMMIT=OFF",err=*next)"db"\nsqlprep (1)"select * from t where id = ?"\n'
    'sqlexec (1) id$\nsqlclose (1)\nselect (2,err=*next)r$:r.name$ from "cust" where r.bal > 1 sortby r.name$\n',
    "continuation": 'x$ = "a" +\n: "b" +\n:"c"\nP\n:RINT "He\n:llo"\n',
    "numbered": '0010 REM numbered program\n0020 PRINT "x"\n0030 GOTO 0010\n',
    "rem-variants": 'rem a comment with an unbalanced " quote\nx = 1; rem trailing\nremark = 2\nrem15 = 3\n'
    "rem /**\nrem  * javadoc\nrem  */\n",
    "keyword-names": 'release! = 1\nstepX = 2\nnext_item = 3\nprint release!, stepX\nmode$ = "m"\nobj!.remove(1)\n',
    "substrings": 'a$ = b$(1,3)\nc$(2,1) = "x"\nd$[1](2) = "y"\nn = dec(fin(ch)(1,4))\n',
    "keyed-files": 'mkeyed "f",[1:6],[7:10:"N"],0,16\nxkeyed "f",[1:1:10]+[2:1:5],80,1000,err=*next\n',
    "misc-verbs": 'begin except a, b$[all]\nprecision 2\nwait 1\nthrow "bad", 42\nrename "a" to "b", mode="REPLACE"\n'
    'erase "f", "g", mode="", err=*next\ndelete ,last\ncallback(on_close,"x",0)\ntable ff 00 01\n'
    'data 1, "a"\ndread n, s$\nrestore\nlast:\n',
    "crlf": "x = 1\r\ny = 2\r\nprint x\r\n",
    "lone-cr": "x = 1\ry = 2\r",
}

# One statement per verb named in ../shared/BBJ_LANGUAGE.md (each checked on its own).
EVERY_VERB = [
    "LET a = 1",
    'a = 1, b$ = "x"',
    "IF a THEN b = 1 ELSE b = 2",
    "IF a = 1 THEN",
    "ELSE",
    "FI",
    "ENDIF",
    "FOR i = 1 TO n STEP 2",
    "NEXT",
    "NEXT i",
    "WHILE a < 3",
    "WEND",
    "REPEAT",
    "UNTIL a > 3",
    "SWITCH a",
    "BREAK",
    "CONTINUE",
    "GOTO done",
    "GOSUB work",
    "ON n GOTO a1, a2",
    "ON n GOSUB a1",
    "RETURN",
    "EXITTO done",
    "SETERR oops",
    "SETERR 0",
    "SETESC esc",
    "RETRY",
    'OPEN (1,MODE="O_READ",TIM=5,ERR=oops)"file.txt"',
    "READ (1,KEY=k$,IND=2,DOM=*next,END=done,ERR=oops,TIM=1)a$",
    "READ RECORD (1,END=*break)r$",
    'INPUT "Name? ", n$',
    "EXTRACT (1,KEY=k$)a$",
    "FIND (1,KEY=k$,DOM=*next)a$",
    "WRITE (1,KEY=k$)a$,b",
    "WRITE RECORD (1)r$",
    'PRINT (1)"x",',
    "PRINT",
    '? "x"',
    "CLOSE (1)",
    "LOCK (1)",
    "UNLOCK (1,ERR=*next)",
    "REMOVE (1,KEY=k$)",
    "READ (1)IOL=iolist1",
    "IOLIST a$, b, c$",
    'CALL "prog.bbj::label", ERR=oops, a$, b',
    "ENTER a$, b",
    "EXIT",
    "EXIT 2",
    'RUN "x.bbj"',
    "RELEASE",
    "RELEASE 1",
    "END",
    "STOP",
    "BYE",
    "EXECUTE s$",
    'DIM A$(10), B[5,5], R$:"name:c(20*),amt:n(10*)"',
    "REDIM R$",
    'DATA 1, "a"',
    "DREAD n, s$",
    "RESTORE",
    "RESTORE lbl",
    "DEF FNX(a) = a * 2",
    "PRECISION 4",
    "DECLARE BBjString s!",
    "DECLARE AUTO BBjString s!",
    "USE ::path/file.bbj::ClassName",
    "USE java.util.HashMap",
    'x! = new File@("a")',
    "x! = CAST(BBjString, y!)",
    "THROW msg$, 42",
    "PROCESS_EVENTS",
    'CALLBACK(ON_CLOSE,"done",ctx)',
    'sysgui! = BBjAPI().openSysGui("X0")',
    'wnd!.setCallback(wnd!.ON_CLOSE,"done")',
    'SQLOPEN (1)"db"',
    'SQLPREP (1)"select 1"',
    "SQLEXEC (1)",
    "SQLFETCH (1,ERR=done)r$",
    "SQLCLOSE (1)",
    "SELECT (ch)tpl$ FROM f$ WHERE e",
    "x = 1; rem note",
    "PRINT 'CS',@(1,2),\"x\"",
]


@pytest.mark.parametrize("statement", EVERY_VERB)
def test_every_verb_of_the_language_page(statement):
    assert errors(statement + "\n") == []


INVALID = [
    # (name, source, expected code, 1-based line)
    ("two-values", 'print "a" "b"\n', "unexpected-token", 1),
    ("missing-close-paren", "x = (1 + 2\n", "unbalanced-paren", 1),
    ("extra-close-paren", "x = f(1))\n", "unexpected-token", 1),
    ("unterminated-string", 'x = 1\nx$ = "abc\n', "unterminated-string", 2),
    ("call-on-left", "ctrl(sysgui,105,0) = name$\n", "call-assignment", 1),
    ("method-call-on-left", 'w!.getText() = "x"\n', "call-assignment", 1),
    ("literal-on-left", "x = 1, 5 = y\n", "invalid-assignment", 1),
    ("for-without-to", "for i = 1 10\nnext i\n", "for-without-to", 1),
    ("class-not-closed", "class public A\n  method public void m()\n  methodend\n", "unclosed-block", 1),
    ("stray-methodend", "class public A\nmethodend\nclassend\n", "unbalanced-block", 2),
    ("method-outside-class", "method public void m()\nmethodend\n", "misplaced-declaration", 1),
    ("field-outside-class", "field public BBjString Name$\n", "misplaced-declaration", 1),
    ("statement-in-class-body", "class public A\n  x = 1\nclassend\n", "statement-outside-method", 2),
    (
        "method-without-methodend",
        "class public A\n  method public void m()\n    x = 1\nclassend\n",
        "unclosed-block",
        2,
    ),
    ("class-in-class", "class public A\nclass public B\nclassend\n", "unclosed-block", 2),
    ("option-without-equals", "read (1, key k$) a$\n", "malformed-options", 1),
    ("options-missing-comma", 'open (1, mode="x" err=bad)"f"\nbad:\n', "malformed-options", 1),
    ("unknown-statement", 'prnt "hello"\n', "unknown-statement", 1),
    ("def-return-without-value", "def fnx(a)\n  return\nfnend\n", "def-return", 2),
    ("fnend-without-def", "fnend\n", "unbalanced-block", 1),
    ("case-outside-switch", "case 1\n", "case-outside-switch", 1),
    ("symbolic-label-with-space", "goto *  next\n", "bad-label", 1),
    ("forbidden-label", "begin: x = 1\n", "bad-label", 1),
    ("erase-bad-option", 'erase "f", mod=""\n', "invalid-option", 1),
    ("dangling-operator", "x = 1 +\n", "syntax-error", 1),
    ("double-equals", "if x == 1 then print x\n", "syntax-error", 1),
    ("missing-separator", "a = 1 b = 2\n", "unexpected-token", 1),
    ("declare-without-name", "declare BBjString\n", "syntax-error", 1),
    ("bracket-list-value", "x = [1]\n", "syntax-error", 1),
    (
        "broken-method-header",
        "class public A\n  method public void m(\n  methodend\nclassend\n",
        "syntax-error",
        2,
    ),
    ("c-style-block", "while (x < 3) {\n", "unexpected-token", 1),
    ("vb-style-end-if", "if x then\nend if\n", "syntax-error", 2),
    ("binary-junk-char", "x = 1 ` 2\n", "unexpected-token", 1),
]


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_programs_have_no_errors(name):
    assert errors(VALID[name]) == []


@pytest.mark.parametrize("name,source,code,line", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_programs_are_flagged_at_the_right_line(name, source, code, line):
    found = errors(source)
    assert found, f"{name}: not flagged"
    assert (found[0].code, found[0].line) == (code, line), found


def test_a_broken_method_header_also_flags_its_methodend_like_bbjcpl():
    found = errors("class public A\n  method public void m())\n    print 1\n  methodend\nclassend\n")
    assert [d.line for d in found] == [2, 4]
    assert found[1].code == "broken-declaration"


def test_column_points_at_the_problem():
    (d,) = errors('x = 1\nif a = 1 then print "x" "y"\n')
    assert (d.line, d.column) == (2, 25)
    assert d.source_line == 'if a = 1 then print "x" "y"'


def test_continuation_errors_map_to_the_physical_line_and_column():
    source = 'x$ = "a" +\n: "b" +\n: "c" "d"\ny = 1\n'
    (d,) = errors(source)
    assert (d.line, d.column) == (3, 7)
    assert d.source_line == ': "c" "d"'


def test_numbered_programs_report_their_own_line_numbers():
    (d,) = errors('0100 PRINT "a"\n0110 PRINT "a" "b"\n')
    assert (d.line, d.bbx_line) == (2, 110)
    (d,) = errors('x = 1\nprint "a" "b"\n')
    assert (d.line, d.bbx_line) == (2, 20)


def test_control_block_mismatches_are_warnings_not_errors():
    source = "for i = 1 to 3\n  print i\nwhile 1\nwend\nnext\nwend\n"
    assert errors(source) == []
    assert {d.code for d in warnings(source)} == {"unbalanced-block"}
    assert errors("for i = 1 to 3\nprint i\n") == []
    assert [d.code for d in warnings("for i = 1 to 3\nprint i\n")] == ["unclosed-block"]


def test_block_if_without_fi_is_accepted_silently():
    assert check_source("if a then\n  print a\nprint b\n") == []


def test_line_break_problems_are_warnings():
    for source in ("a = 1; b = 2 else c = 3\n", "for i = 1 to 2\nnext i if y then\nb = 2\nfi\n"):
        assert errors(source) == []
        assert any(d.code == "line-break" for d in warnings(source))


def test_a_lone_name_is_accepted_with_a_warning():
    assert errors("endwhile\n") == []
    assert [d.code for d in warnings("endwhile\n")] == ["lone-name"]


def test_an_empty_bodied_method_without_methodend_is_only_a_warning():
    source = "class public A\n  method public void m()\n  method public void n()\n  methodend\nclassend\n"
    assert errors(source) == []
    assert [d.line for d in warnings(source)] == [2]


def test_fragment_mode_accepts_class_members_outside_a_class():
    member = 'method public BBjString greet(BBjString name$)\n  methodret "Hi " + name$\nmethodend\n'
    assert [d.code for d in errors(member)] == ["misplaced-declaration"]
    assert check_source(member + "field public BBjNumber Count\n", fragment=True) == []
    assert [d.code for d in check_source(member + "methodend\n", fragment=True)] == ["unbalanced-block"]


def test_library_files_are_checked_as_declarations():
    lib = (
        "library\n\n/@@\nReturns the length.\n@/\nLEN(s:string, ERR?!:lineref): int\nvar ARGC: int\n"
        "label *NEXT\neventtype ON_CLOSE\n"
    )
    assert check_source(lib) == []
    assert [d.line for d in errors(lib + 'print "x"\n')] == [10]


# ---------------------------------------------------------------------------- bad input
def test_binary_input_is_one_clear_error():
    (d,) = check_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4, "a.out")
    assert (d.code, d.severity, d.file) == ("binary-file", "error", "a.out")
    (d,) = check_source("x\x00y\x01\x02\x03" * 100)
    assert d.code == "binary-file"


def test_empty_input_is_a_warning():
    for text in ("", "\n\n", "   \r\n\t\n"):
        (d,) = check_source(text)
        assert (d.code, d.severity) == ("empty-source", "warning")


def test_huge_lines_are_reported_not_parsed():
    (d,) = check_source('x = 1\nx$ = "' + "a" * 70_000 + '"\ny = 2\n')
    assert (d.code, d.line, d.severity) == ("line-too-long", 2, "error")


def test_many_continuation_lines_are_joined_in_linear_time():
    start = time.perf_counter()
    (d,) = check_source("x = 1\n" + ":+1\n" * 60_000)  # one logical line of 180,006 characters
    assert d.code == "line-too-long"
    assert time.perf_counter() - start < 5


def test_invalid_utf8_falls_back_to_latin1(tmp_path):
    path = tmp_path / "latin.bbj"
    path.write_bytes('rem Stra\xdfe\nname$ = "M\xfcller"\nprint name$\n'.encode("latin-1"))
    assert check_file(path) == []
    path.write_bytes("\ufeffx = 1\n".encode("utf-8"))
    assert check_file(path) == []


def test_byte_order_mark_is_ignored_and_no_break_space_is_flagged():
    assert check_source("\ufeffx = 1\n") == []
    (d,) = errors("x = 1\xa0+ 2\n")
    assert (d.column, d.code) == (6, "unexpected-token") and "U+00A0" in d.message
    assert errors('x$ = "a\xa0b"\n') == []


def test_deep_nesting_is_an_error_not_a_crash():
    found = errors("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")
    assert found and found[0].code == "too-deep"


def test_unreadable_paths_are_diagnostics(tmp_path):
    (d,) = check_file(tmp_path / "missing.bbj")
    assert d.code == "unreadable-file"
    (d,) = check_file(tmp_path)
    assert d.code == "unreadable-file"


def test_random_input_never_raises():
    rng = random.Random(7)
    alphabet = "abcXYZ019 \t\n\r:;,.()[]{}\"'$%!@#*+-/^=<>?\\\x00\x85\u00e9_"
    words = [
        "if ",
        "then ",
        "class ",
        "method ",
        "methodend\n",
        "for ",
        "to ",
        "rem ",
        "print ",
        "(",
        ")",
        '"',
        "'",
        "::",
        "*next",
        "fi ",
        "else ",
        "\n:",
        "def fn",
        "fnend\n",
        "[all]",
        "new ",
    ]
    for _ in range(400):
        text = "".join(
            rng.choice(words) if rng.random() < 0.3 else rng.choice(alphabet)
            for _ in range(rng.randint(0, 300))
        )
        for d in check_source(text):
            assert d.line >= 1 and d.column >= 1 and d.severity in ("error", "warning")


# ---------------------------------------------------------------------------- output formats
def test_bbjcpl_format_is_one_line_per_error_line():
    diags = check_source('x = 1\nprint "a" "b"; print (\nfor i\n', "prog.bbj")
    assert format_bbjcpl(diags, "prog.bbj") == (
        'prog.bbj: error at line 20 (2): print "a" "b"; print (\nprog.bbj: error at line 30 (3): for i\n'
    )


def test_human_format_has_a_caret_under_the_column():
    text = format_human(check_source('x = 1\nprint "a" "b"\n', "p.bbj"), "p.bbj")
    lines = text.splitlines()
    assert lines[0].startswith("p.bbj:2:11: error: ")
    assert lines[1] == '    print "a" "b"'
    assert lines[2] == "    " + " " * 10 + "^"


def test_diagnostic_to_dict_has_every_field():
    (d,) = errors('print "a" "b"\n')
    assert set(d.to_dict()) == {
        "file",
        "line",
        "column",
        "message",
        "severity",
        "code",
        "source_line",
        "bbx_line",
    }


def test_speed_is_well_above_ten_thousand_lines_per_second():
    program = "\n".join(VALID.values()) * 40
    lines = program.count("\n")
    start = time.perf_counter()
    check_source(program)
    assert lines / (time.perf_counter() - start) > 10_000
