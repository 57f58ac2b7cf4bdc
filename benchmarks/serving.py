"""Start `bbjtune serve ...` as its own process for a benchmark, and wait until it answers.

The server runs this checkout's code (PYTHONPATH=src), as the benchmark itself does, whatever
bbjtune the environment has installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bbjtune(args: list[str], ready_url: str, timeout: float = 300) -> subprocess.Popen:
    """`python -m bbjtune ARGS` in the background, once GET `ready_url` answers 200; exits the benchmark
    with one line when the server stops or does not get there within `timeout` seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bbjtune", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(ready_url, timeout=2, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"`bbjtune {' '.join(args[:2])}` did not start (run it by hand to see why)")
        time.sleep(0.3)
