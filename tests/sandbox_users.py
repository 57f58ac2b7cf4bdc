"""Run a piece of test code as root (in this process) and as an unprivileged user (nobody, via setpriv).

The unprivileged run uses the system's own Python with this checkout's src/ and the installed
packages on its path, because the test's interpreter may live under root's home, which nobody
cannot enter. The code prints one JSON line; both runs return the parsed value.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

USERS = ["current", "nobody"]


def _system_python() -> str | None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for path in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(path):
            return path
    return None


def unprivileged_reason() -> str | None:
    """Why the unprivileged run cannot happen here (None when it can)."""
    if os.geteuid() != 0:
        return None  # already unprivileged: the "current" run covers it
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is missing"
    if not _system_python():
        return f"no system python{sys.version_info.major}.{sys.version_info.minor} for the unprivileged user"
    return None


def run_as(
    user: str,
    code: str,
    home: Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: int = 300,
    cwd: Path | None = None,
) -> dict:
    """Run `code` (which prints one JSON line last) as `user`; returns that JSON."""
    if user == "nobody" and os.geteuid() != 0:
        pytest.skip("these tests already run unprivileged (see the 'current' variant)")
    if user == "nobody" and unprivileged_reason():
        pytest.skip(f"cannot run as an unprivileged user: {unprivileged_reason()}")
    # this checkout first, then wherever this interpreter finds its packages (a venv, or PYTHONPATH)
    paths = [
        str(REPO_ROOT / "src"),
        str(REPO_ROOT / "tests"),
        *site.getsitepackages(),
        *(p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p),
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(paths),
        "LANG": "C.UTF-8",
        "HOME": str(home) if home else tempfile.gettempdir(),
        **(extra_env or {}),
    }
    if os.environ.get("BBJTUNE_SANDBOX"):  # the weaker mode conftest opted in to, where bubblewrap cannot run
        env["BBJTUNE_SANDBOX"] = os.environ["BBJTUNE_SANDBOX"]
    if user == "nobody":
        argv = [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            _system_python(),
            "-c",
            code,
        ]
    else:
        argv = [sys.executable, "-c", code]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd or tempfile.gettempdir(),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_home(user: str) -> Path:
    """A fresh home directory owned by `user` (0700, as a real home), in the system temp dir so
    that an unprivileged user can reach it. The caller removes it."""
    home = Path(tempfile.mkdtemp(prefix="bbjtune-test-home-"))
    if user == "nobody" and os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("nobody")
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return home
