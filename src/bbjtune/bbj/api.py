"""Calls on BBjAPI objects checked against the real API: unknown methods, impossible argument counts.

The API table (`bbjapi_table.json`, built by `benchmarks/build_api_table.py`) holds, for each class
of BBj's object packages, its methods with their allowed argument counts and the class's parents.
A program's own CLASSes are read from the code itself (methods with their parameter counts, and
the get/set accessors BBj gives every FIELD).

Types are inferred only where the code makes them plain, and an unknown type means no finding:
- `BBjAPI()`; `new Class(...)`; `cast(Class, x!)`;
- `declare [auto] Class x!`, method parameters, `field ... Class x!` (as `#x!`);
- `x! = <chain>` where every assignment to `x!` in the file gives the same type (flow-insensitive:
  a variable assigned two types, or anything else, is unknown);
- a method's result: a program's own method gives its declared return type; an API method named
  getX/addX/openX/createX/makeX gives class BBjX (or X) when the table has it (`openSysGui` ->
  BBjSysGui, `addButton` -> BBjButton, `getControl` -> BBjControl), `getLastEvent` gives an event.
An unknown method's finding says which classes have a method of that name, or that none has, and
names the family's method spelled most like it when one is close (`addBbjEditBox` -> addEditBox):
the hint a developer, and a model asked to repair its answer, can act on.
A type stands for its whole family (ancestors and descendants): `getControl` may return any
control, `addGrid` a BBjStandardGrid. Method names compare case-insensitively. Both choices cost
a few missed mistakes and keep false alarms on real code near zero (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .lexer import LogicalLine, logical_lines, split_physical_lines, tokenize

TABLE_PATH = Path(__file__).with_name("bbjapi_table.json")
# java.lang.Object's methods: every object has them, with these argument counts.
OBJECT_METHODS = {
    "equals": {1},
    "hashcode": {0},
    "tostring": {0},
    "getclass": {0},
    "notify": {0},
    "notifyall": {0},
    "wait": {0, 1, 2},
}
# Names that also mean plain Java values: getString() returns a java.lang.String, not a BBjString.
NOT_RESULT_TYPES = frozenset({"bbjstring", "bbjnumber", "bbjint", "string", "number", "int"})
# Declared types whose values are not checked: BBj lets a `BBjString`/`BBjNumber` variable hold
# other objects in practice, and a templated string's methods come from its template's fields.
NOT_CHECKED = frozenset({"bbjstring", "bbjnumber", "bbjint", "bbjtemplatedstring"})
RESULT_PREFIXES = ("get", "add", "open", "create", "make")
# How alike a name must be to a real method to be suggested (difflib's ratio): addBbjEditBox ->
# addEditBox (0.87) and setTitel -> setTitle (0.88) pass; setCellValue -> setCellStyle (0.75), a
# wrong lead, does not.
NEAR_NAME_CUTOFF = 0.85
NEAR_NAME_MIN = 5  # shorter names are close to too much (get -> getX, getY)
MENU_SIZE = 12  # methods of the same verb listed for a repair
SPECIAL_RESULTS = {"getlastevent": "BBjEvent", "geteventobject": "BBjEvent"}
MODIFIERS = frozenset({"public", "private", "protected", "static", "abstract", "final", "override"})
UNKNOWN = ""  # the type of a variable seen with no type or with two different types
CALL_OPTIONS = frozenset({"err"})  # `x!.add(err=*next)`: options of a call, not arguments


@dataclass(frozen=True)
class ApiProblem:
    line: int  # physical line, 1-based
    rule: str  # unknown-method | bad-arity
    message: str
    severity: str = "error"
    receiver: str = ""  # unknown-method on an API class: the class and the name called
    method: str = ""


class ApiTable:
    """The classes of the API table, with their family's methods (case-insensitive)."""

    def __init__(self, data: dict):
        self.classes: dict[str, dict] = data["classes"]
        self.by_lower = {name.lower(): name for name in self.classes}
        children: dict[str, set[str]] = {}
        for name, cls in self.classes.items():
            for parent in cls["parents"]:
                children.setdefault(parent, set()).add(name)
        self.children = children
        self.spelling = {m.lower(): m for cls in self.classes.values() for m in cls["methods"]}
        self.method_names = set(self.spelling)

    def canonical(self, name: str) -> str | None:
        return self.by_lower.get(name.lower())

    def _walk(self, name: str, step) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            n = todo.pop()
            if n in seen or n not in self.classes:
                continue
            seen.add(n)
            todo.extend(step(n))
        return seen

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one table per process
    def methods(self, name: str) -> dict[str, set[int]]:
        """lower-case method name -> argument counts, over the class's family."""
        family = self._walk(name, lambda n: self.classes[n]["parents"])
        for desc in self._walk(name, lambda n: self.children.get(n, ())):
            family |= self._walk(desc, lambda n: self.classes[n]["parents"])
        out: dict[str, set[int]] = {m: set(c) for m, c in OBJECT_METHODS.items()}
        for n in family:
            for m, counts in self.classes[n]["methods"].items():
                out.setdefault(m.lower(), set()).update(counts)
        return out

    def result_type(self, cls: str, method: str) -> str | None:
        low = method.lower()
        if low in SPECIAL_RESULTS:
            return SPECIAL_RESULTS[low]
        for prefix in RESULT_PREFIXES:
            if low.startswith(prefix) and len(low) > len(prefix):
                rest = low[len(prefix) :]
                for cand in ("bbj" + rest, rest):
                    if cand in self.by_lower and cand not in NOT_RESULT_TYPES:
                        return self.by_lower[cand]
        return None

    def near_names(self, cls: str, method: str) -> list[str]:
        """The class family's methods spelled most like `method` (`addBbjEditBox` -> addEditBox), for a
        finding's hint; close matches only, so that a guess is rarely a wrong lead."""
        if len(method) < NEAR_NAME_MIN:
            return []
        close = difflib.get_close_matches(
            method.lower(), list(self.methods(cls)), n=2, cutoff=NEAR_NAME_CUTOFF
        )
        return [self.spelling.get(m, m) for m in close]

    def same_verb(self, cls: str, method: str, limit: int = MENU_SIZE) -> list[str]:
        """The class family's methods that start with the same verb as `method` (get, add, set,
        remove...), those spelled most like it first, each with its argument counts: what a model
        asked to correct `BBjListBox.addString()` can choose from (`addItem(1 argument)`, ...)."""
        verb = re.match(r"[a-z]+", method)
        if not verb:
            return []
        family = self.methods(cls)
        names = [m for m in family if m.startswith(verb.group(0).lower()) and m not in OBJECT_METHODS]
        ranked = sorted(names, key=lambda m: (-difflib.SequenceMatcher(None, method.lower(), m).ratio(), m))
        return [f"{self.spelling.get(m, m)}({_counts(family[m])})" for m in ranked[:limit]]

    def owner_of(self, method: str) -> list[str]:
        """Classes whose own methods include `method` (for the hint in a finding)."""
        low = method.lower()
        return sorted(n for n, c in self.classes.items() if any(m.lower() == low for m in c["methods"]))


@functools.lru_cache(maxsize=1)
def api_table() -> ApiTable:
    return ApiTable(json.loads(TABLE_PATH.read_text(encoding="utf-8")))


@dataclass
class OwnClass:
    name: str
    parents: list[str] = field(default_factory=list)
    methods: dict[str, set[int]] = field(default_factory=dict)
    returns: dict[str, str] = field(default_factory=dict)


def _type_at(K: list[str], T: list[str], i: int) -> tuple[str | None, int]:
    """A type reference at i (`Name`, `a.b.Name`, `::f.bbj::Name`); (last name or None, next index).

    Arrays (`Name[]`) give None: their elements are not tracked.
    """
    if K[i] == "path":
        i += 1
    if K[i] != "id":
        return None, i
    name = T[i]
    i += 1
    while K[i] == "." and K[i + 1] == "id":
        name = T[i + 1]
        i += 2
    if K[i] == "[":
        return None, i
    return name, i


def _counts(counts: set[int]) -> str:
    """{1} -> "1 argument", {0} -> "no arguments", {1, 2, 3, 6, 7} -> "1-3 or 6-7 arguments"."""
    ordered = sorted(counts)
    if ordered == [0]:
        return "no arguments"
    runs: list[list[int]] = []
    for n in ordered:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = " or ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return text + (" argument" if ordered == [1] else " arguments")


def bracket_end(K: list[str], i: int) -> int:
    """Index just after the bracket that closes the one at i (or the end of the line)."""
    depth = 0
    while K[i] != "eol":
        if K[i] in "([":
            depth += 1
        elif K[i] in ")]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _count_args(K: list[str], T: list[str], i: int) -> int:
    """Arguments of the call whose '(' is at i: top-level commas + 1, or 0 for `()`."""
    if K[i + 1] == ")":
        return 0
    depth, n = 0, 1
    while K[i] != "eol":
        k = K[i]
        if k == "(" or k == "[":
            depth += 1
        elif k == ")" or k == "]":
            depth -= 1
            if depth == 0:
                return n
        elif k == "," and depth == 1:
            n += 1
        elif (
            depth == 1
            and k == "id"
            and K[i + 1] == "="
            and K[i - 1] in ("(", ",")
            and T[i].lower() in CALL_OPTIONS
        ):
            n -= 1  # `x!.add(err=*next)`: an option, not an argument
        i += 1
    return n


class Program:
    """What one source file says about types: own classes and variables."""

    def __init__(self, lines: list[tuple[LogicalLine, list[str], list[str]]]):
        self.api = api_table()
        self.lines = lines
        self.scopes = _scopes(lines)
        self.own: dict[str, OwnClass] = {}
        self.declared: dict[str, str] = {}  # lower variable name (with suffix, '#' for fields) -> type
        self.assigned: dict[str, str] = {}
        self.calls_checked = 0  # calls whose receiver's type was known (the checks' coverage)
        self.scope = ""  # the scope of the line being read (see _scopes)
        self._declarations()
        # Chains depend on variables and variables on chains: each pass types one more link of
        # `a! = BBjAPI()`, `b! = a!.getSysGui()`, `c! = b!.addWindow(...)`; what is still untyped
        # after the last pass stays unknown (no finding).
        for _ in range(6):
            if not self._assignments():
                break

    # ------------------------------------------------------------- declarations
    def _declarations(self) -> None:
        current: OwnClass | None = None
        for n, (_line, K, T) in enumerate(self.lines):
            self.scope = self.scopes[n]
            i = body_start(K, T)
            word = T[i].lower() if K[i] == "id" else ""
            if word in ("class", "interface"):
                j = i + 1
                while K[j] == "id" and T[j].lower() in MODIFIERS:
                    j += 1
                if K[j] != "id":
                    continue
                current = OwnClass(T[j])
                self.own[T[j].lower()] = current
                j += 1
                while K[j] == "id" and T[j].lower() in ("extends", "implements"):
                    is_extends = T[j].lower() == "extends"
                    j += 1
                    while True:
                        name, j = _type_at(K, T, j)
                        if is_extends:
                            current.parents.append(name or "?")
                        if K[j] != ",":
                            break
                        j += 1
            elif word in ("classend", "interfaceend"):
                current = None
            elif word == "method" and current is not None:
                self._method(current, K, T, i + 1)
            elif word == "field":
                self._field(current, K, T, i + 1)
            elif word == "declare":
                j = i + 1
                if K[j] == "id" and T[j].lower() == "auto":
                    j += 1
                name, j = _type_at(K, T, j)
                if name and K[j] == "id":
                    self._declare(self.scope + T[j].lower(), name)

    def _method(self, cls: OwnClass, K, T, j: int) -> None:
        while K[j] == "id" and T[j].lower() in MODIFIERS:
            j += 1
        ret, k = _type_at(K, T, j)
        while K[k] == "[" and K[k + 1] == "]":  # an array result: its type is not tracked
            ret, k = None, k + 2
        if K[k] == "(":  # no return type written: a constructor, or void
            name, ret = T[j], None
            if k != j + 1:
                return
        elif K[k] == "id" and K[k + 1] == "(":
            name, k = T[k], k + 1
        else:
            return
        count = _count_args(K, T, k)
        cls.methods.setdefault(name.lower(), set()).add(count)
        if ret and ret.lower() != "void":
            cls.returns[name.lower()] = ret
        # parameter types: `Type name` pairs inside the parentheses
        end = bracket_end(K, k)
        p = k + 1
        while p < end - 1:
            ptype, q = _type_at(K, T, p)
            if ptype and K[q] == "id":
                self._declare(self.scope + T[q].lower(), ptype)
                p = q + 1
            else:
                p += 1
            while p < end - 1 and K[p] != ",":
                p += 1
            p += 1

    def _field(self, cls: OwnClass | None, K, T, j: int) -> None:
        while K[j] == "id" and T[j].lower() in MODIFIERS:
            j += 1
        ftype, k = _type_at(K, T, j)
        if not ftype or K[k] != "id":
            return
        var = T[k]
        self._declare("#" + var.lower(), ftype)
        if cls is not None:  # BBj gives every field a getter and a setter
            bare = var.rstrip("$%!@").lower()
            cls.methods.setdefault("get" + bare, set()).add(0)
            cls.methods.setdefault("set" + bare, set()).add(1)
            cls.returns.setdefault("get" + bare, ftype)

    def _declare(self, key: str, typ: str) -> None:
        """Names are tracked per file, not per method: two different types make a name unknown."""
        prev = self.declared.get(key)
        self.declared[key] = typ if prev is None or prev.lower() == typ.lower() else UNKNOWN

    # ------------------------------------------------------------- types
    def var_type(self, key: str) -> str | None:
        if key in self.declared:
            return self.declared[key] or None
        t = self.assigned.get(key)
        return t or None

    def _assignments(self) -> bool:
        found: dict[str, str] = {}
        for n, (_line, K, T) in enumerate(self.lines):
            self.scope = self.scopes[n]
            for start in statement_starts(K, T):
                i = start
                if K[i] == "num" and i == 0:
                    i += 1
                if K[i] == "id" and K[i + 1] == ":":
                    i += 2
                if K[i] == "id" and T[i].lower() == "let":
                    i += 1
                if K[i] == "#" and K[i + 1] == "id":
                    key, i = "#" + T[i + 1].lower(), i + 2
                elif K[i] == "id":
                    key, i = self.scope + T[i].lower(), i + 1
                else:
                    continue
                if K[i] != "=":
                    continue
                typ, end = self.chain(K, T, i + 1, None)
                if K[end] not in (";", "eol"):
                    typ = None
                prev = found.get(key)
                found[key] = (typ or UNKNOWN) if prev is None or prev == typ else UNKNOWN
        changed = found != self.assigned
        self.assigned = found
        return changed

    def primary(self, K, T, i: int) -> tuple[str | None, int]:
        """Type of the primary expression at i and the index after it ((None, i) if none)."""
        if i > 0 and (K[i - 1] == "." or K[i - 1] == "#"):
            return None, i
        k = K[i]
        if k == "#" and K[i + 1] == "id" and K[i + 2] != "(":
            return self.var_type("#" + T[i + 1].lower()), i + 2
        if k != "id":
            return None, i
        low = T[i].lower()
        if low == "bbjapi" and K[i + 1] == "(" and K[i + 2] == ")":
            return "BBjAPI", i + 3
        if low == "new":
            name, j = _type_at(K, T, i + 1)
            if name and K[j] == "(":
                return self._class_name(name), bracket_end(K, j)
            return None, i
        if low == "cast" and K[i + 1] == "(":
            name, j = _type_at(K, T, i + 2)
            if name and K[j] == ",":
                return self._class_name(name), bracket_end(K, i + 1)
            return None, i
        if K[i + 1] == "(":
            return None, i  # a function call or an array
        return self.var_type(self.scope + low), i + 1

    def _class_name(self, name: str) -> str | None:
        own = self.own.get(name.lower())
        if own is not None:
            return own.name
        return self.api.canonical(name)

    def allowed(self, typ: str) -> dict[str, set[int]] | None:
        """Methods a value of this type may call, or None when that is not known."""
        own = self.own.get(typ.lower())
        if own is not None:
            out = {m: set(c) for m, c in OBJECT_METHODS.items()}
            seen = set()
            while own is not None and own.name not in seen:
                seen.add(own.name)
                for m, c in own.methods.items():
                    out.setdefault(m, set()).update(c)
                if not own.parents:
                    return out
                parents = [self.own.get(p.lower()) for p in own.parents]
                if any(p is None for p in parents) or len(parents) > 1:
                    return None  # extends something defined elsewhere
                own = parents[0]
            return out
        name = self.api.canonical(typ)
        return self.api.methods(name) if name and name.lower() not in NOT_CHECKED else None

    def result(self, typ: str, method: str) -> str | None:
        own = self.own.get(typ.lower())
        if own is not None:
            ret = own.returns.get(method.lower())
            return self._class_name(ret) if ret else None
        return self.api.result_type(typ, method)

    def chain(
        self, K, T, i: int, problems: list | None, line: LogicalLine | None = None
    ) -> tuple[str | None, int]:
        """Type of `primary(.method(args))*` at i; checks each call when `problems` is a list."""
        start = i
        typ, i = self.primary(K, T, i)
        if typ is None and i > start and T[i - 1].endswith("!"):  # an object variable of unknown type
            typ, i = self._result_by_name(K, T, i)
        while typ and K[i] == "." and K[i + 1] == "id":
            name = T[i + 1]
            if K[i + 2] != "(" or name[-1] in "$%!@":
                return None, i + 2  # a field, or not a plain method name
            allowed = self.allowed(typ)
            n_args = _count_args(K, T, i + 2)
            if allowed is not None and problems is not None:
                self._check(allowed, typ, name, n_args, problems, line)
            if allowed is None or name.lower() not in allowed:
                return None, bracket_end(K, i + 2)
            typ, i = self.result(typ, name), bracket_end(K, i + 2)
        return typ, i

    def _result_by_name(self, K, T, i: int) -> tuple[str | None, int]:
        """`.addWindow(...)` on an object of unknown type: the class its name gives, the call unchecked.

        Only for a method some BBj API class has and none of the program's own classes defines, whose
        name gives an API class by the rule of `result` (addWindow -> BBjWindow): such a call returns
        that class whatever the receiver is, so `w! = sysgui!.addWindow(...)` types `w!` even where
        `sysgui!` came from somewhere unseen (a parameter, a global, a misspelt assignment)."""
        if not (K[i] == "." and K[i + 1] == "id" and K[i + 2] == "("):
            return None, i
        low = T[i + 1].lower()
        if low not in self.api.method_names or any(low in own.methods for own in self.own.values()):
            return None, i
        typ = self.api.result_type("", low)
        return (typ, bracket_end(K, i + 2)) if typ else (None, i)

    def _check(self, allowed, typ: str, name: str, n_args: int, problems: list, line) -> None:
        self.calls_checked += 1
        counts = allowed.get(name.lower())
        where = line.first + 1 if line is not None else 0
        if counts is None:
            hint = ""
            if not self.own.get(typ.lower()):
                owners = self.api.owner_of(name)[:3]
                near = self.api.near_names(typ, name)
                hint = f" (it exists on {', '.join(owners)})" if owners else " (no BBj class has it)"
                if near:
                    hint += f"; did you mean {' or '.join(n + '()' for n in near)}?"
            api_class = "" if self.own.get(typ.lower()) else typ
            problems.append(
                ApiProblem(
                    where, "unknown-method", f"{typ} has no method {name}(){hint}", "error", api_class, name
                )
            )
        elif n_args not in counts:
            expected = " or ".join(str(c) for c in sorted(counts))
            # The javadoc data misses some overloads (real code calls getSysGui with one argument):
            # for API classes a count within the documented range, or one more than the most, is
            # only a warning; fewer than the fewest, or two more than the most, is an error.
            sure = self.own.get(typ.lower()) is not None or n_args < min(counts) or n_args > max(counts) + 1
            problems.append(
                ApiProblem(
                    where,
                    "bad-arity",
                    f"{typ}.{name}() takes {expected} argument"
                    f"{'' if sorted(counts) == [1] else 's'}, not {n_args}",
                    "error" if sure else "warning",
                )
            )

    # ------------------------------------------------------------- checks
    def check_calls(self) -> list[ApiProblem]:
        problems: list[ApiProblem] = []
        for n, (line, K, T) in enumerate(self.lines):
            self.scope = self.scopes[n]
            for i in range(len(K) - 1):
                if K[i] in ("id", "#") and K[i + 1] != "eol":
                    self.chain(K, T, i, problems, line)
        return problems


def _scopes(lines) -> list[str]:
    """A scope prefix per line: the method it is in ("m3:") or the main program ("")."""
    out, scope, count = [], "", 0
    for _line, K, T in lines:
        i = body_start(K, T)
        word = T[i].lower() if K[i] == "id" else ""
        if word == "method":
            count += 1
            scope = f"m{count}:"
        out.append(scope)
        if word == "methodend":
            scope = ""
    return out


def body_start(K: list[str], T: list[str]) -> int:
    """Index of a line's first statement token, after its line number and label (`0010 top: x = 1`)."""
    i = 1 if K[0] == "num" else 0
    if K[i] == "id" and K[i + 1] == ":" and T[i][-1] not in "$%!@":
        i += 2
    return i


def statement_starts(K: list[str], T: list[str]) -> list[int]:
    """Indexes where the statements of a line start (after ';' outside brackets, THEN, ELSE)."""
    starts, depth = [0], 0
    for i, k in enumerate(K):
        if k == "id" and T[i].lower() in ("then", "else"):
            starts.append(i + 1)
        if k == "(" or k == "[":
            depth += 1
        elif k == ")" or k == "]":
            depth = max(depth - 1, 0)
        elif k == ";" and depth == 0:
            starts.append(i + 1)
    return starts


def tokenized(lines: list[LogicalLine]) -> list[tuple[LogicalLine, list[str], list[str]]]:
    out = []
    for line in lines:
        K, T = tokenize(line.text)
        if len(K) > 1:
            out.append((line, K, T))
    return out


def check_api_calls(lines: list[LogicalLine]) -> list[ApiProblem]:
    """Unknown methods and impossible argument counts on objects of a known type."""
    return Program(tokenized(lines)).check_calls()


def method_menus(code: str) -> dict[str, list[str]]:
    """For each unknown BBjAPI method the code calls, `Class.name()` -> the class's methods of the same
    verb (`ApiTable.same_verb`), in the order the calls come; for a repair request."""
    menus: dict[str, list[str]] = {}
    for p in check_api_calls(logical_lines(split_physical_lines(code or ""))):
        key = f"{p.receiver}.{p.method}()"
        if p.receiver and key not in menus:
            menus[key] = api_table().same_verb(p.receiver, p.method)
    return {k: v for k, v in menus.items() if v}
