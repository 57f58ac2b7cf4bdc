"""Derive instruction pairs from real BBj source, for stage 2 when hand-written pairs are few.

Real BBj libraries document their methods with javadoc-style `rem /** ... rem */` blocks. From
each documented method we derive two ChatML examples:

- write:   "Write a BBj method ... that <doc>" → the method's code inside its class (so the answer
           compiles on its own, as a complete BBj file must);
- explain: "Explain what this BBj method does" + the code → the doc text as prose;

and from each small program one "complete this program" pair (its first part → the whole program).

Reference libraries in the BBj language server's format (`.bbl` files whose declarations carry a
`/@@ ... @/` doc block: the builtin functions, system variables, error branch labels and callback
events) give one factual pair per documented name, the answer made of the doc text and the
declared syntax only, so it is right by construction: "What does the BBj function FILL() do, and
how is it called?", "What does the system variable CTL hold?", "What does ERR=*NEXT do?", "Which
callback event is the Control Push Button Event?". And `api_pairs` names each real BBjAPI class's
methods with their argument counts, from the API table the tier-2 checks use.
Everything derived keeps its provenance (`source`, `derived`), so the data stage can deduplicate it
and decontaminate it against the evaluation suite like any other example.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bbjtune.bbj.api import api_table
from bbjtune.data.cpt import SourceProblem, decode_source

METHOD_RE = re.compile(r"^\s*method\s+(?P<sig>.*)$", re.IGNORECASE)
METHODEND_RE = re.compile(r"^\s*methodend\b", re.IGNORECASE)
CLASS_RE = re.compile(
    r"^\s*class\s+(?:(?:public|private|protected|static|final)\s+)*"
    r"(?!(?:public|private|protected|static|final)\b)(?P<name>[\w.]+)",
    re.IGNORECASE,
)
CLASSEND_RE = re.compile(r"^\s*classend\b", re.IGNORECASE)
DOC_END_RE = re.compile(r"^\s*rem\s*(?:/\*\*.*)?\*/\s*$", re.IGNORECASE)
DOC_START_RE = re.compile(r"^\s*rem\s*/\*\*(?P<rest>.*)$", re.IGNORECASE)
DOC_LINE_RE = re.compile(r"^\s*rem\s?\s*\*?\s?(?P<text>.*)$", re.IGNORECASE)

MIN_DOC_CHARS = 25
# a language-server library's doc block and the declaration after it
REF_BLOCK_RE = re.compile(r"^/@@[ \t]*\n(?P<doc>.*?)\n@/[ \t]*\n(?P<decl>[^\n]+)", re.MULTILINE | re.DOTALL)
REF_DECL_RE = re.compile(
    r"^(?:(?P<kind>var|label|eventtype)\s+(?P<name>\*?\w+[$%!]?)(?:\s*:\s*(?P<vtype>\w+))?"
    r"|(?P<fname>\w+[$%]?)\s*\((?P<params>[^)]*)\)\s*(?::\s*(?P<ftype>\w+))?)\s*$"
)
TYPE_WORDS = {
    "string": "a string",
    "str": "a string",
    "int": "an integer",
    "num": "a number",
    "number": "a number",
    "lineref": "a line label",
    "any": "any value",
}
MAX_METHOD_LINES = 60
COMPLETE_MIN_LINES, COMPLETE_MAX_LINES = 16, 140


@dataclass
class DocumentedMethod:
    path: str
    class_name: str | None
    signature: str  # the `method ...` line, stripped
    code: str  # from the method line to methodend, original indentation removed
    description: str  # the doc comment's prose
    tags: list[tuple[str, str]]  # (@param/@return/@throws, text)


def _dedent(lines: list[str]) -> str:
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] if line.strip() else "" for line in lines).rstrip() + "\n"


def _parse_doc(lines: list[str]) -> tuple[str, list[tuple[str, str]]]:
    prose: list[str] = []
    tags: list[tuple[str, str]] = []
    for raw in lines:
        m = DOC_START_RE.match(raw) or DOC_LINE_RE.match(raw)
        text = m.group("rest") if "rest" in m.re.groupindex else m.group("text")
        text = re.sub(r"\s*\*?/\s*$", "", text.replace("*/", "")).strip()
        if text.startswith("@"):
            tag, _, rest = text.partition(" ")
            tags.append((tag, rest.strip()))
        elif tags and text:
            tags[-1] = (tags[-1][0], f"{tags[-1][1]} {text}".strip())
        else:
            prose.append(text)
    description = re.sub(r"\s+", " ", " ".join(p for p in prose if p)).strip()
    description = re.sub(r"\{@(?:link|code) ([^}]*)\}", r"`\1`", description)
    return description, tags


def documented_methods(text: str, path: str) -> Iterator[DocumentedMethod]:
    lines = text.split("\n")
    class_name: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := CLASS_RE.match(line):
            class_name = m.group("name")
        elif CLASSEND_RE.match(line):
            class_name = None
        elif METHOD_RE.match(line) and i > 0 and DOC_END_RE.match(lines[i - 1]):
            start = i - 1
            while start > 0 and not DOC_START_RE.match(lines[start]) and DOC_LINE_RE.match(lines[start]):
                start -= 1
            end = i
            while end < len(lines) and not METHODEND_RE.match(lines[end]):
                end += 1
            if end < len(lines) and DOC_START_RE.match(lines[start]):
                description, tags = _parse_doc(lines[start:i])
                yield DocumentedMethod(
                    path, class_name, line.strip(), _dedent(lines[i : end + 1]), description, tags
                )
                i = end
        i += 1


def _method_name(signature: str) -> str:
    m = re.search(r"(\w+)\s*\(", signature)
    return m.group(1) if m else signature


def guess_generation(code: str) -> str:
    low = code.lower()
    if (
        "getwebmanager" in low
        or "getwebcomponent" in low
        or "dwc" in low
        or "setstyle(" in low
        or "addstyle(" in low
    ):
        return "dwc"
    if "'window'" in low or "'button'" in low:
        return "vpro5"
    if "'cs'" in low or re.search(r"@\(\s*\d", low):
        return "character"
    return "gui"


def _example(system: str, user: str, assistant: str, **meta: str) -> dict:
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]
    return {"messages": messages, **meta}


def _sentence(text: str) -> str:
    """End a doc phrase with a full stop, as prose answers do."""
    text = text.rstrip()
    return text + "." if text and text[-1].isalnum() or text.endswith(("`", ")", "'", '"')) else text


def in_class(method_code: str, class_name: str | None) -> str:
    """A method inside its class, so the code is a whole BBj file (continuation lines stay in column 0)."""
    if not class_name:
        return method_code
    body = "".join(
        "\n" if not line else (line + "\n" if line.startswith(":") else f"    {line}\n")
        for line in method_code.rstrip("\n").split("\n")
    )
    return f"class public {class_name}\n\n{body}\nclassend\n"


def pairs_from_method(m: DocumentedMethod, system: str) -> list[dict]:
    if len(m.description) < MIN_DOC_CHARS or "{@inheritDoc}" in m.description:
        return []
    body_lines = m.code.count("\n")
    if body_lines < 3 or body_lines > MAX_METHOD_LINES:
        return []
    owner = f" of the class `{m.class_name}`" if m.class_name else ""
    params = [
        f"- `{text.split()[0]}`: {' '.join(text.split()[1:])}"
        for tag, text in m.tags
        if tag == "@param" and text.split()
    ]
    returns = [text for tag, text in m.tags if tag == "@return" and text]
    spec = m.description
    if params:
        spec += "\n\nParameters:\n" + "\n".join(params)
    if returns:
        spec += f"\n\nReturns: {returns[0]}"
    meta = {"category": "oop", "generation": guess_generation(m.code), "source": m.path}
    code = in_class(m.code, m.class_name)
    write = _example(
        system,
        f"Write the BBj method `{_method_name(m.signature)}`{owner} with the signature `{m.signature}`. "
        f"It should do the following: {spec}",
        f"```bbj\n{code}```",
        task="write",
        derived="method-write",
        **meta,
    )
    explanation = _sentence(m.description)
    if params:
        explanation += "\n\nIts parameters:\n" + "\n".join(_sentence(p) for p in params)
    if returns:
        explanation += f"\n\nIt returns {_sentence(returns[0][0].lower() + returns[0][1:])}"
    explain = _example(
        system,
        f"Explain what this BBj method does:\n\n```bbj\n{code}```",
        explanation,
        task="explain",
        derived="method-explain",
        **meta,
    )
    return [write, explain]


def completion_pair(text: str, path: str, system: str) -> dict | None:
    """First part of a small program → the rest, split at a blank line near the middle."""
    lines = text.rstrip("\n").split("\n")
    if not COMPLETE_MIN_LINES <= len(lines) <= COMPLETE_MAX_LINES:
        return None
    mid = len(lines) // 2
    blanks = [
        i
        for i in range(len(lines) // 3, 2 * len(lines) // 3)
        if not lines[i].strip() and not lines[i + 1].startswith(":")
    ]
    cut = min(blanks, key=lambda i: abs(i - mid)) if blanks else mid
    if lines[cut].startswith(":") or (cut + 1 < len(lines) and lines[cut + 1].startswith(":")):
        return None
    head = "\n".join(lines[:cut]).rstrip() + "\n"
    return _example(
        system,
        f"Complete this BBj program:\n\n```bbj\n{head}```",
        f"Here is the complete program:\n\n```bbj\n{text.strip(chr(10))}\n```",
        task="write",
        derived="complete-program",
        category="program-structure",
        generation=guess_generation(text),
        source=path,
    )


def _type_words(name: str | None) -> str:
    return TYPE_WORDS.get((name or "").lower(), f"a {name}" if name else "a value")


def _parameters(params: str) -> list[str]:
    """`count: int, pattern?: string, ERR?!: lineref` -> readable parameter lines."""
    out = []
    for raw in (p.strip() for p in params.split(",")):
        name, _, typ = raw.partition(":")
        name = name.strip()
        if not name:
            continue
        optional = "?" in name
        keyword = "!" in name
        bare = name.replace("?", "").replace("!", "")
        label = f"`{bare}=`" if keyword else f"`{bare}`"
        what = _type_words(typ.strip())
        out.append(f"- {label}: {what}" + (" (optional)" if optional else ""))
    return out


def _doc_text(doc: str) -> tuple[list[str], str]:
    """(syntax lines quoted in backticks, the prose) of a doc block; markdown headings dropped."""
    doc = doc.replace("\\`", "`")
    syntax: list[str] = []
    m = re.search(r"`([^`]+)`", doc)
    if m:
        syntax = [line.strip() for line in m.group(1).strip().split("\n") if line.strip()]
        doc = doc[: m.start()] + doc[m.end() :]
    prose = re.sub(r"(?m)^#+\s*\w+\s*$", "", doc)
    prose = re.sub(r"[ \t]+", " ", prose)
    prose = re.sub(r"\n{3,}", "\n\n", prose).strip()
    return syntax, prose


def _pick(options: list[str], key: str) -> str:
    """One of several phrasings, the same for the same name every time (no randomness in the data)."""
    return options[int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % len(options)]


def reference_pairs(text: str, path: str, system: str) -> list[dict]:
    """Factual pairs from a language-server library's documented declarations (see the module doc)."""
    blocks = [(m.group("doc"), m.group("decl").strip()) for m in REF_BLOCK_RE.finditer(text)]
    titles = [doc.strip() for doc, decl in blocks if decl.startswith("eventtype")]
    out: list[dict] = []
    for doc, decl in blocks:
        d = REF_DECL_RE.match(decl)
        if not d:
            continue
        syntax, prose = _doc_text(doc)
        meta = {"category": "reference", "generation": "any", "source": path, "task": "factual"}
        if d.group("fname"):
            name = d.group("fname").upper()
            if len(prose) < MIN_DOC_CHARS:
                continue
            answer = _sentence(prose)
            shown = syntax or [
                f"{name}({', '.join(p.split(':')[0].strip() for p in d.group('params').split(',') if p.strip())})"
            ]
            answer += "\n\nSyntax:\n" + "\n".join(f"- `{line}`" for line in shown)
            params = _parameters(d.group("params"))
            if params:
                answer += "\n\nParameters:\n" + "\n".join(params)
            if d.group("ftype"):
                answer += f"\n\nIt returns {_type_words(d.group('ftype'))}."
            ask = _pick(
                [
                    f"What does the BBj function {name}() do, and how is it called?",
                    f"How do I use the {name}() function in BBj?",
                    f"Explain the BBj function {name}() and its syntax.",
                ],
                name,
            )
            out.append(_example(system, ask, answer, derived="reference-function", **meta))
            continue
        kind, name = d.group("kind"), d.group("name")
        if kind == "var" and len(prose) >= MIN_DOC_CHARS:
            answer = _sentence(prose) + f"\n\n`{name}` is {_type_words(d.group('vtype'))}."
            ask = f"What does the BBj system variable {name} hold?"
            out.append(_example(system, ask, answer, derived="reference-variable", **meta))
        elif kind == "label" and len(prose) >= MIN_DOC_CHARS:
            ask = f"What does ERR={name} do in BBj?"
            answer = f"`ERR={name}` on a statement: {prose[0].lower() + prose[1:]}"
            out.append(_example(system, ask, _sentence(answer), derived="reference-label", **meta))
        elif kind == "eventtype":
            title = doc.strip()
            # a title several events share, or none, does not tell which one is meant
            if not title or titles.count(title) > 1 or title.upper() in ("N/A", "NA"):
                continue
            ask = f'Which BBj callback event code stands for "{title}"?'
            answer = f"`{name}` ({title}). Register a handler for it with `setCallback()`."
            out.append(_example(system, ask, answer, derived="reference-event", **meta))
    return out


def _with_id(pair: dict) -> dict:
    """The pair with a stable id: the hash of its user and assistant turns."""
    key = "\n".join(msg["content"] for msg in pair["messages"][1:])
    pair["id"] = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return pair


def derive_pairs(files: Iterable[Path], system: str) -> Iterator[dict]:
    """All derived pairs from the given source files, each with a stable id."""
    for path in files:
        try:
            text, _ = decode_source(Path(path).read_bytes())
        except SourceProblem:
            continue  # binary or empty: nothing to learn from
        derived = [p for m in documented_methods(text, str(path)) for p in pairs_from_method(m, system)]
        reference = reference_pairs(text, str(path), system)
        derived += reference
        # a reference library is declarations, not a program to complete
        if not reference and (pair := completion_pair(text, str(path), system)) is not None:
            derived.append(pair)
        yield from (_with_id(pair) for pair in derived)


def default_system_prompt() -> str:
    """The system prompt of the project's examples (the fixed prompt used in training)."""
    import json

    examples = Path(__file__).resolve().parents[3] / "examples" / "chatml" / "bbj-instructions.jsonl"
    if examples.exists():
        with open(examples, encoding="utf-8") as fh:
            return json.loads(fh.readline())["messages"][0]["content"]
    return "You are a BBj expert. Answer with correct, idiomatic BBj code."


# A class with more methods than this is asked about one verb at a time (its add... methods, its
# get... methods), so that no answer is a wall of names.
API_CLASS_METHODS = 40
API_VERBS = ("add", "get", "set", "is", "remove")
API_PACKAGES = {"proxies": "a BBjAPI class", "sysgui": "a GUI class", "event": "an event class"}


def _arguments(counts: list[int]) -> str:
    counts = sorted(set(counts))
    if counts == [0]:
        return "no arguments"
    if len(counts) == 1:
        return f"{counts[0]} argument{'s' if counts[0] != 1 else ''}"
    return ", ".join(str(c) for c in counts[:-1]) + f" or {counts[-1]} arguments"


def _method_lines(methods: dict[str, list[int]]) -> str:
    return "\n".join(
        f"- `{name}()`: {_arguments(counts)}"
        for name, counts in sorted(methods.items(), key=lambda m: m[0].lower())
    )


def api_pairs(system: str) -> list[dict]:
    """Factual pairs about the real BBjAPI classes (the API table the tier-2 checks use): which methods
    a class has and how many arguments each takes, so that a model learns the names that exist
    instead of inventing `addBbjEditBox` or `BBjAPI().openWindow()`. Right by construction: names and
    argument counts only, as the table has no descriptions."""
    table = api_table()
    out: list[dict] = []
    for name in sorted(table.classes):
        cls = table.classes[name]
        methods = cls["methods"]
        if not methods:
            continue
        kind = API_PACKAGES.get(cls.get("package", ""), "a BBj class")
        meta = {"category": "reference", "generation": "any", "source": f"bbjapi:{name}", "task": "factual"}
        parents = [p for p in cls["parents"] if p in table.classes and table.classes[p]["methods"]]
        inherits = (
            f"\n\nIt also has the methods of the types it extends, such as {', '.join(f'`{p}`' for p in parents[:4])}."
            if parents
            else ""
        )
        if len(methods) <= API_CLASS_METHODS:
            ask = _pick(
                [
                    f"Which methods does a {name} object have in BBj?",
                    f"List the methods of the BBj class {name}.",
                    f"What can I call on a {name} in BBj?",
                ],
                name,
            )
            answer = f"`{name}` ({kind}) has these methods, with the number of arguments each takes:\n\n"
            out.append(
                _example(
                    system, ask, answer + _method_lines(methods) + inherits, derived="reference-api", **meta
                )
            )
            continue
        groups: dict[str, dict[str, list[int]]] = {}
        for method, counts in methods.items():
            verb = next(
                (v for v in API_VERBS if method.startswith(v) and method[len(v) : len(v) + 1].isupper()), ""
            )
            groups.setdefault(verb, {})[method] = counts
        for verb, group in sorted(groups.items()):
            if verb:
                ask = f"Which {verb}...() methods does a {name} have in BBj?"
                answer = f"`{name}` ({kind}) has these `{verb}` methods, with the number of arguments each takes:\n\n"
            else:
                ask = f"Besides its add, get, set, is and remove methods, what else can I call on a {name} in BBj?"
                answer = (
                    f"`{name}` ({kind}) also has these methods, with the number of arguments each takes:\n\n"
                )
            out.append(
                _example(
                    system, ask, answer + _method_lines(group) + inherits, derived="reference-api", **meta
                )
            )
    return [_with_id(pair) for pair in out]
