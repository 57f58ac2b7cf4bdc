"""The package layout holds: stages side by side, what they share below them, a fast command line.

DESIGN.md, "Package layout": a stage package (data, train, evaluate, export, serve, review) never
imports another; the shared layer (models, bbj, artifacts, config, errors, ...) imports no stage;
imports sit at the top of their module, so a cycle cannot hide inside a function; and
`import bbjtune.cli` loads no torch, so `bbjtune --help` answers at once.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bbjtune

PACKAGE = Path(bbjtune.__file__).parent
STAGES = ("data", "train", "evaluate", "export", "serve", "review")
ABOVE_STAGES = ("cli", "pipeline", "__main__")  # the command line and `bbjtune run` call every stage


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts), p)
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported bbjtune module, line, inside a function) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    in_function = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            names = (
                [f"{names[0]}.{a.name}" for a in node.names]
                if names[0] in ("bbjtune", *[f"bbjtune.{s}" for s in STAGES])
                else names
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in in_function) for n in names if n.startswith("bbjtune")]
    return found


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_no_stage_imports_another_and_the_shared_layer_imports_no_stage():
    wrong = []
    for module, path in _modules():
        if module.split(".")[1] in ABOVE_STAGES:
            continue
        mine = _stage_of(module)
        for target, line, _ in _imports(path, module):
            theirs = _stage_of(target)
            if theirs and theirs != mine:
                where = f"the {mine} stage" if mine else "the shared layer"
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {where} imports {target}")
    assert not wrong, "move what two stages share below them (models/, artifacts.py, ...):\n" + "\n".join(
        wrong
    )


def test_imports_sit_at_the_top_except_where_the_command_line_defers_a_stage():
    """A function-level import hides cycles; the command line alone defers loading a stage (--help stays fast)."""
    inside = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
        for module, path in _modules()
        if path.name != "cli.py"
        for target, line, in_function in _imports(path, module)
        if in_function
    ]
    assert not inside, "import at the top of the module:\n" + "\n".join(inside)


# Imports each module with no bbjtune module loaded yet (third-party libraries stay loaded, so each
# import costs only bbjtune's own code). Importing all of them in one process in name order would
# miss a cycle that breaks only when its later-named module is imported first: by then the earlier
# one has loaded it as a side effect.
IMPORT_EACH_FIRST = """
import importlib, pkgutil, sys
import bbjtune
names = [i.name for i in pkgutil.walk_packages(bbjtune.__path__, "bbjtune.") if not i.name.endswith("__main__")]
for name in names:
    for loaded in [m for m in sys.modules if m == "bbjtune" or m.startswith("bbjtune.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
print(f"imported {len(names)} modules")
"""


def test_every_module_imports_on_its_own():
    """Each module imported first, before any other bbjtune module, would show an import cycle."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST], capture_output=True, text=True, check=True, timeout=600
    )
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("imported ") and int(lines[-1].split()[1]) > 100, out.stdout
    assert lines[:-1] == [], "\n".join(lines[:-1])


@pytest.mark.parametrize("module", ["bbjtune.cli"])
def test_the_command_line_loads_no_torch(module):
    code = (
        f"import sys, {module}; "
        "print(','.join(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", (
        f"`import {module}` loaded {out.stdout.strip()}: --help would take seconds"
    )
