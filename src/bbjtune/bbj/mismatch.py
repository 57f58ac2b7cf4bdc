"""String, number and object mixed where BBj cannot mix them: `"Total: " + total`, `name$ = 5`,
`sysgui = BBjAPI().openSysGui("X0")`.

BBj writes a value's type into its name: `x$` is a string, `x` and `x%` are numbers, `x!` an object.
`+` joins two strings or adds two numbers, never one of each; `-`, `*`, `/` and `^` take numbers
only; a comparison needs two values of one kind; an assignment needs a value of the variable's kind,
and only an object variable (`!`) holds a BBj object. Anything else stops the program with error 26
("String/Number Mismatch"; for objects "incompatible types in an assignment") when the line runs,
although the line compiles (`bbjcpl -N` checks syntax, not types). Python and Java habits write it
all the time (`print "Total: " + total`, `str$ = 5`, `fruit = BBjAPI().makeVector()`).

Only values whose type is plain from the text take part, so a finding is always a real mismatch:
- strings: string literals, hex strings `$0D0A$`, mnemonics `'CS'`, `@(col,row)`, names ending in `$`
  (variables, arrays, substrings `a$(1,3)`, template fields `rec.name$`, fields `#name$`, `FNX$()`),
  and the builtin functions that return a string (`STR()`, `CHR()`, `DATE()`, ...);
- numbers: numeric literals, names without a suffix or with `%` (`#count`, `a[i]`), `FNX()`, and the
  builtin functions that return a number (`LEN()`, `POS()`, `NUM()`, ...);
- BBj objects: `BBjAPI()`, a method on it or on an object whose name gives an API class
  (`openSysGui`, `addWindow`, `makeVector`: the tier-2 API table), `new` of an API class or of the
  program's own class (not of Java classes: BBj turns a java.lang.String into a string);
- everything else is unknown and never reported: other methods (`w!.getText()` gives a string, but
  the table has no return types), Java classes (`String.valueOf()`), parenthesised expressions, user
  functions of unknown kind, names declared with a type (`field public BBjString subject`), and the
  system variables that hold strings without a `$` (`DAY`, `SSN`: a program may own a number so named).
Builtin function calls are checked the same way against the language server's builtins reference
(builtins_table.json): the number of positional arguments (`NAME=value` options such as `ERR=` do
not count; MAX() and MIN() take any number), and each argument's kind where the declared type and
the name the doc's syntax line gives it agree (`ATH(string)`, `ABS(num)`; MSGBOX's second argument is
declared a number but documented `expr`, so it is not checked). A builtin's name that starts a
statement is the verb (`CHANOPT (1,MODE="x")`), and a library file's declarations are not calls.
`=` is checked as an assignment at the start of a statement and as the comparison of an IF, WHILE or
UNTIL condition (outside parentheses); elsewhere it is also the `NAME=value` of an option list
(`read (ch,key=k$)`), where a bare name and a string meet legally.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .api import NOT_RESULT_TYPES, api_table, body_start, bracket_end, statement_starts
from .lexer import LogicalLine
from .library import is_library

STRING, NUMBER, OBJECT = "string", "number", "BBj object"
# Builtin functions (the BBj language server's builtins reference, builtins_table.json): parameters,
# named options and the kind of value returned. AND, OR, XOR, NOT, IOR and IFF work on strings and
# numbers alike, so their results are left unknown.
KINDS = {"string": STRING, "char": STRING, "num": NUMBER, "int": NUMBER}
EITHER_KIND = frozenset({"AND", "OR", "XOR", "NOT", "IOR", "IFF"})


@functools.lru_cache(maxsize=1)
def builtins() -> tuple[dict[str, dict], dict[str, str | None]]:
    """The builtin functions by upper-case name, and the kind each returns by lower-case name (read on
    first use, not at import)."""
    table = json.loads(Path(__file__).with_name("builtins_table.json").read_text(encoding="utf-8"))[
        "functions"
    ]
    results = {name.lower(): KINDS.get(f["returns"]) for name, f in table.items() if name not in EITHER_KIND}
    return table, results


VALUE_ENDS = frozenset({"id", "num", "str", "hex", "mnem", ")", "]"})
COMPARISONS = frozenset({"<>", "<", ">", "<=", ">=", "=<", "=>", "><"})
ARITHMETIC = frozenset({"-", "*", "/", "^"})
# words that end a value without an operator in between (`if a$="x" then`, `for i=1 to n step 2`)
NOT_VALUES = frozenset({"then", "else", "to", "step", "and", "or", "cast", "declare", "let"})
# A name declared with a type (FIELD, METHOD parameters, DECLARE) takes the declared type, whatever its
# suffix: `field public BBjString subject` makes `#subject` a string. Numeric types keep a name numeric.
DECLARING = frozenset({"field", "method", "declare"})
NUMERIC_TYPES = frozenset(
    {"bbjnumber", "bbjint", "int", "integer", "double", "float", "long", "short", "byte"}
)


@dataclass(frozen=True)
class Mismatch:
    line: int  # physical line, 1-based
    message: str
    rule: str = "type-mismatch"  # or bad-arity: a builtin function called with an impossible argument count


def _show(tokens: list[str]) -> str:
    """Tokens as code: a space only between two words (`len(a$)`, `#count`, `str(n) + x`)."""
    out = ""
    for t in tokens:
        if out and (out[-1].isalnum() or out[-1] in "$%!@_\"'") and (t[0].isalnum() or t[0] in "_\"'"):
            out += " "
        out += t
    return out


def _doc_kind(name: str) -> str | None:
    """The kind a doc's syntax line gives an argument by its name: str1 -> string, intA -> number."""
    low = name.lower()
    return STRING if low.startswith("str") else NUMBER if low.startswith(("int", "num")) else None


def _name_kind(name: str) -> str | None:
    suffix = name[-1]
    if suffix == "$":
        return STRING
    if suffix == "%" or suffix.isalnum() or suffix == "_":
        return NUMBER
    return None  # ! objects, @ client objects


class _Scan:
    """One logical line: each value's kind, checked where an operator meets two of them."""

    def __init__(
        self,
        K: list[str],
        T: list[str],
        declared: frozenset[str] = frozenset(),
        classes: frozenset[str] = frozenset(),
    ):
        self.K, self.T = K, T
        self.declared = declared  # names without a suffix declared with a non-numeric type
        self.classes = classes  # the program's own CLASS names (lower case)
        # where the statements start (after a line number and label, `;`, THEN, ELSE): a builtin's name
        # there is the verb (`CHANOPT (1,MODE="x")"..."`), and assignments and conditions start there
        self.starts = [body_start(K, T), *statement_starts(K, T)[1:]]
        self.tests = self._conditions()  # indexes of the `=` that compare (IF a$ = "x" THEN)
        self.groups: list[tuple[int, int]] = []  # bracket contents to scan as expressions of their own
        self.found: str | None = None
        self.rule = "type-mismatch"

    def value(self, i: int) -> tuple[str | None, int]:
        """The kind of the value that starts at i, and the index after it."""
        K, T = self.K, self.T
        k = K[i]
        if k in ("str", "hex", "mnem"):
            j = i + 1
            while K[j] == "(":  # a substring of a literal
                j = self._group(j)
            return STRING, j
        if k == "num":
            return NUMBER, i + 1
        if k == "@" and K[i + 1] == "(":
            return STRING, self._group(i + 1)
        if k == "#" and K[i + 1] == "id":
            kind, j = self.value(i + 1)
            return (kind if "." not in T[i + 1 : j] else None), j
        if k != "id":
            return None, i + 1
        low = T[i].lower()
        if low in NOT_VALUES and not (low in ("and", "or") and self._function_word(i)):
            return None, i + 1
        if low == "new" and K[i + 1] == "id":
            return self._new(i + 1)
        j, dotted, objects, last = i + 1, False, T[i][-1] in "!@", T[i]
        api = low == "bbjapi" and K[i + 1] == "(" and K[i + 2] == ")"  # BBjAPI(): the API object
        method = ""  # the chain's last method, when the chain ends with a call
        call_end = 0  # where the name's own argument list ends: fin(ch)(1,4) is FIN(ch), then a substring
        while True:
            if K[j] in ("(", "["):
                j = self._group(j)
                call_end = call_end or j
            elif K[j] == "." and K[j + 1] == "id":
                dotted, last = True, T[j + 1]
                # an object's field or method, or a Java class's: the table has no return types
                objects = objects or last[-1] in "!@" or (K[j + 2] == "(" and last[-1] != "$")
                method = last if K[j + 2] == "(" else ""
                j += 2
            else:
                break
        if api and (not dotted or method) and K[j - 1] == ")":
            # BBjAPI() itself, or a chain on it that ends in a method whose name gives an API class
            # (openSysGui -> BBjSysGui, makeVector -> BBjVector, addWindow -> BBjWindow)
            if not dotted or api_table().result_type("", method):
                return OBJECT, j
        if objects and method and K[j - 1] == ")" and api_table().result_type("", method):
            return OBJECT, j
        kind = _name_kind(last)
        if kind == STRING:
            return STRING, j
        if objects or kind is None or last.lower() in self.declared:
            return None, j
        if dotted:
            return None, j  # rec.amount (a template field) or a Java constant: not plain enough
        if K[i + 1] == "(":
            if low.startswith("fn"):
                return kind, j  # DEF FNX(...) returns a number, FNX$ a string
            table, results = builtins()
            if low.upper() in table and self.found is None and i not in self.starts:
                self._call(table[low.upper()], T[i].upper(), i + 1, call_end - 1)
            return results.get(low), j
        if low in ("day", "ssn", "chn", "opts", "pfx", "rev", "sqlchn", "sys"):
            return None, j  # string system variables, or a program's own number of that name
        return NUMBER, j

    def _new(self, i: int) -> tuple[str | None, int]:
        """`new Class(...)` at i (the class name): an object of a BBj API class or of the program's own
        class. Java classes are left out: BBj turns a java.lang.String into a string, and so on."""
        K, T = self.K, self.T
        j, name = i + 1, T[i]
        while K[j] == "." and K[j + 1] == "id":
            name, j = T[j + 1], j + 2
        if K[j] != "(":
            return None, j
        j = self._group(j)
        if K[j] in (".", "(", "["):
            return None, j  # a call on the new object: its result is unknown
        plain = name.rstrip("@")
        own = plain.lower() in self.classes or api_table().canonical(plain) is not None
        return (OBJECT if own and plain.lower() not in NOT_RESULT_TYPES else None), j

    def _function_word(self, i: int) -> bool:
        """Whether AND/OR at i is the function (`AND(a$,b$)`), not the operator (`x > 1 and (y < 2)`):
        the function stands where a value starts, the operator after one."""
        return self.K[i + 1] == "(" and (i == 0 or self.K[i - 1] not in VALUE_ENDS)

    def _call(self, spec: dict, name: str, lo: int, hi: int) -> None:
        """A builtin function's call, its parentheses at lo and hi: the number of positional
        arguments (NAME=value options do not count) and the kind of each one whose kind is plain."""
        K, T = self.K, self.T
        args, start, depth = [], lo + 1, 0
        for j in range(lo + 1, hi + 1):
            if K[j] in ("(", "["):
                depth += 1
            elif K[j] in (")", "]") and depth:
                depth -= 1
            elif (K[j] == "," and depth == 0) or j == hi:
                if j > start or K[j] == ",":
                    args.append((start, j))
                start = j + 1
        positional = [
            (a, b)
            for a, b in args
            if not (K[a] == "id" and K[a + 1] == "=" and T[a].upper() in spec["options"])
        ]
        params, n = spec["params"], len(positional)
        least, most = sum(not optional for _, optional, _doc in params), len(params)
        if n < least or (n > most and not spec["variadic"]):
            takes = (
                f"at least {least}"
                if spec["variadic"]
                else f"{least}"
                if least == most
                else f"{least} to {most}"
            )
            self.rule = "bad-arity"
            self.found = f"{name}() takes {takes} argument{'' if takes.endswith(' 1') or takes == '1' else 's'}, not {n}"
            return
        for k, ((a, b), (ptype, _, doc)) in enumerate(zip(positional, params), 1):
            # only where the declared type and the doc's name for the argument agree (MSGBOX's
            # options are declared a number but documented `expr`, and take "IconInfo" too)
            expected = KINDS.get(ptype) if _doc_kind(doc) == KINDS.get(ptype) else None
            kind, _end = self._statement_value(a, b)
            if expected and kind in (STRING, NUMBER) and kind != expected:
                self.found = (
                    f"argument {k} of {name}() is a {expected}, and `{_show(T[a:b])}` is a {kind}: "
                    "BBj stops with error 26 (type mismatch)"
                )
                return

    def _conditions(self) -> set[int]:
        """The `=` at bracket depth 0 in the condition of an IF, WHILE or UNTIL: a comparison there."""
        K, T = self.K, self.T
        out, cond, depth = set(), False, 0
        for j, k in enumerate(K):
            if k == "id" and T[j].lower() in ("if", "while", "until") and j in self.starts:
                cond, depth = True, 0
            elif k == "id" and T[j].lower() in ("then", "else") or k in (";", "eol"):
                cond = False
            elif k in ("(", "["):
                depth += 1
            elif k in (")", "]"):
                depth -= 1
            elif k == "=" and cond and depth == 0:
                out.add(j)
        return out

    def _group(self, i: int) -> int:
        end = bracket_end(self.K, i)
        self.groups.append((i + 1, end - 1))
        return end

    def expression(self, lo: int, hi: int) -> None:
        """Check the operators between lo and hi (exclusive) at this bracket depth."""
        K, T = self.K, self.T
        i, left, op = lo, None, None  # left: (kind, text) of the value before the operator
        while i < hi and K[i] != "eol":
            k = K[i]
            if k == "=" and i in self.tests and left is not None and op is None:
                k = "=="  # the comparison of an IF/WHILE/UNTIL condition
            if k in ("+", "==", *ARITHMETIC, *COMPARISONS) and left is not None and op is None:
                op = k
                i += 1
                continue
            if k in (",", ";", ":", "=", ")", "]", "+", *ARITHMETIC, *COMPARISONS):
                left, op = None, None  # a separator, an option's =, a sign
                i += 1
                continue
            kind, j = self.value(i)
            text = _show(T[i:j])
            if op is None or left is None:
                left = (kind, text)
            else:
                if self.found is None:
                    self.found = self._verdict(left[0], op, kind, left[1], text)
                result = (kind if kind == left[0] else None) if op == "+" else NUMBER
                left = (result, text)
            op = None
            i = j

    @staticmethod
    def _verdict(a: str | None, op: str, b: str | None, a_text: str, b_text: str) -> str | None:
        if a is None or b is None or OBJECT in (a, b):
            return None
        if op == "+" and a != b:
            return (
                f"`{a_text} + {b_text}` adds a {b} to a {a}: BBj stops with error 26 (type mismatch); "
                "STR() turns a number into text, NUM() reads a number from text"
            )
        if op in ARITHMETIC and STRING in (a, b):
            text = a_text if a == STRING else b_text
            return f"`{op}` needs numbers, and `{text}` is a string: BBj stops with error 26 (type mismatch); use NUM() to read a number from text"
        if (op in COMPARISONS or op == "==") and a != b:
            op = "=" if op == "==" else op
            return (
                f"`{a_text} {op} {b_text}` compares a {a} with a {b}: BBj stops with error 26 (type mismatch)"
            )
        return None

    def assignments(self) -> None:
        """`[LET] target = value` at the start of each statement: the value must be of the target's kind."""
        K, T = self.K, self.T
        for s in self.starts:
            if self.found is not None:
                return
            if K[s] == "id" and T[s].lower() == "let":
                s += 1
            if K[s] != "id" or T[s].lower() in NOT_VALUES:
                continue
            groups = len(self.groups)
            target, j = self.value(s)
            del self.groups[groups:]
            if target is None or K[j] != "=":
                continue
            value, end = self._statement_value(j + 1)
            if value == OBJECT:
                shown = f"{_show(T[s:j])} = {_show(T[j + 1 : end])}"
                name = T[s].rstrip("$%")
                self.found = (
                    f"`{shown}` puts a BBj object into the {target} variable `{T[s]}`: BBj stops with error 26 "
                    f"(type mismatch); an object variable's name ends with `!` (`{name}!`)"
                )
            elif value is not None and value != target:
                shown = f"{_show(T[s:j])} = {_show(T[j + 1 : end])}"
                self.found = (
                    f"`{shown}` puts a {value} into the {target} variable `{T[s]}`: BBj stops with error 26 "
                    "(type mismatch)"
                    + (
                        "; STR() turns a number into text"
                        if target == STRING
                        else "; NUM() reads a number from text"
                    )
                )

    def _statement_value(self, i: int, hi: int | None = None) -> tuple[str | None, int]:
        """The kind of an assignment's value: a comparison or AND/OR anywhere in it makes a number;
        else the kind of its first value, when every value is of that kind."""
        K, T = self.K, self.T
        kinds, j, compared = [], i, False
        groups = len(self.groups)
        while K[j] not in ("eol", ";", ",") and (hi is None or j < hi):
            if K[j] == "id" and T[j].lower() in ("else", "then"):
                break
            word_op = K[j] == "id" and T[j].lower() in ("and", "or") and not self._function_word(j)
            if K[j] in COMPARISONS or K[j] == "=" or word_op:
                compared = True
                j += 1
                continue
            if K[j] in ("+", *ARITHMETIC, ":"):
                j += 1
                continue
            kind, j = self.value(j)
            kinds.append(kind)
        del self.groups[groups:]
        if compared:
            return NUMBER, j
        if not kinds or None in kinds or len(set(kinds)) != 1:
            return None, j
        return kinds[0], j

    def run(self) -> str | None:
        self.assignments()
        self.expression(body_start(self.K, self.T), len(self.K))
        while self.groups and self.found is None:
            lo, hi = self.groups.pop()
            # each argument of a call or index is an expression of its own
            self.expression(lo, hi)
        return self.found


def declarations(
    toks: list[tuple[LogicalLine, list[str], list[str]]],
) -> tuple[frozenset[str], frozenset[str]]:
    """Names without a suffix that a FIELD, METHOD or DECLARE line gives a non-numeric type; and the
    names of the program's own classes (all lower case)."""
    names, classes = set(), set()
    for _line, K, T in toks:
        start = body_start(K, T)
        if K[start] == "id" and T[start].lower() in ("class", "interface"):
            classes.update(T[j].lower() for j in range(start + 1, len(K)) if K[j] == "id")
        if K[start] != "id" or T[start].lower() not in DECLARING:
            continue
        for j in range(start + 1, len(K) - 1):
            if K[j] == "id" and K[j + 1] == "id" and T[j + 1][-1] not in "$%!@":
                if T[j].lower() not in NUMERIC_TYPES:
                    names.add(T[j + 1].lower())
    return frozenset(names), frozenset(
        classes - {"public", "private", "protected", "static", "extends", "implements"}
    )


def check_type_mismatch(toks: list[tuple[LogicalLine, list[str], list[str]]]) -> list[Mismatch]:
    """At most one finding per line: the first string/number mix on it."""
    if is_library([line for line, _K, _T in toks]):
        return []  # declarations of builtins, not code
    declared, classes = declarations(toks)
    out = []
    for line, K, T in toks:
        scan = _Scan(K, T, declared, classes)
        found = scan.run()
        if found:
            out.append(Mismatch(line.first + 1, found.rstrip("; "), scan.rule))
    return out
