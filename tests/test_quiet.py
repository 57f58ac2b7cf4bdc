"""What a run prints is bbjtune's: no bitsandbytes warning on float32 runs, no per-tensor weight bars."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT
from train_helpers import make_config, write_data

from bbjtune.config import load_config, validate_config
from bbjtune.quiet import needs_bitsandbytes

NOISE = ("bitsandbytes", "gemm_4bit", "Loading weights", "Writing model shards")


def test_only_quantizing_or_8bit_runs_need_bitsandbytes():
    qlora_by_default = {"name": "x", "model": {"source": "tiny:test"}, "data": {"chatml": ["x.jsonl"]}}
    assert needs_bitsandbytes(validate_config(qlora_by_default))
    assert not needs_bitsandbytes(load_config("quickstart"))  # float32, adamw_torch
    assert needs_bitsandbytes(load_config("quickstart", ["train.optim=adamw_8bit"]))


def test_float32_training_prints_no_bitsandbytes_line_and_never_imports_it(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data", n_train=4, n_heldout=2)
    cfg = make_config(tmp_path, tiny_model_dir, train__sft__max_steps=1)
    assert not needs_bitsandbytes(cfg)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    # -X importtime lists every module the process imports, on stderr, one "import time:" line each
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bbjtune", "train", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    printed = [line for line in lines if not line.startswith("import time:")]
    assert proc.returncode == 0, "\n".join(printed[-30:])
    assert "Done." in " ".join(printed)
    assert not [line for line in printed if any(word in line for word in NOISE)]
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert "peft" in imported  # peft before 0.22 imported bitsandbytes whenever it could
    # a real import loads bitsandbytes.functional, .nn, .backends...; the refused attempt lists only the name
    assert not {m for m in imported if m.startswith("bitsandbytes.")}


def test_a_quantizing_run_still_loads_bitsandbytes():
    pytest.importorskip("bitsandbytes")
    # after allow_bitsandbytes, peft's and transformers' availability checks say yes and the import
    # works (peft before 0.22 imported it with `import peft`; later ones import it when a layer needs it)
    code = (
        "import sys\nfrom bbjtune.quiet import allow_bitsandbytes, leave_bitsandbytes_unloaded\n"
        "leave_bitsandbytes_unloaded()\nimport importlib.util\nassert importlib.util.find_spec('bitsandbytes') is None\n"
        "allow_bitsandbytes()\nimport peft\nfrom peft.import_utils import is_bnb_4bit_available\n"
        "from transformers.utils import is_bitsandbytes_available\nimport bitsandbytes.nn\n"
        "print(is_bnb_4bit_available(), is_bitsandbytes_available(), hasattr(bitsandbytes.nn, 'Linear4bit'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True True True"
    assert "gemm_4bit_forward" not in proc.stderr  # the kernel notice of AVX-512 BF16 CPUs is dropped
