"""Block structure of a BBj program: which statements open and close which blocks.

Two kinds of blocks, treated differently because real code and the compiler treat them
differently:

- Declaration blocks (CLASS/CLASSEND, INTERFACE/INTERFACEEND, METHOD/METHODEND and multi-line
  DEF/FNEND) are checked by `bbjcpl`: an unbalanced or misplaced one is an error.
- Control blocks (block IF/FI, FOR/NEXT, WHILE/WEND, REPEAT/UNTIL, SWITCH/SWEND) are matched at
  run time in BBj; real programs leave a block IF open or end a loop early, and the language
  server accepts them. A mismatch is a warning, never an error, with one exception the language
  server also makes an error: CASE outside a SWITCH.
"""

from __future__ import annotations

from typing import Callable

from .lexer import LogicalLine, token_starts

DECLARATION_KINDS = frozenset({"CLASS", "INTERFACE", "METHOD", "DEF"})
END_WORD = {
    "CLASS": "CLASSEND",
    "INTERFACE": "INTERFACEEND",
    "METHOD": "METHODEND",
    "DEF": "FNEND",
    "IF": "FI",
    "FOR": "NEXT",
    "WHILE": "WEND",
    "REPEAT": "UNTIL",
    "SWITCH": "SWEND",
}

Report = Callable[[int, int, str, str, str], None]  # (line index, column, message, severity, code)


class Where:
    """A token of a logical line; its physical line and column are computed only when needed."""

    __slots__ = ("line", "index", "starts")

    def __init__(self, line: LogicalLine, index: int, starts: list[int] | None = None):
        self.line = line
        self.index = index
        self.starts = starts  # token offsets of the line, when the parser already has them

    def position(self) -> tuple[int, int]:
        """(physical line index, 0-based column)."""
        starts = self.starts if self.starts is not None else token_starts(self.line.text)
        return self.line.locate(starts[min(self.index, len(starts) - 1)])

    @property
    def line_number(self) -> int:
        """1-based physical line, for messages."""
        if self.line.segments is None:
            return self.line.first + 1
        return self.position()[0] + 1


class Block:
    __slots__ = ("kind", "where", "broken", "has_body")

    def __init__(self, kind: str, where: Where):
        self.kind = kind
        self.where = where
        self.broken = False  # its opening line had a syntax error (bbjcpl then flags the end too)
        self.has_body = False  # a METHOD that contains at least one statement

    @property
    def line(self) -> int:
        return self.where.line_number


class Blocks:
    """The stack of open blocks while the lines of one file are parsed in order."""

    def __init__(self, report: Report, fragment: bool = False):
        self._report = report
        self.fragment = fragment  # a piece of a class: METHOD and FIELD may stand at the top level
        self.stack: list[Block] = []
        self.declaration: Block | None = None  # innermost open declaration block

    # ------------------------------------------------------------------ queries
    def in_def(self) -> bool:
        return self.declaration is not None and self.declaration.kind == "DEF"

    def in_method(self) -> bool:
        return any(b.kind == "METHOD" for b in self.stack)

    def report(self, where: Where, message: str, severity: str, code: str) -> None:
        self._report(*where.position(), message, severity, code)

    def _refresh(self) -> None:
        for block in reversed(self.stack):
            if block.kind in DECLARATION_KINDS:
                self.declaration = block
                return
        self.declaration = None

    # ------------------------------------------------------------------ statements
    def executable(self, where: Where, word: str) -> None:
        """An executable statement: only allowed at program level, in a METHOD or a DEF."""
        decl = self.declaration
        if decl is None:
            return
        if decl.kind == "METHOD":
            decl.has_body = True
        elif decl.kind == "CLASS":
            self.report(
                where,
                f"{word} cannot stand in a CLASS body outside a METHOD "
                f"(CLASS at line {decl.line}; missing METHOD or CLASSEND?)",
                "error",
                "statement-outside-method",
            )
        elif decl.kind == "INTERFACE":
            self.report(
                where,
                f"{word} cannot stand in an INTERFACE body (only METHOD declarations; missing INTERFACEEND?)",
                "error",
                "statement-outside-method",
            )

    # ------------------------------------------------------------------ declaration blocks
    def open_class(self, kind: str, where: Where) -> Block:
        self._close_controls()
        decl = self.declaration
        if decl is not None:
            if decl.kind == "METHOD":
                self._unclosed_method(decl)
                decl = self.declaration
            if decl is not None and decl.kind in ("CLASS", "INTERFACE"):
                self.report(
                    where,
                    f"{kind} starts before the {decl.kind} of line {decl.line} "
                    f"is closed (missing {END_WORD[decl.kind]})",
                    "error",
                    "unclosed-block",
                )
                self._pop_to(decl)
            elif decl is not None:
                self.report(
                    where,
                    f"{kind} cannot be declared inside {decl.kind} (line {decl.line})",
                    "error",
                    "misplaced-declaration",
                )
        return self._push(kind, where)

    def open_method(self, where: Where) -> Block | None:
        self._close_controls()
        decl = self.declaration
        if decl is not None and decl.kind == "METHOD":
            self._unclosed_method(decl)
            decl = self.declaration
        if decl is not None and decl.kind == "INTERFACE":
            return None  # an interface method is a declaration without a body
        if (decl is None and not self.fragment) or (decl is not None and decl.kind != "CLASS"):
            place = "inside a DEF" if decl is not None else "outside a CLASS"
            self.report(
                where,
                f"METHOD {place}: methods are declared between CLASS and CLASSEND",
                "error",
                "misplaced-declaration",
            )
        return self._push("METHOD", where)

    def open_def(self, where: Where) -> Block:
        if self.in_def():
            self.report(
                where,
                f"DEF inside the DEF of line {self.declaration.line} (missing FNEND?)",
                "error",
                "unclosed-block",
            )
        return self._push("DEF", where)

    def field(self, where: Where) -> None:
        decl = self.declaration
        if (decl is not None and decl.kind == "CLASS") or (decl is None and self.fragment):
            return
        if decl is not None and decl.kind == "METHOD":
            self.report(
                where,
                f"FIELD inside the METHOD of line {decl.line} (missing METHODEND?)",
                "error",
                "misplaced-declaration",
            )
        else:
            self.report(
                where,
                "FIELD outside a CLASS: fields are declared between CLASS and CLASSEND",
                "error",
                "misplaced-declaration",
            )

    def close_declaration(self, kind: str, where: Where) -> None:
        """CLASSEND, INTERFACEEND, METHODEND or FNEND."""
        end = END_WORD[kind]
        decl = self.declaration
        if kind in ("CLASS", "INTERFACE") and decl is not None and decl.kind == "METHOD":
            self._unclosed_method(decl)
            decl = self.declaration
        if decl is None or decl.kind != kind:
            inside = f" (inside the {decl.kind} of line {decl.line})" if decl else ""
            self.report(where, f"{end} without {kind}{inside}", "error", "unbalanced-block")
            return
        self._pop_to(decl)
        if decl.broken:
            # bbjcpl reports the end of a block whose opening line it could not compile.
            self.report(
                where,
                f"{end} of the {kind} at line {decl.line}, whose declaration has an error",
                "error",
                "broken-declaration",
            )

    # ------------------------------------------------------------------ control blocks
    def open_control(self, kind: str, where: Where) -> None:
        self._push(kind, where)

    def close_control(self, kind: str, where: Where, word: str) -> None:
        target = self._find_control(kind)
        if target is None:
            self.report(where, f"{word} without {kind}", "warning", "unbalanced-block")
            return
        self._pop_to(target)

    def case(self, where: Where, word: str) -> None:
        target = self._find_control("SWITCH")
        if target is None:
            self.report(
                where, f"'{word}' is only allowed inside a SWITCH block", "error", "case-outside-switch"
            )
            return
        while self.stack[-1] is not target and self.stack[-1].kind == "IF":
            self.stack.pop()

    def else_(self, where: Where) -> None:
        if self._find_control("IF") is None:
            self.report(where, "ELSE without an open IF", "warning", "unbalanced-block")

    def _find_control(self, kind: str) -> Block | None:
        for block in reversed(self.stack):
            if block.kind == kind:
                return block
            if block.kind in DECLARATION_KINDS:
                return None
        return None

    # ------------------------------------------------------------------ end of file
    def finish(self) -> None:
        while self.stack:
            block = self.stack[-1]
            if block.kind == "METHOD":
                self._unclosed_method(block)
            elif block.kind in DECLARATION_KINDS:
                self.report(
                    block.where, f"{block.kind} without {END_WORD[block.kind]}", "error", "unclosed-block"
                )
                self.stack.pop()
            else:
                self._warn_unclosed(block)
                self.stack.pop()
        self.declaration = None

    # ------------------------------------------------------------------ helpers
    def _push(self, kind: str, where: Where) -> Block:
        block = Block(kind, where)
        self.stack.append(block)
        if kind in DECLARATION_KINDS:
            self.declaration = block
        return block

    def _pop_to(self, target: Block) -> None:
        while self.stack:
            block = self.stack.pop()
            if block is target:
                break
            self._warn_unclosed(block)
        self._refresh()

    def _close_controls(self) -> None:
        """Drop control blocks left open when a declaration starts."""
        while self.stack and self.stack[-1].kind not in DECLARATION_KINDS:
            self._warn_unclosed(self.stack.pop())

    def _warn_unclosed(self, block: Block) -> None:
        if block.kind == "IF":
            return  # a block IF without FI is accepted by BBj and common in real code
        self.report(block.where, f"{block.kind} without {END_WORD[block.kind]}", "warning", "unclosed-block")

    def _unclosed_method(self, method: Block) -> None:
        """A METHOD that reaches the next METHOD, CLASSEND or end of file without METHODEND.

        The language server accepts a body-less METHOD without METHODEND (a declaration only);
        a METHOD with statements and no METHODEND is an error.
        """
        if method.has_body:
            self.report(method.where, "METHOD without METHODEND", "error", "unclosed-block")
        else:
            self.report(
                method.where,
                "METHOD without METHODEND (it has no statements, so it is read as a declaration only)",
                "warning",
                "unclosed-block",
            )
        self._pop_to(method)
