"""A total memory cap for a sample's whole process tree, where no cgroup can be used.

rlimits are per process: six children of 900 MiB each stay under a "1 GiB" RLIMIT_AS. A cgroup
would cap the total, but cgroup v2 with a writable memory controller is often missing (containers,
hybrid v1 hosts), and delegating one to an unprivileged user needs systemd. So one watcher thread
(shared by every sample running in this process) reads /proc every POLL_S seconds, adds up the
anonymous resident memory (RSS minus file-backed and shared pages: what the sample allocated) of
every process below each sandbox's first process, and kills the whole tree once the sum passes the
limit. Each process also keeps RLIMIT_AS at the same limit, so one process can never go beyond
it, and the tree can overshoot only by what its processes allocate within one poll.

A sample may fork to hide from its parent, but an orphan is re-parented to the sandbox's own
init (the PID namespace's first process, or the reaper that sandbox.py installs), which is still
in the tree.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

POLL_S = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Watched:
    root_pid: int
    limit_bytes: int
    killed: bool = False
    peak_bytes: int = 0
    pids: set[int] = field(default_factory=set)


class TreeWatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, Watched] = {}
        self._thread: threading.Thread | None = None

    def watch(self, root_pid: int, limit_mb: int) -> Watched:
        entry = Watched(root_pid, limit_mb << 20)
        with self._lock:
            self._watched[root_pid] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="bbjtune-sandbox-memory", daemon=True)
                self._thread.start()
        return entry

    def unwatch(self, entry: Watched) -> None:
        with self._lock:
            self._watched.pop(entry.root_pid, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                entries = list(self._watched.values())
            if not entries:
                with self._lock:
                    if not self._watched:
                        self._thread = None
                        return
                continue
            parents = _parents()
            for entry in entries:
                check(entry, parents)
            time.sleep(POLL_S)


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process this machine's /proc shows."""
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                out[int(name)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def tree(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def anonymous_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            fields = fh.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def check(entry: Watched, parents: dict[int, int]) -> None:
    pids = tree(entry.root_pid, parents)
    entry.pids = pids
    total = sum(anonymous_bytes(pid) for pid in pids)
    entry.peak_bytes = max(entry.peak_bytes, total)
    if total > entry.limit_bytes and not entry.killed:
        entry.killed = True
        kill_tree(pids)


def kill_tree(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


WATCHER = TreeWatcher()
