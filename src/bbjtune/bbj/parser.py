"""Recursive-descent parser for BBj statements, one logical line at a time.

The parser walks the token lists of `lexer.tokenize` with an index; it builds no tree, because
the checker only needs to know whether each statement is well formed and where the first
problem is. Block structure (CLASS/METHOD/IF/FOR/...) is handed to `structure.Blocks`.

Expressions are checked for shape, not meaning: an operand, then any number of
`<binary operator> operand` pairs, where an operand is a literal, a mnemonic, a name with its
`.member`, `(args)` and `[index]` suffixes, `new Type(...)`, `#field`, `*NEXT` and the like. BBj
precedence does not change which token sequences are valid, so it is not modelled. `:` is the
string-mask operator (`STR(x:"##0")`) and introduces templates and verify lists.

A problem raises `SyntaxProblem`; the line is then abandoned (one error per line, like bbjcpl)
and parsing continues with the next line.
"""

from __future__ import annotations

from typing import Callable

from .lexer import LogicalLine, tokenize
from .structure import Blocks
from .verbs import (
    BARE_VERBS, CHANNEL_OPTIONS, CHANNEL_VERBS, FORBIDDEN_LABELS, GENERIC_VERBS, IO_VERBS,
    KEYDEF_VERBS, LEADING_COMMA_VERBS, RECORD_VERBS, SPECIAL_VERBS, VERB_OPTIONS,
)

BINARY_OPS = frozenset({"+", "-", "*", "/", "^", "=", "<", ">", "<=", ">=", "<>", "=<", "=>", "><"})
WORD_OPS = frozenset({"AND", "OR"})
GLUE_WORDS = frozenset({"ELSE", "FI", "ENDIF"})
MODIFIERS = frozenset({"PUBLIC", "PRIVATE", "PROTECTED", "STATIC"})
# Statements that are declarations rather than executable code (allowed in a CLASS body).
NON_EXECUTABLE = frozenset({
    "CLASS", "INTERFACE", "CLASSEND", "INTERFACEEND", "METHOD", "METHODEND", "FIELD", "DECLARE", "USE",
})
SUFFIXES = "$%!@"

Report = Callable[[int, int, str, str, str], None]


class SyntaxProblem(Exception):
    def __init__(self, offset: int, message: str, code: str = "syntax-error"):
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.code = code


def describe(kind: str, text: str) -> str:
    """How a token is named in a message."""
    if kind == "eol":
        return "end of line"
    if kind in ("id", "num"):
        return f"'{text}'"
    if kind == "str":
        return "a string"
    if kind == "hex":
        return "a hex string"
    if kind == "mnem":
        return f"mnemonic {text}"
    if kind == "path":
        return f"'{text}'"
    return f"'{text}'"


class Parser:
    """Parses the logical lines of one file in order; problems go to `report`."""

    def __init__(self, report: Report):
        self.report = report
        self.blocks = Blocks(report)
        self.line_numbers: dict[int, int] = {}
        self.K: list[str] = []
        self.T: list[str] = []
        self.P: list[int] = []
        self.i = 0
        self.line: LogicalLine | None = None
        self.line_ifs = 0
        self.line_had_if = False
        self.keydefs = False
        self.line_block = None  # the declaration block opened on the current line, if any

    # ================================================================== lines
    def parse_line(self, line: LogicalLine) -> None:
        K, T, P = tokenize(line.text)
        self.K, self.T, self.P, self.line = K, T, P, line
        self.line_ifs = 0
        self.line_had_if = False
        self.line_block = None
        i = 0
        if K[0] == "num" and T[0].isdigit():
            self.line_numbers[line.first] = int(T[0])
            i = 1
        if K[i] == "id" and K[i + 1] == ":" and T[i][-1] not in SUFFIXES:
            if T[i].upper() in FORBIDDEN_LABELS:
                self.problem(P[i], f"'{T[i]}' is not allowed as a label name", "error", "bad-label")
            i += 2
        self.i = i
        try:
            self.statements()
        except SyntaxProblem as exc:
            if "ustr" in K:  # an odd number of quotes is the likely cause of whatever failed
                where = P[K.index("ustr")]
                self.problem(where, 'unterminated string: this line has an unbalanced \'"\'',
                             "error", "unterminated-string")
            else:
                self.problem(exc.offset, exc.message, "error", exc.code)
            if self.line_block is not None:
                self.line_block.broken = True  # bbjcpl then also flags the block's end
        except RecursionError:
            self.problem(P[self.i] if self.i < len(P) else 0,
                         "expression nested too deeply for the checker", "error", "too-deep")

    def finish(self, last_line: int) -> None:
        self.blocks.finish(last_line)

    def loc(self, offset: int) -> tuple[int, int]:
        return self.line.locate(offset)

    def problem(self, offset: int, message: str, severity: str, code: str) -> None:
        line, col = self.line.locate(offset)
        self.report(line, col, message, severity, code)

    def fail(self, message: str, code: str = "syntax-error", at: int | None = None):
        i = self.i if at is None else at
        raise SyntaxProblem(self.P[i], message, code)

    def unexpected(self, what: str, code: str = "syntax-error"):
        i = self.i
        self.fail(f"expected {what}, found {describe(self.K[i], self.T[i])}", code)

    def word(self, i: int | None = None) -> str:
        """Upper-case text of the identifier at token i ('' if it is not an identifier)."""
        i = self.i if i is None else i
        return self.T[i].upper() if self.K[i] == "id" else ""

    def at_end(self) -> bool:
        k = self.K[self.i]
        return k == "eol" or k == ";" or (k == "id" and self.T[self.i].upper() in GLUE_WORDS)

    # ================================================================== statements
    def statements(self) -> None:
        K = self.K
        while True:
            k = K[self.i]
            if k == "eol":
                return
            if k == ";":
                self.i += 1
                continue
            glued = self.statement()
            k = K[self.i]
            if k == ";":
                self.i += 1
                continue
            if k == "eol" or glued:
                continue
            if k == "id":
                u = self.T[self.i].upper()
                if u in GLUE_WORDS:
                    if self.line_ifs == 0:
                        self.problem(self.P[self.i], f"{u} should start a new line (there is no IF "
                                     "before it on this line)", "warning", "line-break")
                    continue
                if u == "IF":
                    if not self.line_had_if:
                        self.problem(self.P[self.i], "IF should start a new line or follow ';'",
                                     "warning", "line-break")
                    continue
            self.fail(f"unexpected {describe(k, self.T[self.i])} after the statement "
                      "(missing ';' or operator?)", "unexpected-token")

    def statement(self) -> bool:
        """Parse one statement; True when the next statement may follow without ';'."""
        K, T = self.K, self.T
        i = self.i
        k = K[i]
        if k == "id":
            nk = K[i + 1]
            if nk != "=" and nk != "." and nk != "[":
                u = T[i].upper()
                handler = HANDLERS.get(u)
                if handler is not None:
                    if self.blocks.declaration is not None and u not in NON_EXECUTABLE:
                        line, col = self.loc(self.P[i])
                        self.blocks.executable(line, col, u)
                    return handler(self, u)
            if self.blocks.declaration is not None:
                line, col = self.loc(self.P[i])
                self.blocks.executable(line, col, "a statement")
            return self.stmt_assign_or_call()
        if k == "?":
            if self.blocks.declaration is not None:
                line, col = self.loc(self.P[i])
                self.blocks.executable(line, col, "PRINT")
            return self.stmt_generic("?")
        if k == "#" or k == "path":
            if self.blocks.declaration is not None:
                line, col = self.loc(self.P[i])
                self.blocks.executable(line, col, "a statement")
            return self.stmt_assign_or_call()
        if k == "ustr":
            self.fail("unterminated string (missing closing \")", "unterminated-string")
        if k == "num":
            self.fail(f"a statement cannot start with the number {T[i]}", "unknown-statement")
        self.fail(f"a statement cannot start with {describe(k, T[i])}", "unknown-statement")

    # ------------------------------------------------------------------ assignment / call
    def stmt_assign_or_call(self) -> bool:
        start = self.i
        shape = self.operand()
        K = self.K
        if K[self.i] == "=":
            self.assignment_rest(shape, start)
            while K[self.i] == ",":
                self.i += 1
                target = self.i
                shape = self.operand()
                if K[self.i] != "=":
                    self.unexpected("'=' in the list of assignments")
                self.assignment_rest(shape, target)
            return False
        if shape == "name":
            if not self.at_end():
                self.fail(f"unknown statement '{self.T[start]}'", "unknown-statement", at=start)
            # The language server accepts a lone name as a statement; it does nothing and is
            # usually a misspelled verb (ENDWHILE, LOOP).
            self.problem(self.P[start], f"'{self.T[start]}' alone does nothing: is it a misspelled "
                         "verb?", "warning", "lone-name")
        return False

    def assignment_rest(self, shape: str, target: int) -> None:
        if shape == "call":
            self.fail("a function or method call cannot be assigned to: the left side of '=' "
                      "must be a variable", "call-assignment", at=target)
        if shape not in ("name", "var", "substr"):
            self.fail("the left side of '=' must be a variable", "invalid-assignment", at=target)
        self.i += 1
        self.expr()

    def stmt_let(self, u: str) -> bool:
        self.i += 1
        while True:
            target = self.i
            shape = self.operand()
            if self.K[self.i] != "=":
                self.unexpected("'=' in LET")
            self.assignment_rest(shape, target)
            if self.K[self.i] != ",":
                return False
            self.i += 1

    # ------------------------------------------------------------------ generic verbs
    def stmt_bare(self, u: str) -> bool:
        self.i += 1
        return False

    def stmt_generic(self, verb: str) -> bool:
        K = self.K
        self.i += 1
        if verb in RECORD_VERBS and K[self.i] == "id" and self.T[self.i].upper() == "RECORD":
            self.i += 1
        if K[self.i] == "(" and verb in CHANNEL_VERBS:
            self.channel_list()
            if K[self.i] == "," and verb in IO_VERBS:
                self.i += 1
        self.items(verb)
        return False

    def channel_list(self) -> None:
        """`(chan{,NAME=value}...)` after an I/O verb."""
        K, T = self.K, self.T
        self.i += 1
        if K[self.i] != "," and K[self.i] != ")":
            self.expr()
        while K[self.i] == ",":
            self.i += 1
            i = self.i
            if K[i] == "id" and K[i + 1] == "=":
                name = T[i].upper()
                if name not in CHANNEL_OPTIONS:
                    self.problem(self.P[i], f"unknown option {T[i]}= in the channel list", "warning",
                                 "unknown-option")
                self.i += 2
                self.expr()
            else:
                self.fail("malformed option list: after the channel only NAME=value options may "
                          f"follow, found {describe(K[i], T[i])}", "malformed-options")
        if K[self.i] != ")":
            self.fail(f"malformed option list: expected ',' or ')', found "
                      f"{describe(K[self.i], T[self.i])}", "malformed-options")
        self.i += 1

    def items(self, verb: str) -> None:
        """Comma-separated expressions and NAME=value options; a trailing comma is allowed."""
        K, T = self.K, self.T
        if self.at_end():
            return
        if K[self.i] == "," and verb in LEADING_COMMA_VERBS:
            self.i += 1
        star = verb in IO_VERBS
        allowed = VERB_OPTIONS.get(verb)
        self.keydefs = verb in KEYDEF_VERBS
        seen_option = False
        try:
            while True:
                i = self.i
                k = K[i]
                if k == "*" and star and K[i + 1] in (",", ";", "eol"):
                    self.i += 1
                elif allowed is not None and k == "id" and K[i + 1] == "=":
                    if T[i].upper() not in allowed:
                        names = ", ".join(sorted(allowed))
                        self.fail(f"{verb} accepts the options {names}; found {T[i]}=",
                                  "invalid-option")
                    self.i += 2
                    self.expr()
                    seen_option = True
                else:
                    if seen_option and allowed is not None:
                        self.fail(f"{verb}: options (NAME=value) must come after all other "
                                  "arguments", "invalid-option")
                    self.expr()
                if K[self.i] != ",":
                    return
                self.i += 1
                if self.at_end():
                    return
        finally:
            self.keydefs = False

    def stmt_paren_args(self, u: str) -> bool:
        self.i += 1
        if self.K[self.i] != "(":
            self.unexpected(f"'(' after {u}")
        self.args()
        return False

    # ------------------------------------------------------------------ control flow
    def stmt_if(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        self.line_had_if = True
        if self.at_end():
            self.unexpected("a condition after IF")
        self.expr()
        if self.word() == "THEN":
            self.i += 1
        if self.K[self.i] == "eol":
            self.blocks.open_control("IF", *self.loc(start))
            return False
        self.line_ifs += 1
        return True

    def stmt_then_misplaced(self, u: str) -> bool:
        self.fail("THEN without IF", "unknown-statement")

    def stmt_else(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if self.line_ifs == 0:
            self.blocks.else_(*self.loc(start))
        return True

    def stmt_endif(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if self.line_ifs > 0:
            self.line_ifs -= 1
        else:
            self.blocks.close_control("IF", *self.loc(start), u)
        return False

    def stmt_for(self, u: str) -> bool:
        start = self.P[self.i]
        self.blocks.open_control("FOR", *self.loc(start))
        self.i += 1
        target = self.i
        shape = self.operand()
        if shape not in ("name", "var"):
            self.fail("FOR needs a loop variable", "malformed-for", at=target)
        if self.K[self.i] != "=":
            self.unexpected("'=' after the FOR variable", "malformed-for")
        self.i += 1
        self.expr()
        if self.word() != "TO":
            self.unexpected("TO in FOR (FOR var = start TO end [STEP n])", "for-without-to")
        self.i += 1
        self.expr()
        if self.word() == "STEP":
            self.i += 1
            self.expr()
        return False

    def stmt_next(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if self.K[self.i] == "id" and not self.at_end() and self.word() != "IF":
            self.operand()
        self.blocks.close_control("FOR", *self.loc(start), "NEXT")
        return False

    def stmt_while(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        self.blocks.open_control("WHILE", *self.loc(start))
        if self.at_end():
            self.unexpected("a condition after WHILE")
        self.expr()
        return False

    def stmt_wend(self, u: str) -> bool:
        self.blocks.close_control("WHILE", *self.loc(self.P[self.i]), "WEND")
        self.i += 1
        return False

    def stmt_repeat(self, u: str) -> bool:
        self.blocks.open_control("REPEAT", *self.loc(self.P[self.i]))
        self.i += 1
        return False

    def stmt_until(self, u: str) -> bool:
        self.blocks.close_control("REPEAT", *self.loc(self.P[self.i]), "UNTIL")
        self.i += 1
        if self.at_end():
            self.unexpected("a condition after UNTIL")
        self.expr()
        return False

    def stmt_switch(self, u: str) -> bool:
        self.blocks.open_control("SWITCH", *self.loc(self.P[self.i]))
        self.i += 1
        if self.at_end():
            self.unexpected("a value after SWITCH")
        self.expr()
        return False

    def stmt_case(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if self.word() == "DEFAULT":
            self.i += 1
            self.blocks.case(*self.loc(start), "CASE DEFAULT")
            return False
        self.blocks.case(*self.loc(start), "CASE")
        if self.at_end():
            self.unexpected("a value or DEFAULT after CASE")
        self.expr()
        while self.K[self.i] == ",":
            self.i += 1
            self.expr()
        return False

    def stmt_swend(self, u: str) -> bool:
        self.blocks.close_control("SWITCH", *self.loc(self.P[self.i]), "SWEND")
        self.i += 1
        return False

    def stmt_goto(self, u: str) -> bool:
        self.i += 1
        self.label_ref(u)
        return False

    def stmt_seterr(self, u: str) -> bool:
        self.i += 1
        self.label_ref(u)
        return False

    def stmt_on(self, u: str) -> bool:
        self.i += 1
        self.expr()
        kind = self.word()
        if kind not in ("GOTO", "GOSUB"):
            self.unexpected("GOTO or GOSUB after ON <value>")
        self.i += 1
        self.label_ref(kind)
        while self.K[self.i] == ",":
            self.i += 1
            self.label_ref(kind)
        return False

    def label_ref(self, verb: str) -> None:
        K = self.K
        k = K[self.i]
        if k == "id" or k == "num":
            self.i += 1
        elif k == "*":
            self.symbolic_label()
        else:
            self.unexpected(f"a label after {verb}")

    def symbolic_label(self) -> None:
        i = self.i
        if self.K[i + 1] == "id":
            if self.P[i + 1] != self.P[i] + 1:
                self.fail("a symbolic label reference may not contain whitespace (write *NEXT)",
                          "bad-label")
            self.i += 2
            return
        self.fail("expected a symbolic label such as *NEXT after '*'", "bad-label")

    def stmt_return(self, u: str) -> bool:
        self.i += 1
        if self.at_end():
            if self.blocks.in_def():
                self.fail("RETURN inside a DEF function must return a value", "def-return", at=self.i - 1)
            return False
        self.expr()
        return False

    def stmt_methodret(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if not self.blocks.in_method():
            self.problem(start, "METHODRET outside a METHOD", "warning", "misplaced-statement")
        if not self.at_end():
            self.expr()
        return False

    def stmt_begin(self, u: str) -> bool:
        self.i += 1
        if self.word() != "EXCEPT":
            return False
        self.i += 1
        while True:
            target = self.i
            shape = self.operand()
            if shape not in ("name", "var"):
                self.fail(f"'{self.T[target]}' must be a variable or an array with [ALL]",
                          "malformed-except", at=target)
            if self.K[self.i] != ",":
                return False
            self.i += 1

    # ------------------------------------------------------------------ functions and classes
    def stmt_def(self, u: str) -> bool:
        start = self.P[self.i]
        self.i += 1
        if self.K[self.i] != "id":
            self.unexpected("a function name after DEF")
        self.i += 1
        if self.K[self.i] != "(":
            self.unexpected("'(' after the DEF function name")
        self.i += 1
        if self.K[self.i] != ")":
            while True:
                if self.K[self.i] != "id":
                    self.unexpected("a parameter name")
                self.i += 1
                if self.K[self.i] == ")":
                    break
                if self.K[self.i] != ",":
                    self.unexpected("',' or ')' in the DEF parameters")
                self.i += 1
        self.i += 1
        if self.K[self.i] == "=":
            self.i += 1
            self.expr()
            return False
        if self.K[self.i] == "eol":
            self.blocks.open_def(*self.loc(start))
            return False
        self.unexpected("'=' and an expression, or the end of the line for a multi-line DEF")

    def stmt_fnend(self, u: str) -> bool:
        self.blocks.close_declaration("DEF", *self.loc(self.P[self.i]))
        self.i += 1
        return False

    def stmt_class(self, kind: str) -> bool:
        self.line_block = self.blocks.open_class(kind, *self.loc(self.P[self.i]))
        self.i += 1
        while self.word() in MODIFIERS:
            self.i += 1
        if self.K[self.i] != "id":
            self.unexpected(f"a name after {kind}")
        self.i += 1
        while True:
            w = self.word()
            if w not in ("EXTENDS", "IMPLEMENTS"):
                return False
            self.i += 1
            self.type_ref()
            while self.K[self.i] == ",":
                self.i += 1
                self.type_ref()

    def stmt_classend(self, u: str) -> bool:
        kind = "CLASS" if u == "CLASSEND" else "INTERFACE"
        self.blocks.close_declaration(kind, *self.loc(self.P[self.i]))
        self.i += 1
        return False

    def stmt_method(self, u: str) -> bool:
        self.line_block = self.blocks.open_method(*self.loc(self.P[self.i]))
        self.i += 1
        self.method_header()
        return False

    def method_header(self) -> None:
        K = self.K
        while self.word() in MODIFIERS:
            self.i += 1
        first = self.i
        self.type_ref()
        if not (K[self.i] == "(" and self.i == first + 1 and K[first] == "id"):
            if K[self.i] != "id":
                self.unexpected("the method name")
            self.i += 1  # the name after the return type
        if K[self.i] != "(":
            self.unexpected("'(' after the method name")
        self.i += 1
        if K[self.i] != ")":
            while True:
                if K[self.i] != "id" and K[self.i] != "path":
                    self.unexpected("a parameter (Type name!)")
                self.type_ref()
                if K[self.i] != "id":
                    self.unexpected("a parameter name after its type")
                self.i += 1
                if K[self.i] == ")":
                    break
                if K[self.i] != ",":
                    self.unexpected("',' or ')' in the method parameters")
                self.i += 1
        self.i += 1

    def stmt_methodend(self, u: str) -> bool:
        self.blocks.close_declaration("METHOD", *self.loc(self.P[self.i]))
        self.i += 1
        return False

    def stmt_field(self, u: str) -> bool:
        self.blocks.field(*self.loc(self.P[self.i]))
        self.i += 1
        while self.word() in MODIFIERS:
            self.i += 1
        self.type_ref()
        if self.K[self.i] != "id":
            self.unexpected("the field name after its type")
        self.i += 1
        if self.K[self.i] == "=":
            self.i += 1
            self.expr()
        return False

    def stmt_declare(self, u: str) -> bool:
        self.i += 1
        if self.word() == "AUTO":
            self.i += 1
        self.type_ref()
        if self.K[self.i] != "id":
            self.unexpected("the variable name after the type in DECLARE")
        self.i += 1
        return False

    def stmt_use(self, u: str) -> bool:
        K = self.K
        self.i += 1
        if K[self.i] == "path":
            self.i += 1
            if K[self.i] != "id":
                self.unexpected("the class name after the file in USE ::file::Class")
            self.i += 1
            return False
        if K[self.i] != "id":
            self.unexpected("a class name after USE (java.util.HashMap or ::file.bbj::Class)")
        self.i += 1
        while K[self.i] == "." and K[self.i + 1] == "id":
            self.i += 2
        return False

    def type_ref(self) -> None:
        """`Name`, `java.util.List`, `::file.bbj::Class`, `String@`, each optionally with `[]`s."""
        K = self.K
        if K[self.i] == "path":
            self.i += 1
        if K[self.i] != "id":
            self.unexpected("a type name")
        self.i += 1
        while K[self.i] == "." and K[self.i + 1] == "id":
            self.i += 2
        while K[self.i] == "[" and K[self.i + 1] == "]":
            self.i += 2

    # ------------------------------------------------------------------ verbs with own syntax
    def stmt_rename(self, u: str) -> bool:
        self.i += 1
        self.expr()
        if self.word() == "TO" or self.K[self.i] == ",":
            self.i += 1
        else:
            self.unexpected("TO or ',' between the old and new name in RENAME")
        self.items("RENAME")
        return False

    def stmt_select(self, u: str) -> bool:
        self.i += 1
        if self.K[self.i] == "(":
            self.channel_list()
        self.expr()
        while self.K[self.i] == ",":
            self.i += 1
            self.expr()
        if self.word() != "FROM":
            self.unexpected("FROM in SELECT")
        self.i += 1
        self.expr()
        while True:
            w = self.word()
            if w not in ("WHERE", "SORTBY", "LIMIT"):
                return False
            self.i += 1
            self.expr()
            while self.K[self.i] == ",":
                self.i += 1
                self.expr()

    def stmt_table(self, u: str) -> bool:
        # TABLE takes raw hex byte pairs (TABLE FF 00 01 ...): nothing to check.
        self.i = len(self.K) - 1
        return False

    # ================================================================== expressions
    def expr(self) -> str:
        """Parse an expression; returns the shape of a lone operand or 'expr'."""
        shape = self.operand()
        K, T = self.K, self.T
        while True:
            k = K[self.i]
            if k in BINARY_OPS:
                self.i += 1
                self.operand()
                shape = "expr"
            elif k == "id" and T[self.i].upper() in WORD_OPS:
                self.i += 1
                self.operand()
                shape = "expr"
            elif k == ":":
                self.i += 1
                if K[self.i] == "(":
                    self.paren_list()
                else:
                    self.operand()
                shape = "expr"
            else:
                return shape

    def operand(self) -> str:
        """One operand with its suffixes. Shapes: name, var, substr, call, lit."""
        K = self.K
        i = self.i
        k = K[i]
        if k == "id":
            word = self.T[i]
            nk = K[i + 1]
            if nk == "id" or nk == "path":
                if word.upper() == "NEW":
                    return self.constructor()
            elif nk == "(" and word.upper() == "CAST":
                return self.cast()
            self.i = i + 1
            if nk == "." or nk == "(" or nk == "[":
                return self.suffixes(word[-1] == "$")
            return "name"
        if k == "num" or k == "str" or k == "hex":
            self.i = i + 1
            if K[i + 1] == "(" and k != "num":
                self.suffixes(True)
            return "lit"
        if k == "mnem":
            self.i = i + 1
            if K[i + 1] == "(":
                self.args()
            return "lit"
        if k == "-" or k == "+" or k == "!":
            self.i = i + 1
            self.operand()
            return "lit"
        if k == "(":
            self.i = i + 1
            self.expr()
            if K[self.i] != ")":
                self.unexpected("')'", "unbalanced-paren")
            self.i += 1
            if K[self.i] in ("(", ".", "["):
                self.suffixes(False)
            return "lit"
        if k == "#":
            if K[i + 1] != "id":
                self.i = i + 1
                self.unexpected("a field or method name after '#'")
            self.i = i + 2
            if K[i + 2] in ("(", ".", "["):
                shape = self.suffixes(self.T[i + 1][-1] == "$")
                return shape
            return "var"
        if k == "@":
            self.i = i + 1
            if K[i + 1] != "(":
                self.unexpected("'(' after '@'")
            self.args()
            return "lit"
        if k == "*":
            self.symbolic_label()
            return "lit"
        if k == "path":
            self.i = i + 1
            if K[i + 1] != "id":
                self.unexpected("a class name after the file path")
            self.i = i + 2
            if K[i + 2] in ("(", ".", "["):
                self.suffixes(False)
            return "lit"
        if k == "[" and self.keydefs:
            self.i = i + 1
            self.expr()
            if K[self.i] != "]":
                self.unexpected("']' closing the key definition", "unbalanced-paren")
            self.i += 1
            return "lit"
        if k == "ustr":
            self.fail("unterminated string (missing closing \")", "unterminated-string")
        if k == "umnem":
            self.fail("unterminated mnemonic (missing closing ')", "unterminated-string")
        if k == ")" or k == "]":
            self.fail(f"unexpected '{k}' (unbalanced parentheses or a missing value)", "unbalanced-paren")
        self.unexpected("a value")

    def suffixes(self, is_str: bool) -> str:
        """`.member`, `(args)` and `[index]` after an operand."""
        K = self.K
        shape = "var"
        while True:
            k = K[self.i]
            if k == ".":
                self.i += 1
                if K[self.i] != "id":
                    self.unexpected("a member name after '.'")
                is_str = self.T[self.i][-1] == "$"
                self.i += 1
                shape = "var"
            elif k == "(":
                self.args()
                if is_str:
                    shape = "substr"
                else:
                    shape = "call"
            elif k == "[":
                self.index()
                shape = "var"
            else:
                return shape

    def args(self) -> None:
        """`(expr, expr, ...)`; the current token is '('."""
        K = self.K
        self.i += 1
        if K[self.i] == ")":
            self.i += 1
            return
        while True:
            self.expr()
            k = K[self.i]
            if k == ",":
                self.i += 1
                continue
            if k == ")":
                self.i += 1
                return
            if k == "eol":
                self.fail("missing ')': the parenthesis is not closed on this line", "unbalanced-paren")
            self.unexpected("',' or ')'")

    paren_list = args

    def index(self) -> None:
        """`[expr, ...]` or `[ALL]`; the current token is '['."""
        K = self.K
        self.i += 1
        if K[self.i] == "id" and K[self.i + 1] == "]" and self.T[self.i].upper() == "ALL":
            self.i += 2
            return
        while True:
            self.expr()
            k = K[self.i]
            if k == ",":
                self.i += 1
                continue
            if k == "]":
                self.i += 1
                return
            if k == "eol":
                self.fail("missing ']': the bracket is not closed on this line", "unbalanced-paren")
            self.unexpected("',' or ']'")

    def constructor(self) -> str:
        """`new Type(args)` or `new Type[size]`, then any suffixes."""
        self.i += 1
        K = self.K
        if K[self.i] == "path":
            self.i += 1
        if K[self.i] != "id":
            self.unexpected("a class name after new")
        self.i += 1
        while K[self.i] == "." and K[self.i + 1] == "id":
            self.i += 2
        if K[self.i] == "(":
            self.args()
        elif K[self.i] == "[":
            self.index()
        else:
            self.unexpected("'(' after the class name in new")
        if K[self.i] in ("(", ".", "["):
            self.suffixes(False)
        return "lit"

    def cast(self) -> str:
        """`CAST(Type[], expr{, ERR=lineref})`."""
        self.i += 2
        self.type_ref()
        if self.K[self.i] != ",":
            self.unexpected("',' after the type in CAST")
        self.i += 1
        self.expr()
        while self.K[self.i] == ",":  # CAST(Type, x!, ERR=*NEXT)
            self.i += 1
            self.expr()
        if self.K[self.i] != ")":
            self.unexpected("')' closing CAST", "unbalanced-paren")
        self.i += 1
        if self.K[self.i] in ("(", ".", "["):
            self.suffixes(False)
        return "lit"


# Statement word -> Parser method that parses the statement starting with it.
HANDLERS: dict[str, Callable[[Parser, str], bool]] = {}
HANDLERS.update((word, Parser.stmt_generic) for word in GENERIC_VERBS)
HANDLERS.update((word, Parser.stmt_bare) for word in BARE_VERBS)
HANDLERS.update((word, getattr(Parser, "stmt_" + name)) for word, name in SPECIAL_VERBS.items())
