"""A small renderer for the subset of Go's text/template that Ollama TEMPLATEs use.

Ollama formats every prompt with the Modelfile's TEMPLATE, a Go template; a mistake there (a
missing newline, an unclosed turn) makes a fine-tuned model babble or never stop, and Ollama cannot
run here. bbjtune therefore renders its own TEMPLATE with this interpreter and compares the text
with the ChatML the model was trained on, both when exporting and in the tests.

Supported, with Go's semantics: text, `{{ pipeline }}`, trim markers `{{-` / `-}}`, `if` /
`else if` / `else` / `end`, `range $i, $m := pipeline`, `$var := pipeline`, `.Field`, `$.Field`,
`$var.Field`, string and integer literals, parentheses, and the functions `eq ne lt le gt ge and
or not len slice`. Anything else is an error, never silently skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class GoTemplateError(ValueError):
    pass


# ----------------------------------------------------------------------------- lexing

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<lp>\()|(?P<rp>\))
                        |(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_]\w*)*)|(?P<field>\.(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?)
                        |(?P<ident>[A-Za-z_]\w*)|(?P<assign>:=)|(?P<comma>,))""",
    re.X,
)


def _split(template: str) -> list[tuple[str, str]]:
    """[('text', ...), ('action', ...)] with Go's whitespace trimming applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            parts.append(("text", text))
        parts.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    if "{{" in tail:
        raise GoTemplateError("unclosed action '{{'")
    if trim_next:
        tail = tail.lstrip(" \t\r\n")
    if tail:
        parts.append(("text", tail))
    return parts


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot parse '{expr[pos:]}' in '{expr}'")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


# ----------------------------------------------------------------------------- parsing


@dataclass
class _Node:
    kind: str  # text | output | assign | if | range
    value: Any = None
    branches: list[tuple[Any, list[_Node]]] = field(default_factory=list)  # if: (cond tokens | None, body)
    body: list[_Node] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def _parse(parts: list[tuple[str, str]]) -> list[_Node]:
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[_Node], str]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(parts):
            kind, value = parts[pos]
            pos += 1
            if kind == "text":
                nodes.append(_Node("text", value))
                continue
            word = value.split(None, 1)[0] if value else ""
            if value.startswith("/*"):
                continue
            if word in ("end", "else") and word in stop:
                return nodes, value
            if word == "if":
                node = _Node("if")
                cond = _tokens(value[2:])
                while True:
                    body, ended = block(("end", "else"))
                    node.branches.append((cond, body))
                    if ended == "end":
                        break
                    rest = ended[4:].strip()
                    cond = _tokens(rest[2:]) if rest.startswith("if") else None
                    if cond is None:
                        body, ended = block(("end",))
                        node.branches.append((None, body))
                        break
                nodes.append(node)
            elif word == "range":
                m = re.match(r"range\s+(?:(\$\w*)\s*(?:,\s*(\$\w*))?\s*:=\s*)?(.+)$", value, re.S)
                if not m:
                    raise GoTemplateError(f"cannot parse '{value}'")
                body, _ = block(("end",))
                nodes.append(
                    _Node(
                        "range",
                        _tokens(m.group(3)),
                        body=body,
                        names=[n for n in (m.group(1), m.group(2)) if n],
                    )
                )
            elif re.match(r"^\$\w+\s*:=", value):
                name, _, expr = value.partition(":=")
                nodes.append(_Node("assign", _tokens(expr), names=[name.strip()]))
            elif word in ("end", "else", "with", "define", "template", "block", "break", "continue"):
                raise GoTemplateError(f"'{word}' is not supported here (or is misplaced)")
            else:
                nodes.append(_Node("output", _tokens(value)))
        if stop:
            raise GoTemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
        return nodes, ""

    nodes, _ = block(())
    return nodes


# ----------------------------------------------------------------------------- evaluation


def _truth(value: Any) -> bool:
    return not (
        value is None
        or value is False
        or value == 0
        or value == ""
        or (hasattr(value, "__len__") and len(value) == 0)
    )


def _field(value: Any, path: list[str]) -> Any:
    for name in path:
        if value is None:
            raise GoTemplateError(f"nil pointer evaluating .{name}")
        if isinstance(value, dict):
            value = value.get(name)
        else:
            value = getattr(value, name, None)
    return value


def _slice(seq: Any, *idx: int) -> Any:
    if len(idx) == 1:
        return seq[idx[0] :]
    if len(idx) == 2:
        return seq[idx[0] : idx[1]]
    return seq


def _eq(a: Any, *others: Any) -> bool:
    return any(a == b for b in others)


FUNCTIONS = {
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "slice": _slice,
}


class _Evaluator:
    def __init__(self, root: Any):
        self.root = root

    def expr(self, tokens: list[tuple[str, str]], dot: Any, scope: dict[str, Any]) -> Any:
        value, rest = self._command(tokens, dot, scope)
        if rest:
            raise GoTemplateError(f"unexpected '{rest[0][1]}'")
        return value

    def _command(self, tokens, dot, scope):
        if not tokens:
            raise GoTemplateError("empty expression")
        kind, text = tokens[0]
        if kind == "ident" and text in ("and", "or"):
            args, rest = self._args(tokens[1:], dot, scope)
            if text == "and":
                result = next((a for a in args if not _truth(a)), args[-1])
            else:
                result = next((a for a in args if _truth(a)), args[-1])
            return result, rest
        if kind == "ident":
            if text not in FUNCTIONS:
                raise GoTemplateError(f"function '{text}' is not supported")
            args, rest = self._args(tokens[1:], dot, scope)
            return FUNCTIONS[text](*args), rest
        value, rest = self._term(tokens, dot, scope)
        return value, rest

    def _args(self, tokens, dot, scope):
        args = []
        while tokens and tokens[0][0] != "rp":
            value, tokens = self._term(tokens, dot, scope)
            args.append(value)
        return args, tokens

    def _term(self, tokens, dot, scope):
        kind, text = tokens[0]
        rest = tokens[1:]
        if kind == "str":
            return json.loads(text), rest
        if kind == "num":
            return int(text), rest
        if kind == "field":
            return (dot if text == "." else _field(dot, text[1:].split("."))), rest
        if kind == "var":
            name, *path = text.split(".")
            if name == "$":
                base = self.root
            elif name in scope:
                base = scope[name]
            else:
                raise GoTemplateError(f"undefined variable {name}")
            return _field(base, path), rest
        if kind == "lp":
            depth, i = 1, 0
            while depth and i < len(rest):
                depth += {"lp": 1, "rp": -1}.get(rest[i][0], 0)
                i += 1
            if depth:
                raise GoTemplateError("unbalanced parentheses")
            value, inner_rest = self._command(rest[: i - 1], dot, scope)
            if inner_rest:
                raise GoTemplateError(f"unexpected '{inner_rest[0][1]}'")
            return value, rest[i:]
        if kind == "ident" and text in FUNCTIONS:
            raise GoTemplateError(f"function '{text}' needs parentheses when used as an argument")
        raise GoTemplateError(f"unexpected '{text}'")

    def run(self, nodes: list[_Node], dot: Any, scope: dict[str, Any], out: list[str]) -> None:
        scope = dict(scope)  # variables declared in a block end with it
        for node in nodes:
            if node.kind == "text":
                out.append(node.value)
            elif node.kind == "output":
                value = self.expr(node.value, dot, scope)
                out.append("" if value is None else str(value))
            elif node.kind == "assign":
                scope[node.names[0]] = self.expr(node.value, dot, scope)
            elif node.kind == "if":
                for cond, body in node.branches:
                    if cond is None or _truth(self.expr(cond, dot, scope)):
                        self.run(body, dot, scope, out)
                        break
            elif node.kind == "range":
                seq = self.expr(node.value, dot, scope) or []
                for i, item in enumerate(seq):
                    inner = dict(scope)
                    if len(node.names) == 2:
                        inner[node.names[0]], inner[node.names[1]] = i, item
                    elif node.names:
                        inner[node.names[0]] = item
                    self.run(node.body, item, inner, out)


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` as Go's text/template would (for the supported subset)."""
    nodes = _parse(_split(template))
    out: list[str] = []
    _Evaluator(data).run(nodes, data, {"$": data}, out)
    return "".join(out)
