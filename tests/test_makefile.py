"""`make test`'s browser-test step says what it installs and why before it runs apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _fake_apt_get(tmp_path: Path, exit_code: int = 0) -> dict[str, str]:
    """A PATH whose apt-get prints how it was called (the real one would install chromium system-wide)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\necho \"APT-GET $*\" >&2\nexit {exit_code}\n")  # make hides apt's stdout
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _make(env: dict[str, str], *args: str) -> list[str]:
    proc = subprocess.run(["make", "-s", "--no-print-directory", "browser-test-deps", "CHROMIUM=/nonexistent/chromium",
                           *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


@pytest.fixture
def no_chromium():
    if shutil.which("chromium"):
        pytest.skip("chromium is installed on this machine, so make has nothing to install")
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("not root and no password-less sudo: make skips the install (its note is tested below)")


def test_says_what_and_why_before_apt_get(tmp_path, no_chromium):
    out = _make(_fake_apt_get(tmp_path))
    apt = [i for i, line in enumerate(out) if line.startswith("APT-GET")]
    assert apt, out
    before = " ".join(out[:apt[0]])
    assert "browser test drives Debian's chromium, which is not installed" in before
    assert "apt-get install -y chromium" in before and "BROWSER_TEST=no" in before
    assert out[apt[0]].split()[1:] == ["install", "-y", "-qq", "chromium"]


def test_a_failed_install_says_it_updates_the_lists_then_that_the_test_will_be_skipped(tmp_path, no_chromium):
    out = _make(_fake_apt_get(tmp_path, exit_code=100))
    text = "\n".join(out)
    assert "running 'apt-get update' and trying again" in text
    assert text.index("running 'apt-get update'") < text.index("APT-GET update")
    assert out[-1] == "note: could not install chromium (apt-get's error is above): the browser test will be skipped"


def test_browser_test_no_installs_nothing(tmp_path):
    out = _make(_fake_apt_get(tmp_path), "BROWSER_TEST=no")
    assert not any(line.startswith("APT-GET") for line in out)
    assert out == ["note: BROWSER_TEST=no: chromium is not installed by make (the browser test skips without it)"]


def _fake_python(tmp_path: Path, has_llama_cpp: bool) -> Path:
    """An interpreter stand-in: imports succeed except llama_cpp; pip records its call and takes 2.5 s for llama."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1" = -c ]; then case "$2" in *llama_cpp*) exit ' + ("0" if has_llama_cpp else "1")
                    + ";; esac; exit 0; fi\n"
                    'echo "PIP $*"\n'
                    'case "$*" in *export*) sleep 2.5;; esac\n')
    fake.chmod(0o755)
    return fake


def _install(tmp_path: Path, has_llama_cpp: bool) -> list[str]:
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-s", "--no-print-directory", f"{venv}/.installed", f"VENV={venv}",
                           f"PY={_fake_python(tmp_path, has_llama_cpp)}", "HEARTBEAT=1"],
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout
    assert (venv / ".installed").exists()
    return proc.stdout.splitlines()


def test_install_announces_the_llama_cpp_compile_and_reports_while_it_runs(tmp_path):
    (tmp_path / "venv").mkdir()
    out = _install(tmp_path, has_llama_cpp=False)
    pips = [i for i, line in enumerate(out) if line.startswith("PIP -m pip install -q -e")]
    assert [out[i] for i in pips] == ["PIP -m pip install -q -e .[eval,review,qlora-cpu,tensorboard]",
                                     "PIP -m pip install -q -e .[eval,export,review,qlora-cpu,tensorboard]"]
    between = " ".join(out[pips[0] + 1:pips[1]])
    assert "this compiles llama.cpp from source, about 9 CPU-minutes" in between
    assert any(line.startswith("  ... still installing llama-cpp-python (") for line in out[pips[1]:])


def test_install_says_nothing_of_a_compile_when_llama_cpp_is_there(tmp_path):
    (tmp_path / "venv").mkdir()
    out = _install(tmp_path, has_llama_cpp=True)
    assert not any("compiles llama.cpp" in line for line in out)
