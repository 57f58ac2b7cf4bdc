"""`bbjtune run quickstart` end to end, and INTERFACES.md held against the run directory it writes.

One real run of every stage on the tiny model (data, two-stage training, evaluation of base and
tuned, export with GGUF verification), shortened to a few steps and prompts so it takes about a
minute and a half on a laptop CPU.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.slow  # trains the tiny model: `make test` runs it, `make test-fast` leaves it out

INTERFACES = REPO_ROOT / "INTERFACES.md"
SHORT = [
    "train.cpt.max_steps=3",
    "train.sft.max_steps=3",
    "train.sft.stop_check=1",
    "eval.limit=4",
    "eval.max_new_tokens=48",
    "eval.humaneval.limit=2",
    "eval.humaneval.max_new_tokens=48",
    "export.gguf=[f16,q8_0]",
    "export.ollama.quant=q8_0",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    overrides = [arg for setting in [f"output_dir={root}/{{name}}", *SHORT] for arg in ("--set", setting)]
    result = run_cli("run", "quickstart", *overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done." in result.stderr and "Traceback" not in result.stderr
    return root / "quickstart"


def test_every_stage_ran_and_finished(run_dir):
    stages = {
        "data": "data",
        "cpt": "train-cpt",
        "sft": "train-sft",
        "eval/base": "eval",
        "eval/tuned": "eval",
        "eval/compare": "eval-compare",
        "export": "export",
    }
    for directory, stage in stages.items():
        manifest = json.loads((run_dir / directory / "manifest.json").read_text())
        assert (manifest["stage"], manifest["status"]) == (stage, "complete"), directory
    trained = json.loads((run_dir / "trained.json").read_text())
    assert trained["stages"] == ["cpt", "sft"] and Path(trained["adapter"]).is_dir()
    assert trained["base_model"] == str((run_dir / "cpt" / "merged").resolve())
    compare = json.loads((run_dir / "eval" / "compare" / "results.json").read_text())
    assert compare["a"] == "base" and compare["b"] == "tuned" and "compile@1" in compare["tiers"]
    verify = json.loads((run_dir / "export" / "verify.json").read_text())
    assert verify["ok"] and set(verify["results"]) == {"f16", "q8_0"}
    assert "FROM ./quickstart.q8_0.gguf" in (run_dir / "export" / "Modelfile").read_text()


# ----------------------------------------------------------------------------- INTERFACES.md


def documented_files(text: str) -> dict[str, dict]:
    """{path pattern: {"optional": bool, "fields": {name: optional}}} from the `### \\`path\\`` sections."""
    files: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"^###\s+`([^`]+)`(.*)$", line)
        if heading:
            current = files.setdefault(
                heading.group(1), {"optional": "*optional*" in heading.group(2), "fields": {}}
            )
        elif line.startswith("#"):
            current = None
        elif current is not None and (field := re.match(r"^- `([^`]+)`", line)):
            current["fields"][field.group(1)] = "*optional*" in line
    return files


def _instances(run_dir: Path, pattern: str) -> list[Path]:
    if pattern == "*/manifest.json":
        return sorted(
            p for p in run_dir.rglob("manifest.json") if "merged" not in p.parts and "adapter" not in p.parts
        )
    pattern = pattern.replace("<name>", run_dir.name)
    if "<quant>" in pattern:
        return [run_dir / pattern.replace("<quant>", quant) for quant in ("f16", "q8_0")]
    if "<label>" in pattern:
        return [run_dir / pattern.replace("<label>", label) for label in ("base", "tuned")]
    return [run_dir / pattern]


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(path.read_text(encoding="utf-8"))]


def test_interfaces_md_lists_every_file_and_field_the_run_writes(run_dir):
    files = documented_files(INTERFACES.read_text(encoding="utf-8"))
    assert len(files) >= 20, "INTERFACES.md lost its file sections"
    problems = []
    for pattern, doc in files.items():
        paths = _instances(run_dir, pattern)
        assert paths, pattern
        for path in paths:
            where = path.relative_to(run_dir)
            if not path.exists():
                if not doc["optional"]:
                    problems.append(f"{where}: documented, but the run did not write it")
                continue
            if path.suffix not in (".json", ".jsonl"):
                continue
            required = {name for name, optional in doc["fields"].items() if not optional}
            for row in _rows(path):
                problems += [
                    f"{where}: documented field `{name}` is missing" for name in sorted(required - set(row))
                ]
                problems += [
                    f"{where}: field `{name}` is not in INTERFACES.md"
                    for name in sorted(set(row) - set(doc["fields"]))
                ]
    problems = list(dict.fromkeys(problems))  # one line per file and field, not per JSONL row
    assert not problems, "INTERFACES.md and the run directory disagree:\n" + "\n".join(problems)


def test_every_file_the_run_writes_is_documented(run_dir):
    """The reverse direction for files: nothing at the top of a stage directory goes unmentioned."""
    text = INTERFACES.read_text(encoding="utf-8")
    undocumented = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if len(rel.parts) > 3 or {"merged", "adapter", "checkpoints"} & set(rel.parts[:-1]):
            continue
        name = re.sub(rf"^{re.escape(run_dir.name)}\.\w+\.gguf$", "<name>.<quant>.gguf", rel.name)
        if name not in text:
            undocumented.append(str(rel))
    assert not undocumented, "files the run writes that INTERFACES.md does not mention:\n" + "\n".join(
        undocumented
    )
