"""The bubblewrap (`bwrap`) command line that isolates one untrusted program.

bubblewrap is a small, widely audited sandbox tool (it isolates Flatpak applications) packaged by
Debian and most distributions. bbjtune builds on it instead of setting up namespaces by hand:

- a read-only view of the root file system, with the user's home, /root, /run, /mnt, /media, the
  project and the directory bbjtune runs in covered by empty file systems;
- fresh, size-capped /tmp, /var/tmp and /dev/shm that vanish with the sample; a fresh /dev; a fresh
  /proc that shows only the sample's own processes;
- new user, PID, network (loopback only, down), IPC, UTS and cgroup namespaces; no capabilities;
  no nested user namespaces (so the sample cannot become "root" in one of its own and unmount what
  hides the project);
- `--die-with-parent` and a PID namespace: when the sandbox's first process ends or bbjtune dies,
  the kernel kills every process the sample started;
- an empty environment apart from PATH, HOME, TMPDIR and LANG.

It needs unprivileged user namespaces (or a setuid bwrap); `sandbox.detect_isolation` finds out
by running a trivial program, and refuses to run samples when that fails.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

SAMPLE_DIR = "/tmp"  # cwd, HOME and TMPDIR inside the sandbox
PROGRAM_PATH = "/tmp/.bbjtune-program.py"
HIDDEN_SYSTEM_DIRS = ("/home", "/root", "/run", "/mnt", "/media", "/srv")
FRESH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # replaced by empty, size-capped file systems


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)), None
    )


@functools.cache
def _supports(bwrap: str, option: str) -> bool:
    """Whether this bwrap knows `option` (older releases lack --disable-userns and --size)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out.stdout + out.stderr


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _others_can_reach(path: str) -> bool:
    """Whether a uid with no relation to the owners (the sandbox uid under root) can look up `path`."""
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(parent)
    return True


def hidden_paths(project_paths: list[str], as_other_uid: bool = False) -> list[str]:
    """Directories the sample must not see: system places for people's files, home, the project.

    `as_other_uid` (root runs bwrap under a separate uid): a directory that uid cannot even look up
    is unreadable to the sample anyway, and bwrap could not cover it, so it is left out."""
    paths = [p for p in HIDDEN_SYSTEM_DIRS if os.path.isdir(p)]
    home = os.path.expanduser("~")
    # under /tmp, /var/tmp and /dev/shm a path is gone anyway (fresh file systems), and bwrap, running
    # as the sandbox's uid, may not even be allowed to reach it to cover it (a 0700 pytest directory)
    replaced = [os.path.realpath(p) for p in FRESH_DIRS]
    for extra in [home, *project_paths]:
        real = os.path.realpath(extra)
        if (
            os.path.isdir(real)
            and real not in ("/", "/usr", "/etc")
            and not any(_under(real, p) for p in paths + replaced)
            and (not as_other_uid or _others_can_reach(real))
        ):
            paths.append(real)
    return paths


def command(bwrap: str, interpreter: str, program_file: str, hide: list[str], tmpfs_mb: int) -> list[str]:
    """The bwrap arguments up to (not including) the command run inside."""
    size = ["--size", str(tmpfs_mb << 20)] if _supports(bwrap, "--size") else []
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        "--unshare-user",
        "--cap-drop",
        "ALL",
    ]
    if _supports(bwrap, "--disable-userns"):
        args.append("--disable-userns")
    args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for path in hide:
        args += ["--tmpfs", path, "--remount-ro", path]
    for path in FRESH_DIRS:
        if path != "/var/tmp" or os.path.isdir(path):
            args += [*size, "--tmpfs", path]
    # an interpreter living under a hidden directory (pyenv in the home) is shown again, read-only
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(interpreter)))
    if any(_under(prefix, h) for h in hide):
        args += ["--ro-bind", prefix, prefix]
    args += [
        "--ro-bind",
        program_file,
        PROGRAM_PATH,
        "--chdir",
        SAMPLE_DIR,
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    for key, value in (
        ("PATH", "/usr/bin:/bin"),
        ("HOME", SAMPLE_DIR),
        ("TMPDIR", SAMPLE_DIR),
        ("LANG", "C.UTF-8"),
        ("PYTHONHASHSEED", "0"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ):
        args += ["--setenv", key, value]
    return args
