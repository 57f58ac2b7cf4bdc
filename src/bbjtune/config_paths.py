"""Where the relative input paths of a config are found.

A user's own config names its files relative to the current directory, like the command line
(README: "The config"). Two kinds of relative path are not the user's, though:

- the paths in a preset (`configs/quickstart.yaml` names `examples/chatml/*.jsonl`) are relative
  to the project the preset ships in, the directory that holds `configs/`;
- built-in defaults (`data.decontaminate_against: [evals/*.jsonl]`, `eval.suites`) name the
  evaluation suites that ship with bbjtune, at the project root.

Both are tried from the current directory first (so runs started in the project keep their short,
relative names in manifests) and, when nothing matches there, from their own root. Started from
anywhere else, `bbjtune run quickstart` then finds the same files instead of silently skipping
decontamination; a path that matches nothing in either place stays as written, for the stage that
reads it to report.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

# (section, key) of every config value that lists input files or globs.
INPUT_KEYS = (
    ("data", "chatml"),
    ("data", "sources"),
    ("data", "replay"),
    ("data", "decontaminate_against"),
    ("eval", "suites"),
)


def matches(pattern: str) -> bool:
    expanded = os.path.expanduser(pattern)
    return os.path.isdir(expanded) or bool(glob.glob(expanded, recursive=True))


def anchor_inputs(cfg: Any, preset_root: Path | None, project_root: Path) -> None:
    """Rewrite, in place, relative input paths that match nothing from the current directory but do
    from their root: `preset_root` for values a preset sets, `project_root` for built-in defaults."""
    for section_name, key in INPUT_KEYS:
        anchor_section(getattr(cfg, section_name), key, preset_root, project_root)


def anchor_section(section: Any, key: str, preset_root: Path | None, project_root: Path) -> None:
    """`anchor_inputs` for one key of one section (a section used without a whole config)."""
    root = preset_root if key in section.model_fields_set else project_root
    if root is not None:
        patterns = getattr(section, key)
        anchored = [_anchor(p, root) for p in patterns]
        if anchored != patterns:
            setattr(section, key, anchored)


def _anchor(pattern: str, root: Path) -> str:
    if os.path.isabs(os.path.expanduser(pattern)) or matches(pattern):
        return pattern
    candidate = str(root / pattern)
    return candidate if matches(candidate) else pattern
