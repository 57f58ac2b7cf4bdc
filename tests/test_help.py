"""`--help` of every verb, in-process: each answers with its usage and description, and fast.

In-process (typer's runner, no new interpreter per verb) so the whole command tree is checked in
about a second; test_layers.py checks that loading the command line loads no torch.
"""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bbjtune.cli import app


def _verbs(group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command and sub-command (typer bundles its own click, so groups are told by their `commands`)."""
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append((path, command))
        if hasattr(command, "commands"):
            found += _verbs(command, path)
    return found


VERBS = _verbs(typer.main.get_command(app))


def test_the_tree_holds_every_verb():
    names = {" ".join(path) for path, _ in VERBS}
    expected = {
        "run",
        "config",
        "config show",
        "config check",
        "config list",
        "inspect",
        "check",
        "train",
        "data",
        "eval",
        "export",
        "review",
        "review start",
        "review keys",
        "review export",
        "serve",
        "serve ollama",
        "serve vllm",
        "serve gguf",
        "serve gateway",
        "data feedback",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("path", [path for path, _ in VERBS], ids=[" ".join(path) for path, _ in VERBS])
def test_help_of_every_verb(path):
    command = dict(VERBS)[path]
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="bbjtune", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage: bbjtune " + " ".join(path) in result.output
    summary = (command.help or command.short_help or "").strip().splitlines()[0].strip()
    assert summary and summary.split(":")[0][:40] in " ".join(result.output.split())
