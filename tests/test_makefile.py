"""`make test`'s browser-test step says what it installs and why before it runs apt-get."""

from __future__ import annotations

import os
import re
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
    fake.write_text(f'#!/bin/sh\necho "APT-GET $*" >&2\nexit {exit_code}\n')  # make hides apt's stdout
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _run_make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`make -s ARGS` in the project, stdout and stderr together (the order the user sees them)."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def _make(env: dict[str, str], *args: str) -> list[str]:
    proc = _run_make(env, "browser-test-deps", "CHROMIUM=/nonexistent/chromium", *args)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


@pytest.fixture
def no_chromium():
    if shutil.which("chromium"):
        pytest.skip("chromium is installed on this machine, so make has nothing to install")
    if (
        os.geteuid() != 0
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode != 0
    ):
        pytest.skip("not root and no password-less sudo: make skips the install (its note is tested below)")


def test_says_what_and_why_before_apt_get(tmp_path, no_chromium):
    out = _make(_fake_apt_get(tmp_path))
    apt = [i for i, line in enumerate(out) if line.startswith("APT-GET")]
    assert apt, out
    before = " ".join(out[: apt[0]])
    assert "browser test drives Debian's chromium, which is not installed" in before
    assert "apt-get install -y chromium" in before and "BROWSER_TEST=no" in before
    assert out[apt[0]].split()[1:] == ["install", "-y", "-qq", "chromium"]


def test_a_failed_install_says_it_updates_the_lists_then_that_the_test_will_be_skipped(tmp_path, no_chromium):
    out = _make(_fake_apt_get(tmp_path, exit_code=100))
    text = "\n".join(out)
    assert "running 'apt-get update' and trying again" in text
    assert text.index("running 'apt-get update'") < text.index("APT-GET update")
    assert (
        out[-1]
        == "note: could not install chromium (apt-get's error is above): the browser test will be skipped"
    )


def test_browser_test_no_installs_nothing(tmp_path):
    out = _make(_fake_apt_get(tmp_path), "BROWSER_TEST=no")
    assert not any(line.startswith("APT-GET") for line in out)
    assert out == [
        "note: BROWSER_TEST=no: chromium is not installed by make (the browser test skips without it)"
    ]


def _fake_python(tmp_path: Path, has_llama_cpp: bool, pip_fails: bool = False) -> Path:
    """An interpreter stand-in: imports succeed except llama_cpp; pip records its call, takes 2.5 s for llama.cpp."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -c ]; then case "$2" in *llama_cpp*) exit '
        + ("0" if has_llama_cpp else "1")
        + ";; esac; exit 0; fi\n"
        'echo "PIP $*"\n'
        'case "$*" in *export*|*llama-cpp-python*) sleep 2.5; exit '
        + ("1" if pip_fails else "0")
        + ";; esac\n"
    )
    fake.chmod(0o755)
    return fake


def _make_target(tmp_path: Path, target: str, python: Path) -> tuple[int, list[str]]:
    venv = tmp_path / "venv"
    # `make demo` first runs sandbox-deps, which installs bubblewrap system-wide when it is missing:
    # a bwrap on PATH makes that step a no-op here (the fake python says the sandbox works)
    bin_dir = tmp_path / "sandbox-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "bwrap").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "bwrap").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = _run_make(env, target.format(venv=venv), f"VENV={venv}", f"PY={python}", "HEARTBEAT=1")
    return proc.returncode, proc.stdout.splitlines()


def _install(tmp_path: Path, has_llama_cpp: bool) -> list[str]:
    (tmp_path / "venv").mkdir()
    code, out = _make_target(tmp_path, "{venv}/.installed", _fake_python(tmp_path, has_llama_cpp))
    assert code == 0, out
    assert (tmp_path / "venv" / ".installed").exists()
    return out


def test_install_announces_the_llama_cpp_compile_and_reports_while_it_runs(tmp_path):
    out = _install(tmp_path, has_llama_cpp=False)
    pips = [i for i, line in enumerate(out) if line.startswith("PIP -m pip install -q -e")]
    assert [out[i] for i in pips] == [
        "PIP -m pip install -q -e .[eval,review,qlora-cpu,tensorboard]",
        "PIP -m pip install -q -e .[eval,export,review,qlora-cpu,tensorboard]",
    ]
    between = " ".join(out[pips[0] + 1 : pips[1]])
    assert "installing it compiles llama.cpp from source, about 9 CPU-minutes" in between
    assert any(line.startswith("  ... still installing llama-cpp-python (") for line in out[pips[1] :])


def test_install_says_nothing_of_a_compile_when_llama_cpp_is_there(tmp_path):
    out = _install(tmp_path, has_llama_cpp=True)
    assert not any("compiles llama.cpp" in line for line in out)


def _fake_bbjtune(venv: Path) -> None:
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "bbjtune"
    fake.write_text('#!/bin/sh\necho "BBJTUNE $*"\ncase "$*" in *data,train,eval*) sleep 0.5;; esac\n')
    fake.chmod(0o755)


def test_demo_builds_llama_cpp_while_it_trains_and_exports_after(tmp_path):
    _fake_bbjtune(tmp_path / "venv")
    code, out = _make_target(tmp_path, "demo", _fake_python(tmp_path, has_llama_cpp=False))
    assert code == 0, out
    runs = [line for line in out if line.startswith("BBJTUNE")]
    assert runs == [
        "BBJTUNE run quickstart --stages data,train,eval",
        "BBJTUNE run quickstart --stages export",
    ]
    text = "\n".join(out)
    assert text.index("building it in the background while the demo trains") < text.index(runs[0])
    assert (
        text.index(runs[0])
        < text.index("waiting for the llama.cpp build before the GGUF export")
        < text.index("  ... still compiling llama.cpp (")
        < text.index(runs[1])
    )
    log = (tmp_path / "venv" / "llama-cpp-build.log").read_text()
    assert "PIP -m pip install -q llama-cpp-python[server]>=0.3.8" in log
    assert (tmp_path / "venv" / ".installed").exists()


def test_demo_stops_before_the_export_when_llama_cpp_does_not_build(tmp_path):
    _fake_bbjtune(tmp_path / "venv")
    code, out = _make_target(tmp_path, "demo", _fake_python(tmp_path, has_llama_cpp=False, pip_fails=True))
    assert code != 0
    assert "BBJTUNE run quickstart --stages export" not in out
    assert any("llama-cpp-python did not build: see" in line for line in out)


def test_demo_runs_in_one_go_when_llama_cpp_is_installed(tmp_path):
    _fake_bbjtune(tmp_path / "venv")
    code, out = _make_target(tmp_path, "demo", _fake_python(tmp_path, has_llama_cpp=True))
    assert code == 0, out
    assert [line for line in out if line.startswith("BBJTUNE")] == ["BBJTUNE run quickstart"]


def test_the_makefile_names_the_llama_cpp_requirement_of_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    match = re.search(r"^LLAMA_CPP_REQ = (.+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert match and extras["export"] == [match.group(1).strip()]
