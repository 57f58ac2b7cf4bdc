"""Run untrusted Python (a model's HumanEval answer) in a separate, locked-down process.

Isolation, strongest first (`detect_isolation` tries the one asked for by running a trivial program):
- `bwrap` (the default, and the only mode used without the user's consent): bubblewrap's read-only
  root, private /tmp, /var/tmp, /dev/shm and /proc, no network, no capabilities, the home and the
  project hidden, every process killed with the sandbox (see `bwrap.py`).
- `namespaces`: hand-made namespaces through `unshare` (network, PID, mount; the project covered by
  a tmpfs). Weaker: as a normal user the sample is root of its own user namespace and can unmount
  what hides the project, and the home, /tmp and /dev/shm stay visible.
- `rlimits`: no namespaces at all; the network is blocked inside Python by an audit hook, which
  native code (ctypes) and child programs (subprocess) bypass. Only the limits below hold.
When bubblewrap is missing or cannot start, HumanEval refuses to run unless the user opts in to a
weaker mode (`eval.humaneval.sandbox: namespaces` or `rlimits`, or BBJTUNE_SANDBOX).

In every mode: rlimits per process (CPU seconds, address space, processes, file size, open files, no
core dumps); a total memory cap over the sample's whole process tree (`treewatch.py`: cgroups are
not available to every user); a wall-clock timeout after which the whole tree is killed; an empty
environment; Python started with `-I -S -B`. As root the sample runs under an otherwise unused uid,
one per parallel worker, from a block of uids that this process alone holds (a lock file claims it),
so evaluations running side by side never kill each other's samples and root's files stay closed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.evaluate import bwrap
from bbjtune.evaluate.treewatch import WATCHER

SANDBOX_UID_BASE = 61000  # root only: sample processes run as 61000 + 256 * block + worker slot
SLOTS_PER_BLOCK = 256  # parallel workers one process may use
UID_BLOCKS = 64  # processes that may run samples side by side on one machine
OUTPUT_LIMIT_BYTES = 1 << 20
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    max_open_files: int = 64
    file_size_mb: int = 16
    tmpfs_mb: int = 64  # bwrap: size of each private /tmp, /var/tmp, /dev/shm (held in RAM)


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | cpu_limit | memory_limit | process_limit | output_limit | error
    reason: str  # one line a person can read
    returncode: int | None
    duration_s: float
    stderr_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can do on this machine (found once by trying it)."""

    mode: str  # "bwrap", "namespaces" or "rlimits"
    interpreter: str
    bwrap: str = ""
    user_namespace: bool = False
    drop_to_uid: bool = False
    hidden: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    def describe(self) -> dict:
        network = "blocked by a Python audit hook" if self.mode == "rlimits" else "none (network namespace)"
        return {
            "mode": self.mode,
            "network": network,
            "interpreter": self.interpreter,
            "runs_as": "separate uid" if self.drop_to_uid else "current user",
            "project_hidden": bool(self.hidden) and self.mode != "rlimits",
            "home_hidden": self.mode == "bwrap",
            "memory_cap": "whole process tree",
            "note": self.note,
        }


# The first Python code that runs in the child: hide the project, set limits, drop privileges,
# then exec the program. It runs with -I -S, so it imports nothing from the project.
_BOOT = r"""
import ctypes, json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
for path in cfg["hide"]:
    if libc.mount(b"none", path.encode(), b"tmpfs", 1, b"size=4k,mode=000") != 0:  # 1 = MS_RDONLY
        sys.stderr.write("sandbox: cannot hide %s (errno %d)\n" % (path, ctypes.get_errno()))
        os._exit(97)
if hasattr(libc, "prctl"):  # Linux: PR_SET_CHILD_SUBREAPER, orphans of the program come back to this process
    libc.prctl(36, 1, 0, 0, 0)
pid = os.fork()
if pid == 0:  # the program: own process group, limits, another uid (root only), exec
    try:
        os.setpgid(0, 0)
        mb = 1 << 20
        for name, soft in (("RLIMIT_CPU", cfg["cpu_s"]), ("RLIMIT_AS", cfg["memory_mb"] * mb),
                           ("RLIMIT_FSIZE", cfg["file_size_mb"] * mb), ("RLIMIT_NOFILE", cfg["max_open_files"]),
                           ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", cfg["max_processes"])):
            hard = soft + 1 if name == "RLIMIT_CPU" else soft
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        os.chdir(cfg["workdir"])
        argv = [cfg["interpreter"], "-I", "-S", "-B", cfg["program"]]
        if cfg["audit_hook"]:
            argv[-1:] = ["-c", "import sys\n" + cfg["audit_hook"] + "\n__file__ = %r\n"
                         "exec(compile(open(__file__).read(), __file__, 'exec'))\n" % cfg["program"]]
        os.execve(cfg["interpreter"], argv, cfg["env"])
    except BaseException as exc:
        sys.stderr.write("sandbox: cannot start the program: %r\n" % (exc,))
        os._exit(97)
signal.signal(signal.SIGTERM, lambda *_: os.killpg(pid, signal.SIGKILL))
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
# Kill and reap whatever the program left running, so nothing outlives it.
me, deadline = str(os.getpid()), time.monotonic() + 3
try:
    os.killpg(pid, signal.SIGKILL)
except OSError:
    pass
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG)[0]:
            continue
    except ChildProcessError:
        break
    for entry in (os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            if entry.isdigit() and open("/proc/%s/stat" % entry).read().rsplit(")", 1)[1].split()[1] == me:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError):
            pass
    time.sleep(0.005)
os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""

# Fallback network block: refuse every socket operation from Python code.
_AUDIT_HOOK = (
    "def _no_network(event, args):\n"
    "    if event.startswith('socket.') and event != 'socket.gethostname':\n"
    "        raise PermissionError('network access is disabled in the sandbox')\n"
    "sys.addaudithook(_no_network)"
)


def _project_paths() -> list[str]:
    """Directories the program must not see: this checkout and the directory bbjtune runs in."""
    paths = {os.path.realpath(os.getcwd())}
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").exists():
        paths.add(str(checkout))
    return sorted(paths)


def _safe_to_hide(path: str, keep: list[str]) -> bool:
    """Never cover /, a system directory, or a directory holding the interpreter or the temp dir."""
    if path in ("/", "/usr", "/bin", "/lib", "/lib64", "/etc", "/tmp", "/proc", "/dev", "/sys", "/var"):
        return False
    prefix = path.rstrip("/") + "/"
    return not any(k == path or k.startswith(prefix) for k in keep)


def _interpreter_candidates() -> list[str]:
    seen, out = set(), []
    for p in (
        getattr(sys, "_base_executable", None),
        sys.executable,
        shutil.which("python3"),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
    ):
        if p and os.path.exists(p):
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                out.append(real)
    return out


_DETECT_LOCK = threading.Lock()
_UID_LOCK = threading.Lock()
_uid_block: int | None = None
_uid_block_file = None  # kept open: the lock on it lasts as long as this process


def sandbox_uid(slot: int) -> int:
    """The uid a sample in worker `slot` runs under (root only).

    Every process that runs samples claims its own block of uids by locking a file, so two
    evaluations on one machine never share a uid: cleaning up after a sample kills every process
    of its uid, which must not hit a sample of the other evaluation.
    """
    global _uid_block, _uid_block_file
    if not 0 <= slot < SLOTS_PER_BLOCK:
        raise ValueError(f"sandbox slot {slot} is outside 0..{SLOTS_PER_BLOCK - 1}")
    with _UID_LOCK:
        if _uid_block is None:
            _uid_block, _uid_block_file = _claim_uid_block()
    return SANDBOX_UID_BASE + _uid_block * SLOTS_PER_BLOCK + slot


def _claim_uid_block() -> tuple[int, Any]:
    import fcntl

    lock_dir = os.path.join(tempfile.gettempdir(), "bbjtune-sandbox-uids")
    with contextlib.suppress(OSError):
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for block in range(UID_BLOCKS):
        try:
            fh = open(os.path.join(lock_dir, f"block-{block}.lock"), "a+")
        except OSError:
            break
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        return block, fh
    raise BbjtuneError(
        f"HumanEval cannot run here: {UID_BLOCKS} evaluations already run samples on this "
        f"machine, or {lock_dir} is not writable",
        "wait for the other evaluations to finish, or run this one with HumanEval off (--no-humaneval)",
    )


MODES = ("auto", "bwrap", "namespaces", "rlimits")
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
    "bubblewrap), or accept weaker isolation with eval.humaneval.sandbox: namespaces (or rlimits)"
)


def detect_isolation(mode: str = "auto") -> Isolation:
    """The isolation asked for, checked by running a trivial program under it.

    `mode`: "auto" or "bwrap" (bubblewrap; refused with a hint when it does not work), or one of
    the weaker modes "namespaces" and "rlimits", which only the user's explicit choice selects.
    The environment variable BBJTUNE_SANDBOX overrides "auto".
    """
    mode = os.environ.get("BBJTUNE_SANDBOX", mode) if mode == "auto" else mode
    if mode not in MODES:
        raise BbjtuneError(f"unknown sandbox mode {mode!r}", f"use one of {', '.join(MODES)}")
    with _DETECT_LOCK:  # worker threads asking at once must not probe at once (probes share slot 0)
        return _detect("bwrap" if mode == "auto" else mode)


@functools.lru_cache(maxsize=None)
def _detect(mode: str) -> Isolation:
    is_root = os.geteuid() == 0
    tmp_root = os.path.realpath(tempfile.gettempdir())
    failures: list[str] = []
    if mode == "bwrap":
        tool = bwrap.bwrap_path() if sys.platform.startswith("linux") else None
        if not tool:
            raise BbjtuneError(
                "HumanEval runs code the model wrote, and bubblewrap (bwrap), which isolates it, "
                "is not installed",
                INSTALL_HINT,
            )
    elif mode == "namespaces":
        tool = shutil.which("unshare") if sys.platform.startswith("linux") else None
        if not tool:
            raise BbjtuneError(
                "sandbox mode 'namespaces' needs unshare (util-linux), which is missing",
                "install util-linux, or use eval.humaneval.sandbox: rlimits",
            )
    else:
        tool = ""
    for interp in _interpreter_candidates():
        if mode == "bwrap":
            hide = tuple(bwrap.hidden_paths(_project_paths(), as_other_uid=is_root))
        elif mode == "namespaces":
            hide = tuple(p for p in _project_paths() if _safe_to_hide(p, [interp, tmp_root]))
        else:
            hide = ()
        iso = Isolation(
            mode,
            interp,
            bwrap=tool if mode == "bwrap" else "",
            user_namespace=mode == "namespaces" and not is_root,
            drop_to_uid=is_root,
            hidden=hide,
        )
        result = _run(iso, "print('ok')\n", Limits(wall_s=20), slot=0)
        if result.passed:
            return iso
        failures.append(f"{interp}: {result.reason}")
    if mode == "bwrap":
        raise BbjtuneError(
            "HumanEval runs code the model wrote, and bubblewrap cannot start a sandbox here "
            f"({'; '.join(failures[-2:])[:300]}); it needs unprivileged user namespaces or a setuid "
            "bwrap",
            "enable user namespaces (sysctl kernel.unprivileged_userns_clone=1), or accept "
            "weaker isolation with eval.humaneval.sandbox: namespaces (or rlimits)",
        )
    raise BbjtuneError(
        f"HumanEval cannot run here: no sandboxed Python process could be started in mode {mode}",
        "; ".join(failures)[:400] or "check that python3 is installed",
    )


def run_python(
    program: str, limits: Limits = Limits(), slot: int = 0, mode: str = "auto", pass_fds: tuple[int, ...] = ()
) -> SandboxResult:
    """Run one Python program in the sandbox; `slot` tells parallel workers apart; `pass_fds` stay open in it."""
    return _run(detect_isolation(mode), program, limits, slot, pass_fds)


def _command(iso: Isolation, cfg: dict, prog_path: str, limits: Limits) -> list[str]:
    boot = [iso.interpreter if iso.mode == "bwrap" else sys.executable, "-I", "-S", "-B", "-c", _BOOT]
    if iso.mode == "bwrap":
        return [
            *bwrap.command(iso.bwrap, iso.interpreter, prog_path, list(iso.hidden), limits.tmpfs_mb),
            *boot,
            json.dumps(cfg),
        ]
    if iso.mode == "namespaces":
        ns = ["--net", "--pid", "--fork", "--kill-child", "--mount"]
        if iso.user_namespace:
            ns = ["--user", "--map-root-user", *ns]
        return [shutil.which("unshare") or "unshare", *ns, *boot, json.dumps(cfg)]
    return [*boot, json.dumps(cfg)]


def _run(
    iso: Isolation, program: str, limits: Limits, slot: int, pass_fds: tuple[int, ...] = ()
) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="bbjtune-sandbox-")
    uid = sandbox_uid(slot) if iso.drop_to_uid else None
    t0 = time.monotonic()
    try:
        prog_path = os.path.join(workdir, "program.py")
        with open(prog_path, "w", encoding="utf-8") as fh:
            fh.write(program)
        os.chmod(prog_path, 0o644)
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        inside = iso.mode == "bwrap"  # bwrap: the program sees its own /tmp, and bwrap already runs as `uid`
        cfg = {
            "hide": list(iso.hidden) if iso.mode == "namespaces" else [],
            "uid": None if inside else uid,
            "workdir": bwrap.SAMPLE_DIR if inside else workdir,
            "program": bwrap.PROGRAM_PATH if inside else prog_path,
            "interpreter": iso.interpreter,
            "env": {**env, "HOME": bwrap.SAMPLE_DIR, "TMPDIR": bwrap.SAMPLE_DIR} if inside else env,
            "audit_hook": _AUDIT_HOOK if iso.mode == "rlimits" else "",
            "cpu_s": max(1, int(limits.cpu_s)),
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "max_open_files": limits.max_open_files,
            "max_processes": limits.max_processes,
        }
        drop = {"user": uid, "group": uid, "extra_groups": []} if inside and uid is not None else {}
        out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                _command(iso, cfg, prog_path, limits),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env,
                start_new_session=True,
                pass_fds=pass_fds,
                **drop,
            )
            watched = WATCHER.watch(proc.pid, limits.memory_mb)
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                if iso.mode == "rlimits":  # the waiting process kills the program's group and reaps it
                    _signal(proc.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=3)
            finally:
                WATCHER.unwatch(watched)
            _kill_group(
                proc
            )  # namespaces/bwrap: killing the first process tears the whole PID namespace down
            if uid is not None:
                _kill_uid(uid)
        stderr = _tail(err_path)
        if watched.killed and not timed_out:
            return SandboxResult(
                "memory_limit",
                f"its processes together used more than the {limits.memory_mb} MiB memory limit",
                proc.returncode,
                round(time.monotonic() - t0, 3),
                stderr[-TAIL_CHARS:],
            )
        return _classify(proc.returncode, timed_out, stderr, time.monotonic() - t0, limits)
    except OSError as exc:
        return SandboxResult(
            "error", f"sandbox could not start the program: {exc}", None, time.monotonic() - t0
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill_uid(uid: int, seconds: float = 3.0) -> None:
    """Kill every process left running under the sandbox uid (it runs nothing else)."""
    deadline = time.monotonic() + seconds
    while os.path.isdir("/proc") and time.monotonic() < deadline:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                # a zombie runs nothing; it waits for its parent (host init, when bwrap's own init
                # outlived the first bwrap process), which may reap only every few seconds
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue
                found = True
                _signal(int(entry), signal.SIGKILL)
            except (OSError, IndexError):
                continue
        if not found:
            return
        time.sleep(0.01)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill everything the program started (its process group), then reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        threading.Thread(target=proc.wait, daemon=True).start()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8 * TAIL_CHARS))
            return fh.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]
    except OSError:
        return ""


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _classify(rc: int | None, timed_out: bool, stderr: str, duration: float, limits: Limits) -> SandboxResult:
    last = _last_error_line(stderr)

    def result(status: str, reason: str) -> SandboxResult:
        return SandboxResult(status, reason, rc, round(duration, 3), stderr[-TAIL_CHARS:])

    if timed_out:
        return result(
            "timeout", f"killed after the {limits.wall_s:g} s wall-clock limit (endless loop or too slow)"
        )
    if rc == 0:
        return result("passed", "ok")
    if rc == 97 and last.startswith("sandbox:"):
        return result("error", last)
    signum = -rc if rc is not None and rc < 0 else (rc - 128 if rc and rc > 128 else None)
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and duration >= limits.cpu_s):
        return result("cpu_limit", f"stopped at the {limits.cpu_s} s CPU-time limit")
    if signum == signal.SIGXFSZ:
        return result("output_limit", f"wrote more than the {limits.file_size_mb} MiB file-size limit")
    if "MemoryError" in last or "Cannot allocate memory" in stderr[-500:]:
        return result("memory_limit", f"ran out of memory at the {limits.memory_mb} MiB limit")
    if "File too large" in last:
        return result("output_limit", f"wrote more than the {limits.file_size_mb} MiB file-size limit")
    if "Resource temporarily unavailable" in stderr or "BlockingIOError" in last:
        return result("process_limit", f"tried to start more than {limits.max_processes} processes")
    if signum:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        return result("failed", f"killed by signal {name}")
    return result("failed", last or f"exit code {rc}")
