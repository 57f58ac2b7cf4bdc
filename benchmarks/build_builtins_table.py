"""Build bbjtune's table of BBj builtin functions (src/bbjtune/bbj/builtins_table.json) from the BBj
language server's builtins reference (`bbj-corpus/language-server/builtins/functions.bbl`, MIT).

For each documented function the table keeps what the tier 2 checks need: its positional
parameters (declared type, whether they may be left out, and the name its doc's syntax line gives
it: `str1`, `int`, `expr`), its named options (`ERR=`, `IND=`, `END=`,
`MODE=`, `TIM=`: written NAME=value, never counted as arguments), whether it takes any number of
arguments (the doc's syntax line shows `...`, as MAX() and MIN() do) and the kind of value it
returns. The user functions' placeholders (FNnum, FNstring, ...) are left out.

    python benchmarks/build_builtins_table.py ../shared/bbj-corpus/language-server/builtins/functions.bbl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "bbjtune" / "bbj" / "builtins_table.json"
BLOCK_RE = re.compile(r"^/@@[ \t]*\n(?P<doc>.*?)\n@/[ \t]*\n(?P<decl>[^\n]+)", re.MULTILINE | re.DOTALL)
DECL_RE = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*\((?P<params>[^)]*)\)\s*:\s*(?P<returns>\w+)\s*$")
PARAM_RE = re.compile(
    r"^(?P<name>[A-Za-z_]\w*)\s*(?P<optional>\?)?\s*(?P<named>!)?\s*(?::\s*(?P<type>\w+))?$"
)


def syntax_names(syntax: str) -> list[str]:
    """The positional parameter names of a doc's syntax line: `MSGBOX(str1{,expr{,str2...})` ->
    str1, expr, str2. They say more than the declared types where the two differ: MSGBOX's second
    argument is declared `num` but documented as `expr`, and the language server's own example
    passes "IconInfo"."""
    inner = syntax.strip("`\\ ").partition("(")[2].rpartition(")")[0]
    names = []
    for piece in inner.replace("{", "").replace("}", "").split(","):
        piece = piece.strip().split(":")[0].strip()
        if (
            not piece
            or "=" in piece
            or piece == "..."
            or (piece.isupper() and piece.isalpha() and len(piece) > 2)
        ):
            continue
        names.append(piece)
    return names


def build(text: str) -> dict:
    functions = {}
    for m in BLOCK_RE.finditer(text):
        d = DECL_RE.match(m.group("decl").strip())
        if not d or d.group("name").lower().startswith("fn"):
            continue
        positional, options = [], []
        for raw in filter(None, (p.strip() for p in d.group("params").split(","))):
            p = PARAM_RE.match(raw)
            if not p:
                raise ValueError(f"{d.group('name')}: cannot read the parameter {raw!r}")
            if p.group("named"):
                options.append(p.group("name").upper())
            else:
                positional.append([p.group("type") or "any", bool(p.group("optional"))])
        syntax = m.group("doc").strip().splitlines()[0]
        names = syntax_names(syntax)
        for k, param in enumerate(positional):
            param.append(names[k] if k < len(names) else "")
        functions[d.group("name").upper()] = {
            "params": positional,
            "options": options,
            "variadic": "..." in syntax,
            "returns": d.group("returns"),
        }
    return {
        "origin": "derived from the BBj language server's builtins reference (BBx-Kitchen/bbj-language-server, "
        "MIT) via bbj-corpus language-server/builtins/functions.bbl by benchmarks/build_builtins_table.py",
        "functions": dict(sorted(functions.items())),
    }


def main(argv: list[str]) -> int:
    source = Path(argv[0] if argv else "../shared/bbj-corpus/language-server/builtins/functions.bbl")
    if not source.is_file():
        print(
            f"{source}: not found (pass the functions.bbl of the language server's builtins)", file=sys.stderr
        )
        return 2
    table = build(source.read_text(encoding="utf-8"))
    OUT.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{len(table['functions'])} functions -> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
