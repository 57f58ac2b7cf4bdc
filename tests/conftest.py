"""Shared test helpers: the repo root, the optional shared corpus, the tiny model, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def benchmark_module(name: str):
    """A script of benchmarks/ imported as a module (registered in sys.modules, which dataclasses need)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SHARED_CORPUS = REPO_ROOT.parent / "shared" / "bbj-corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/bbj-corpus when present; tests that need it skip cleanly otherwise."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip("../shared/bbj-corpus is not present (optional test data)")
    return SHARED_CORPUS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A freshly built tiny:test model directory, in a cache private to this test session."""
    from bbjtune.models.tiny import build_tiny

    return build_tiny("tiny:test", cache_dir=tmp_path_factory.mktemp("tiny-cache"))


def run_cli(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m bbjtune ARGS` as a user would, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bbjtune", *args],
        cwd=cwd or REPO_ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def pytest_configure(config):
    """Without a working bubblewrap, HumanEval refuses to run model code unless the user opts in to a
    weaker sandbox. The tests opt in the same way (BBJTUNE_SANDBOX) so that everything but the
    bubblewrap-specific attack tests still runs, and say so once."""
    if os.environ.get("BBJTUNE_SANDBOX") or not sys.platform.startswith("linux"):
        return
    from bbjtune.errors import BbjtuneError
    from bbjtune.evaluate.sandbox import detect_isolation

    try:
        detect_isolation("bwrap")
    except BbjtuneError as exc:
        for weaker in ("namespaces", "rlimits"):
            try:
                detect_isolation(weaker)
            except BbjtuneError:
                continue
            os.environ["BBJTUNE_SANDBOX"] = weaker
            print(
                f"note: {exc.message}; the sandbox tests use the weaker '{weaker}' mode "
                "(make test installs bubblewrap: apt-get install bubblewrap)",
                file=sys.stderr,
            )
            return
