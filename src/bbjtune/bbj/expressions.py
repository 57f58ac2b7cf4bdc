"""BBj expressions, label references and type names, read from the tokens of one line.

`ExpressionParser` holds the cursor over one logical line's tokens (parallel lists of kinds and
texts from `lexer.tokenize`; offsets are computed only when a diagnostic needs them) and the
grammar below the statement level. It builds no tree: the checker only needs to know whether
the text is well formed and where the first problem is.

Expressions are checked for shape, not meaning: an operand, then any number of
`<binary operator> operand` pairs, where an operand is a literal, a mnemonic, a name with its
`.member`, `(args)` and `[index]` suffixes, `new Type(...)`, `#field`, `*NEXT` and the like. BBj
precedence does not change which token sequences are valid, so it is not modelled. `:` is the
string-mask operator (`STR(x:"##0")`) and introduces templates and verify lists.
"""

from __future__ import annotations

from typing import Callable

from .lexer import LogicalLine, token_starts
from .structure import Where

BINARY_OPS = frozenset({"+", "-", "*", "/", "^", "=", "<", ">", "<=", ">=", "<>", "=<", "=>", "><"})
WORD_OPS = frozenset({"AND", "OR"})
GLUE_WORDS = frozenset({"ELSE", "FI", "ENDIF"})  # may follow a statement without ';'

Report = Callable[[int, int, str, str, str], None]  # (line index, column, message, severity, code)


class SyntaxProblem(Exception):
    """The first problem on a line; the parser reports it and moves to the next line."""

    def __init__(self, index: int, message: str, code: str = "syntax-error"):
        super().__init__(message)
        self.index = index  # token index on the line
        self.message = message
        self.code = code


def describe(kind: str, text: str) -> str:
    """How a token is named in a message."""
    if kind == "eol":
        return "end of line"
    if kind == "str":
        return "a string"
    if kind == "hex":
        return "a hex string"
    if kind == "mnem":
        return f"mnemonic {text}"
    if kind == "bad" and (text.isspace() or not text.isprintable()):
        return f"the invisible character U+{ord(text):04X}"
    return f"'{text}'"


class ExpressionParser:
    """Token cursor of the current line plus the expression grammar."""

    def __init__(self, report: Report):
        self.report = report
        self.K: list[str] = []  # token kinds of the current logical line
        self.T: list[str] = []  # token texts
        self._starts: list[int] | None = None  # token offsets, computed when first needed
        self.i = 0  # index of the current token
        self.line: LogicalLine | None = None
        self.keydefs = False  # [1:6] key definitions are values (MKEYED and friends)

    @property
    def P(self) -> list[int]:
        """Offsets of the current line's tokens (computed on first use: only diagnostics need them)."""
        if self._starts is None:
            self._starts = token_starts(self.line.text)
        return self._starts

    def at(self, index: int | None = None) -> Where:
        """The current token (or token `index`) as a position for diagnostics and blocks."""
        return Where(self.line, self.i if index is None else index, self._starts)

    def problem(self, index: int, message: str, severity: str, code: str) -> None:
        line, col = self.line.locate(self.P[min(index, len(self.K) - 1)])
        self.report(line, col, message, severity, code)

    def fail(self, message: str, code: str = "syntax-error", at: int | None = None):
        i = self.i if at is None else at
        raise SyntaxProblem(i, message, code)

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
                self.fail("a symbolic label reference may not contain whitespace (write *NEXT)", "bad-label")
            self.i += 2
            return
        self.fail("expected a symbolic label such as *NEXT after '*'", "bad-label")

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
            if nk == "[" and K[i + 2] == "]":
                return self.whole_array()
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
            if K[i + 2] == "[" and K[i + 3] == "]":
                return self.whole_array()
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
            self.fail('unterminated string (missing closing ")', "unterminated-string")
        if k == "umnem":
            self.fail("unterminated mnemonic (missing closing ')", "unterminated-string")
        if k == ")" or k == "]":
            self.fail(f"unexpected '{k}' (unbalanced parentheses or a missing value)", "unbalanced-paren")
        self.unexpected("a value")

    def whole_array(self) -> str:
        """`name[]`: the whole array, as BASIS documents it (`x![] = s!.split(",")`, `print a[]`,
        `str(a$[])`, `dread x![]`, `clear x![]`); nothing may follow the empty brackets."""
        self.i += 2
        if self.K[self.i] in ("(", ".", "["):
            self.unexpected("nothing after the whole-array reference '[]'")
        return "var"

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
        self.i += 1
        if self.K[self.i] == ")":
            self.i += 1
            return
        self._items_until(")", "missing ')': the parenthesis is not closed on this line")

    paren_list = args

    def _items_until(self, close: str, unclosed: str) -> None:
        """`expr, expr, ... close`: comma-separated expressions up to and including `close`."""
        K = self.K
        while True:
            self.expr()
            k = K[self.i]
            if k == ",":
                self.i += 1
                continue
            if k == close:
                self.i += 1
                return
            if k == "eol":
                self.fail(unclosed, "unbalanced-paren")
            self.unexpected(f"',' or '{close}'")

    def index(self) -> None:
        """`[expr, ...]` or `[ALL]`; the current token is '['."""
        K = self.K
        self.i += 1
        if K[self.i] == "id" and K[self.i + 1] == "]" and self.T[self.i].upper() == "ALL":
            self.i += 2
            return
        self._items_until("]", "missing ']': the bracket is not closed on this line")

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
