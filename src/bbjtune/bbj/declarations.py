"""Declarations in BBj: DEF functions, CLASS and INTERFACE, METHOD, FIELD, DECLARE and USE.

These statements open and close the declaration blocks that `structure.Blocks` tracks, and
read type names (`BBjString`, `java.util.List`, `::file.bbj::Class`, `String[]`).
"""

from __future__ import annotations

from .expressions import ExpressionParser
from .structure import Block, Blocks

MODIFIERS = frozenset({"PUBLIC", "PRIVATE", "PROTECTED", "STATIC"})


class DeclarationStatements(ExpressionParser):
    """Statement methods for declarations; `Parser` adds the rest of the statements."""

    blocks: Blocks
    line_block: Block | None  # the declaration block opened on the current line, if any

    def stmt_def(self, u: str) -> bool:
        start = self.at()
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
            self.blocks.open_def(start)
            return False
        self.unexpected("'=' and an expression, or the end of the line for a multi-line DEF")

    def stmt_fnend(self, u: str) -> bool:
        self.blocks.close_declaration("DEF", self.at())
        self.i += 1
        return False

    def stmt_class(self, kind: str) -> bool:
        self.line_block = self.blocks.open_class(kind, self.at())
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
        self.blocks.close_declaration(kind, self.at())
        self.i += 1
        return False

    def stmt_method(self, u: str) -> bool:
        self.line_block = self.blocks.open_method(self.at())
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
        self.blocks.close_declaration("METHOD", self.at())
        self.i += 1
        return False

    def stmt_field(self, u: str) -> bool:
        self.blocks.field(self.at())
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
