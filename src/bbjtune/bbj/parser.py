"""Recursive-descent parser for BBj statements, one logical line at a time.

`Parser.parse_line` tokenizes a logical line (continuations already joined), skips an optional
line number and label, and parses the statements separated by `;`. Each statement starts with a
verb (a word in `verbs.py`, dispatched through `HANDLERS`) or is an assignment or a call.
Expressions live in `expressions.py`, declarations (CLASS, METHOD, DEF, ...) in
`declarations.py`, block structure in `structure.py`.

A problem raises `SyntaxProblem`; the line is then abandoned (one error per line, like bbjcpl)
and parsing continues with the next line.
"""

from __future__ import annotations

from typing import Callable

from .declarations import DeclarationStatements
from .expressions import GLUE_WORDS, Report, SyntaxProblem, describe
from .lexer import LogicalLine, tokenize
from .structure import Blocks
from .verbs import (
    BARE_VERBS,
    CHANNEL_OPTIONS,
    CHANNEL_VERBS,
    FORBIDDEN_LABELS,
    GENERIC_VERBS,
    IO_VERBS,
    KEYDEF_VERBS,
    LEADING_COMMA_VERBS,
    RECORD_VERBS,
    SPECIAL_VERBS,
    VERB_OPTIONS,
)

# Statements that are declarations rather than executable code (allowed in a CLASS body).
NON_EXECUTABLE = frozenset(
    {
        "CLASS",
        "INTERFACE",
        "CLASSEND",
        "INTERFACEEND",
        "METHOD",
        "METHODEND",
        "FIELD",
        "DECLARE",
        "USE",
    }
)
SUFFIXES = "$%!@"


class Parser(DeclarationStatements):
    """Parses the logical lines of one file in order; problems go to `report`."""

    def __init__(self, report: Report, fragment: bool = False):
        super().__init__(report)
        self.blocks = Blocks(report, fragment)
        self.line_numbers: dict[int, int] = {}  # line index -> the program's own line number
        self.line_ifs = 0  # single-line IFs open on the current line
        self.line_had_if = False
        self.line_block = None

    # ================================================================== lines
    def parse_line(self, line: LogicalLine) -> None:
        K, T = tokenize(line.text)
        self.K, self.T, self.line, self._starts = K, T, line, None
        self.line_ifs = 0
        self.line_had_if = False
        self.line_block = None
        i = 0
        if K[0] == "num" and T[0].isdigit():
            self.line_numbers[line.first] = int(T[0])
            i = 1
        if K[i] == "id" and K[i + 1] == ":" and T[i][-1] not in SUFFIXES:
            if T[i].upper() in FORBIDDEN_LABELS:
                self.problem(i, f"'{T[i]}' is not allowed as a label name", "error", "bad-label")
            i += 2
        self.i = i
        try:
            self.statements()
        except SyntaxProblem as exc:
            if "ustr" in K:  # an odd number of quotes is the likely cause of whatever failed
                self.problem(
                    K.index("ustr"),
                    "unterminated string: this line has an unbalanced '\"'",
                    "error",
                    "unterminated-string",
                )
            else:
                self.problem(exc.index, exc.message, "error", exc.code)
            if self.line_block is not None:
                self.line_block.broken = True  # bbjcpl then also flags the block's end
        except RecursionError:
            self.problem(self.i, "expression nested too deeply for the checker", "error", "too-deep")

    def finish(self) -> None:
        self.blocks.finish()

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
                        self.problem(
                            self.i,
                            f"{u} should start a new line (there is no IF before it on this line)",
                            "warning",
                            "line-break",
                        )
                    continue
                if u == "IF":
                    if not self.line_had_if:
                        self.problem(
                            self.i, "IF should start a new line or follow ';'", "warning", "line-break"
                        )
                    continue
            self.fail(
                f"unexpected {describe(k, self.T[self.i])} after the statement (missing ';' or operator?)",
                "unexpected-token",
            )

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
                        self.blocks.executable(self.at(i), u)
                    return handler(self, u)
            if self.blocks.declaration is not None:
                self.blocks.executable(self.at(i), "a statement")
            return self.stmt_assign_or_call()
        if k == "?":
            if self.blocks.declaration is not None:
                self.blocks.executable(self.at(i), "PRINT")
            return self.stmt_generic("?")
        if k == "#" or k == "path":
            if self.blocks.declaration is not None:
                self.blocks.executable(self.at(i), "a statement")
            return self.stmt_assign_or_call()
        if k == "ustr":
            self.fail('unterminated string (missing closing ")', "unterminated-string")
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
            self.problem(
                start,
                f"'{self.T[start]}' alone does nothing: is it a misspelled verb?",
                "warning",
                "lone-name",
            )
        return False

    def assignment_rest(self, shape: str, target: int) -> None:
        if shape == "call":
            self.fail(
                "a function or method call cannot be assigned to: the left side of '=' must be a variable",
                "call-assignment",
                at=target,
            )
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
                    self.problem(
                        i, f"unknown option {T[i]}= in the channel list", "warning", "unknown-option"
                    )
                self.i += 2
                self.expr()
            else:
                self.fail(
                    "malformed option list: after the channel only NAME=value options may "
                    f"follow, found {describe(K[i], T[i])}",
                    "malformed-options",
                )
        if K[self.i] != ")":
            self.fail(
                f"malformed option list: expected ',' or ')', found {describe(K[self.i], T[self.i])}",
                "malformed-options",
            )
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
                        self.fail(f"{verb} accepts the options {names}; found {T[i]}=", "invalid-option")
                    self.i += 2
                    self.expr()
                    seen_option = True
                else:
                    if seen_option and allowed is not None:
                        self.fail(
                            f"{verb}: options (NAME=value) must come after all other arguments",
                            "invalid-option",
                        )
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
        start = self.at()
        self.i += 1
        self.line_had_if = True
        if self.at_end():
            self.unexpected("a condition after IF")
        self.expr()
        if self.word() == "THEN":
            self.i += 1
        if self.K[self.i] == "eol":
            self.blocks.open_control("IF", start)
            return False
        self.line_ifs += 1
        return True

    def stmt_then_misplaced(self, u: str) -> bool:
        self.fail("THEN without IF", "unknown-statement")

    def stmt_else(self, u: str) -> bool:
        start = self.at()
        self.i += 1
        if self.line_ifs == 0:
            self.blocks.else_(start)
        return True

    def stmt_endif(self, u: str) -> bool:
        start = self.at()
        self.i += 1
        if self.line_ifs > 0:
            self.line_ifs -= 1
        else:
            self.blocks.close_control("IF", start, u)
        return False

    def stmt_for(self, u: str) -> bool:
        start = self.at()
        self.blocks.open_control("FOR", start)
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
        start = self.at()
        self.i += 1
        if self.K[self.i] == "id" and not self.at_end() and self.word() != "IF":
            self.operand()
        self.blocks.close_control("FOR", start, "NEXT")
        return False

    def stmt_while(self, u: str) -> bool:
        start = self.at()
        self.i += 1
        self.blocks.open_control("WHILE", start)
        if self.at_end():
            self.unexpected("a condition after WHILE")
        self.expr()
        return False

    def stmt_wend(self, u: str) -> bool:
        self.blocks.close_control("WHILE", self.at(), "WEND")
        self.i += 1
        return False

    def stmt_repeat(self, u: str) -> bool:
        self.blocks.open_control("REPEAT", self.at())
        self.i += 1
        return False

    def stmt_until(self, u: str) -> bool:
        self.blocks.close_control("REPEAT", self.at(), "UNTIL")
        self.i += 1
        if self.at_end():
            self.unexpected("a condition after UNTIL")
        self.expr()
        return False

    def stmt_switch(self, u: str) -> bool:
        self.blocks.open_control("SWITCH", self.at())
        self.i += 1
        if self.at_end():
            self.unexpected("a value after SWITCH")
        self.expr()
        return False

    def stmt_case(self, u: str) -> bool:
        start = self.at()
        self.i += 1
        if self.word() == "DEFAULT":
            self.i += 1
            self.blocks.case(start, "CASE DEFAULT")
            return False
        self.blocks.case(start, "CASE")
        if self.at_end():
            self.unexpected("a value or DEFAULT after CASE")
        self.expr()
        while self.K[self.i] == ",":
            self.i += 1
            self.expr()
        return False

    def stmt_swend(self, u: str) -> bool:
        self.blocks.close_control("SWITCH", self.at(), "SWEND")
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

    def stmt_return(self, u: str) -> bool:
        self.i += 1
        if self.at_end():
            if self.blocks.in_def():
                self.fail("RETURN inside a DEF function must return a value", "def-return", at=self.i - 1)
            return False
        self.expr()
        return False

    def stmt_methodret(self, u: str) -> bool:
        start = self.i
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
        self.variable_list("EXCEPT")
        return False

    def stmt_clear(self, u: str) -> bool:
        """`CLEAR`, `CLEAR EXCEPT varlist` (as BEGIN) or BBj's `CLEAR varlist` (`clear x!, a$[]`)."""
        if self.word(self.i + 1) == "EXCEPT":
            return self.stmt_begin(u)
        self.i += 1
        if not self.at_end():
            self.variable_list("CLEAR")
        return False

    def variable_list(self, verb: str) -> None:
        """`a, b$, c![], d$[ALL]`: variables only (no calls, no literals)."""
        while True:
            target = self.i
            shape = self.operand()
            if shape not in ("name", "var"):
                self.fail(
                    f"{verb} takes variables: '{self.T[target]}' must be a variable or an array "
                    "with [] or [ALL]",
                    "malformed-except",
                    at=target,
                )
            if self.K[self.i] != ",":
                return
            self.i += 1

    # ------------------------------------------------------------------ verbs with own syntax
    def stmt_open(self, u: str) -> bool:
        """`OPEN (chan{,MODE=..}{,TIM=..}{,ERR=..})fileid`: the channel list and the file id are required."""
        self.i += 1
        if self.K[self.i] != "(":
            self.unexpected("'(' and a channel number after OPEN (OPEN (chan)\"file\")", "malformed-open")
        self.channel_list()
        if self.at_end():
            self.fail(
                'OPEN needs the file to open after the channel list: OPEN (chan)"file"', "malformed-open"
            )
        self.items(u)
        return False

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


# Statement word -> Parser method that parses the statement starting with it.
HANDLERS: dict[str, Callable[[Parser, str], bool]] = {}
HANDLERS.update((word, Parser.stmt_generic) for word in GENERIC_VERBS)
HANDLERS.update((word, Parser.stmt_bare) for word in BARE_VERBS)
HANDLERS.update((word, getattr(Parser, "stmt_" + name)) for word, name in SPECIAL_VERBS.items())
