"""The HumanEval sandbox: hostile programs are stopped within their limits and reported, nothing leaks.

Each test runs under both isolation modes where the machine allows: `namespaces` (network, PID and
mount namespaces) and the `rlimits` fallback for machines without unshare.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from bbjtune.errors import BbjtuneError
from bbjtune.evaluate.sandbox import (
    SLOTS_PER_BLOCK,
    Limits,
    SandboxResult,
    detect_isolation,
    run_python,
    sandbox_uid,
)


def _available(mode: str) -> bool:
    try:
        return detect_isolation(mode).mode == mode
    except BbjtuneError:
        return False


MODES = [
    pytest.param(
        m, marks=pytest.mark.skipif(not _available(m), reason=f"sandbox mode '{m}' does not work here")
    )
    for m in ("bwrap", "namespaces", "rlimits")
]
FAST = Limits(wall_s=6, cpu_s=2, memory_mb=256, max_processes=16)


def run(program: str, mode: str, limits: Limits = FAST) -> tuple[SandboxResult, float]:
    t0 = time.monotonic()
    result = run_python(program, limits, mode=mode)
    return result, time.monotonic() - t0


def _leftover_programs() -> list[str]:
    """Sample processes of this test process still running. As root every process that runs samples
    has its own block of sandbox uids (`sandbox_uid`), so samples of other evaluations running at the
    same time on a shared machine are not counted; without root every sample runs under the caller's
    uid and all are counted."""
    mine = {sandbox_uid(slot) for slot in range(SLOTS_PER_BLOCK)} if os.geteuid() == 0 else None
    out = subprocess.run(["ps", "-eo", "pid=,uid=,args="], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        pid, uid, args = (line.split(None, 2) + ["", "", ""])[:3]
        if (
            "bbjtune-sandbox-" in args
            and "program.py" in args
            and "ps -eo" not in args
            and (mine is None or (uid.isdigit() and int(uid) in mine))
        ):
            found.append(line)
    return found


@pytest.mark.parametrize("mode", MODES)
def test_a_correct_program_passes_and_a_failing_one_says_why(mode):
    ok, _ = run("assert sum(range(4)) == 6\nprint('fine')\n", mode)
    assert ok.status == "passed" and ok.returncode == 0
    bad, _ = run("def f():\n    return 1\nassert f() == 2, 'f is wrong'\n", mode)
    assert bad.status == "failed" and "AssertionError: f is wrong" in bad.reason


@pytest.mark.parametrize("mode", MODES)
def test_an_infinite_loop_is_stopped_by_the_cpu_limit(mode):
    # a generous wall clock: on a loaded machine 2 CPU-seconds can take several wall seconds
    limits = Limits(wall_s=30, cpu_s=2, memory_mb=256, max_processes=16)
    result, seconds = run("while True:\n    pass\n", mode, limits)
    assert result.status == "cpu_limit", result
    assert seconds < limits.wall_s


@pytest.mark.parametrize("mode", MODES)
def test_a_sleeping_program_is_killed_at_the_wall_clock_limit(mode):
    limits = Limits(wall_s=2, cpu_s=10, memory_mb=256)
    result, seconds = run("import time\ntime.sleep(60)\n", mode, limits)
    assert result.status == "timeout" and "2 s wall-clock" in result.reason
    assert 1.9 < seconds < 6


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind(mode):
    marker = f"forkbomb_{mode}_{os.getpid()}"
    program = f"import os\n{marker} = 1\nwhile True:\n    os.fork()\n"
    result, seconds = run(program, mode)
    assert result.status in ("process_limit", "cpu_limit", "timeout"), result
    assert seconds < FAST.wall_s + 3
    time.sleep(0.3)
    # the program file is gone with its temp dir; no process may still run from it
    assert not _leftover_programs()


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_reports_the_process_limit(mode):
    result, _ = run(
        "import os\nfor _ in range(200):\n    os.fork()\n",
        mode,
        Limits(wall_s=8, cpu_s=4, memory_mb=256, max_processes=8),
    )
    assert result.status == "process_limit" and "8 processes" in result.reason, result


@pytest.mark.parametrize("mode", MODES)
def test_a_memory_hog_hits_the_memory_limit(mode):
    result, seconds = run("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n", mode)
    assert result.status == "memory_limit" and "256 MiB" in result.reason
    assert seconds < FAST.wall_s


@pytest.mark.parametrize("mode", MODES)
def test_a_program_printing_forever_hits_the_output_limit(mode):
    result, _ = run("while True:\n    print('x' * 1000)\n", mode, Limits(wall_s=6, cpu_s=4, file_size_mb=1))
    assert result.status == "output_limit"


@pytest.mark.parametrize("mode", MODES)
def test_the_network_is_unreachable(mode):
    program = "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', 9))\n"
    result, _ = run(program, mode)
    assert result.status == "failed"
    assert any(word in result.reason for word in ("unreachable", "refused", "disabled", "Errno"))
    if mode == "namespaces":
        # even the loopback is down in a fresh network namespace
        assert "Network is unreachable" in result.reason or "Cannot assign" in result.reason


@pytest.mark.parametrize("mode", [m for m in MODES if m.values[0] == "namespaces"])
def test_the_project_is_hidden_from_the_program(mode):
    target = REPO_ROOT / "pyproject.toml"
    assert target.exists()
    result, _ = run(f"print(open({str(target)!r}).read()[:20])\n", mode)
    assert result.status == "failed" and (
        "No such file" in result.reason or "Permission denied" in result.reason
    )
    cwd, _ = run(
        "import os\nassert os.getcwd().startswith(os.environ['HOME'])\nassert 'bbjtune' not in str(os.listdir('.'))\n",
        mode,
    )
    assert cwd.passed, cwd


def test_the_program_cannot_import_the_project():
    result = run_python("import bbjtune\n", FAST)
    assert result.status == "failed" and "ModuleNotFoundError" in result.reason


def test_isolation_is_described_for_the_report():
    info = detect_isolation().describe()
    assert info["mode"] == os.environ.get("BBJTUNE_SANDBOX", "bwrap") and info["interpreter"]
    assert info["home_hidden"] == (info["mode"] == "bwrap")
    assert sys.platform != "linux" or info["network"]


@pytest.mark.parametrize("mode", MODES)
def test_a_detached_child_does_not_outlive_its_program(mode):
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"  # leave the process group, as a daemon would
        "    time.sleep(60)\n"
    )
    result, _ = run(program, mode)
    assert result.status == "passed"
    time.sleep(0.3)
    assert not _leftover_programs()


def test_many_workers_starting_at_once_all_get_a_working_sandbox():
    # The first samples of a HumanEval run reach the sandbox together from every worker thread;
    # they must share one probe, not run 16 probes that clean up after each other.
    from bbjtune.evaluate import sandbox
    from bbjtune.evaluate.humaneval import run_programs

    sandbox._detect.cache_clear()
    results = run_programs(["print('ok')\n"] * 48, Limits(wall_s=20), workers=16)
    assert [r.status for r in results] == ["passed"] * 48


@pytest.mark.skipif(
    os.geteuid() != 0, reason="samples run under their own uid only when bbjtune runs as root"
)
def test_two_evaluations_on_one_machine_use_different_uids():
    from bbjtune.evaluate.sandbox import sandbox_uid

    mine = {sandbox_uid(slot) for slot in range(4)}
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bbjtune.evaluate.sandbox import sandbox_uid\nprint(*(sandbox_uid(s) for s in range(4)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert len(mine) == 4 and len(other) == 4 and not mine & {int(u) for u in other}


@pytest.mark.skipif(
    os.geteuid() != 0, reason="samples run under their own uid only when bbjtune runs as root"
)
def test_a_sample_of_another_evaluation_survives_this_one_cleaning_up():
    # Cleaning up after a sample kills every process of its uid; a second evaluation running
    # side by side on the same machine (another process) must not lose its samples to that.
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from bbjtune.evaluate.sandbox import Limits, run_python\n"
            "r = run_python('import time\\ntime.sleep(3)\\nprint(1)\\n', Limits(wall_s=20))\n"
            "print(r.status, r.reason)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the other sample is sleeping now
    for _ in range(5):
        assert run_python("print('ok')\n", Limits(wall_s=20)).status == "passed"
    out, _ = other.communicate(timeout=60)
    assert out.startswith("passed"), out


def test_without_bubblewrap_untrusted_code_is_refused_unless_the_user_opts_in(monkeypatch):
    from bbjtune.evaluate import bwrap, sandbox

    monkeypatch.setattr(bwrap, "bwrap_path", lambda: None)
    monkeypatch.delenv("BBJTUNE_SANDBOX", raising=False)
    sandbox._detect.cache_clear()
    try:
        with pytest.raises(BbjtuneError) as refused:
            detect_isolation("auto")
        message = str(refused.value)
        assert "bubblewrap" in message and "apt-get install bubblewrap" in message
        assert "eval.humaneval.sandbox: namespaces" in message  # the named setting that opts in
        assert detect_isolation("rlimits").mode == "rlimits"  # ... and opting in works
        with pytest.raises(BbjtuneError, match="unknown sandbox mode"):
            detect_isolation("none")
    finally:
        sandbox._detect.cache_clear()


def test_the_sandbox_setting_is_validated_in_the_config():
    from pydantic import ValidationError

    from bbjtune.config import HumanEvalConfig

    assert HumanEvalConfig().sandbox == "auto"
    assert HumanEvalConfig(sandbox="rlimits").sandbox == "rlimits"
    with pytest.raises(ValidationError):
        HumanEvalConfig(sandbox="off")


def test_bbjtune_may_run_from_a_directory_the_sandbox_uid_cannot_enter(tmp_path):
    # pytest's own temp dirs (and many home directories) are 0700: as root the sandbox runs under
    # another uid, which must not need to reach the directory bbjtune runs in
    inner = tmp_path / "private" / "work"
    inner.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    code = (
        "from bbjtune.evaluate.sandbox import run_python\n"
        "r = run_python('import os\\nprint(os.listdir(\".\"))\\n')\nprint(r.status, r.reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=inner, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.stdout.startswith("passed"), out.stdout + out.stderr


def test_the_eval_command_takes_the_sandbox_choice_and_checks_it(tmp_path):
    from conftest import run_cli

    bad = run_cli(
        "eval", "--model", "tiny:test", "--sandbox", "none", "--out", str(tmp_path), cwd=tmp_path, timeout=120
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "sandbox" in bad.stderr, bad.stderr


def test_eval_refuses_before_generating_when_no_sandbox_works(tmp_path, monkeypatch):
    # an hour of generation must not end in "cannot score HumanEval": the check comes first
    from bbjtune.config import EvalConfig
    from bbjtune.evaluate import bwrap, sandbox
    from bbjtune.evaluate.run import evaluate_model
    from bbjtune.evaluate.suite import load_suite

    suite = tmp_path / "mini.jsonl"
    suite.write_text(
        '{"id": "x", "prompt": "Print hello in BBj.", "category": "strings", "generation": "character", '
        '"task": "write", "expect": {}, "reference": "print 1"}\n'
    )
    monkeypatch.setattr(bwrap, "bwrap_path", lambda: None)
    monkeypatch.delenv("BBJTUNE_SANDBOX", raising=False)
    sandbox._detect.cache_clear()

    def must_not_load():
        raise AssertionError("the model was loaded although HumanEval could not be scored")

    try:
        with pytest.raises(BbjtuneError, match="bubblewrap"):
            evaluate_model(
                "tiny",
                tmp_path / "out",
                must_not_load,
                {"backend": "transformers"},
                [load_suite(suite)],
                EvalConfig.model_validate({"humaneval": {"limit": 1}}),
                humaneval_style="completion",
            )
    finally:
        sandbox._detect.cache_clear()
