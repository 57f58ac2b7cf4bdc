"""Run untrusted Python (a model's HumanEval answer) in a separate, locked-down process.

Each program runs in its own process with
- limits set by `resource`: CPU seconds, address space, number of processes, file size, open files,
  no core dumps; and a wall-clock timeout after which the whole process tree is killed;
- no network: a fresh network namespace (`unshare --net`, only a loopback that is down);
- a fresh PID namespace, so killing its first process kills every process it started (a fork
  bomb cannot outlive its sample);
- a fresh mount namespace in which the project directory and the current directory are covered by
  an empty read-only tmpfs: the program cannot read or write the project;
- a private temporary directory as cwd, HOME and TMPDIR, removed afterwards; an empty environment;
  Python started with `-I -S -B` (no site-packages, no user site, no PYTHON* variables).

Who runs it: a normal user gets a user namespace as well (`unshare --user --map-root-user`), and
the process limit counts only that namespace's processes. root is exempt from the process limit,
so as root the program runs under an otherwise unused uid, one per parallel worker, from a block
of uids that this process alone holds (a lock file claims it), so evaluations running side by
side never kill each other's samples; this also keeps the program out of root-only files.

Fallback, when namespaces are not available (some containers forbid `unshare`): the same limits
and temp dir, its own session (the process group is killed afterwards), and the network blocked
inside Python by an audit hook that refuses socket use. That hook stops ordinary Python code but
not native code loaded through ctypes; the report says which isolation was in force.
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

SANDBOX_UID_BASE = 61000  # root only: sample processes run as 61000 + 256 * block + worker slot
SLOTS_PER_BLOCK = 256     # parallel workers one process may use
UID_BLOCKS = 64           # processes that may run samples side by side on one machine
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


@dataclass
class SandboxResult:
    status: str            # passed | failed | timeout | cpu_limit | memory_limit | process_limit | output_limit | error
    reason: str            # one line a person can read
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

    mode: str                              # "namespaces" or "rlimits"
    interpreter: str
    user_namespace: bool = False
    drop_to_uid: bool = False
    hidden: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""

    def describe(self) -> dict:
        network = "none (network namespace)" if self.mode == "namespaces" else "blocked by a Python audit hook"
        return {"mode": self.mode, "network": network, "interpreter": self.interpreter,
                "runs_as": "separate uid" if self.drop_to_uid else "current user",
                "project_hidden": bool(self.hidden) and self.mode == "namespaces", "note": self.note}


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
    for p in (getattr(sys, "_base_executable", None), sys.executable, shutil.which("python3"),
              "/usr/bin/python3", "/usr/local/bin/python3"):
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
    raise BbjtuneError(f"HumanEval cannot run here: {UID_BLOCKS} evaluations already run samples on this "
                       f"machine, or {lock_dir} is not writable",
                       "wait for the other evaluations to finish, or run this one with HumanEval off "
                       "(--no-humaneval)")


def detect_isolation(mode: str = "auto") -> Isolation:
    """The strongest isolation that works here, found by running a trivial program under it.

    `mode`: "auto" (namespaces when they work, else rlimits), "namespaces" or "rlimits".
    The environment variable BBJTUNE_SANDBOX overrides "auto".
    """
    mode = os.environ.get("BBJTUNE_SANDBOX", mode) if mode == "auto" else mode
    with _DETECT_LOCK:  # worker threads asking at once must not probe at once (probes share slot 0)
        return _detect(mode)


@functools.lru_cache(maxsize=None)
def _detect(mode: str) -> Isolation:
    is_root = os.geteuid() == 0
    unshare = shutil.which("unshare") if sys.platform.startswith("linux") else None
    tmp_root = os.path.realpath(tempfile.gettempdir())
    notes: list[str] = []
    failures: list[str] = []
    modes = {"auto": ["namespaces", "rlimits"], "namespaces": ["namespaces"], "rlimits": ["rlimits"]}[mode]
    for candidate_mode in modes:
        if candidate_mode == "namespaces" and not unshare:
            notes.append("unshare is not available")
            continue
        failures = []
        for interp in _interpreter_candidates():
            hide = tuple(p for p in _project_paths() if _safe_to_hide(p, [interp, tmp_root]))
            iso = Isolation(candidate_mode, interp, user_namespace=candidate_mode == "namespaces" and not is_root,
                            drop_to_uid=is_root, hidden=hide if candidate_mode == "namespaces" else (),
                            note="; ".join(notes)[:300])
            result = _run(iso, "print('ok')\n", Limits(wall_s=20), slot=0)
            if result.passed:
                return iso
            failures.append(f"{candidate_mode} with {interp}: {result.reason}")
        if candidate_mode == "namespaces":
            notes.append("namespaces failed: " + "; ".join(failures[-2:]))
    raise BbjtuneError("HumanEval cannot run here: no sandboxed Python process could be started",
                       "; ".join(notes + failures)[:400] or "check that python3 is installed")


def run_python(program: str, limits: Limits = Limits(), slot: int = 0, mode: str = "auto") -> SandboxResult:
    """Run one Python program in the sandbox; `slot` tells parallel workers apart."""
    return _run(detect_isolation(mode), program, limits, slot)


def _run(iso: Isolation, program: str, limits: Limits, slot: int) -> SandboxResult:
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
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        cfg = {"hide": list(iso.hidden) if iso.mode == "namespaces" else [], "uid": uid, "workdir": workdir,
               "program": prog_path, "interpreter": iso.interpreter, "env": env,
               "audit_hook": _AUDIT_HOOK if iso.mode == "rlimits" else "",
               "cpu_s": max(1, int(limits.cpu_s)), "memory_mb": limits.memory_mb,
               "file_size_mb": limits.file_size_mb, "max_open_files": limits.max_open_files,
               "max_processes": limits.max_processes}
        boot = [sys.executable, "-I", "-S", "-B", "-c", _BOOT, json.dumps(cfg)]
        if iso.mode == "namespaces":
            ns = ["--net", "--pid", "--fork", "--kill-child", "--mount"]
            if iso.user_namespace:
                ns = ["--user", "--map-root-user", *ns]
            boot = [shutil.which("unshare") or "unshare", *ns, *boot]
        out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(boot, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=workdir, env=env, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                if iso.mode == "rlimits":  # the waiting process kills the program's group and reaps it
                    _signal(proc.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=3)
            _kill_group(proc)  # namespaces: killing unshare tears the whole PID namespace down
            if uid is not None:
                _kill_uid(uid)
        stderr = _tail(err_path)
        return _classify(proc.returncode, timed_out, stderr, time.monotonic() - t0, limits)
    except OSError as exc:
        return SandboxResult("error", f"sandbox could not start the program: {exc}", None, time.monotonic() - t0)
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
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found = True
                    _signal(int(entry), signal.SIGKILL)
            except OSError:
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
        return result("timeout", f"killed after the {limits.wall_s:g} s wall-clock limit (endless loop or too slow)")
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
