"""HumanEval scoring: the reference solutions pass, wrong and hostile ones fail with a reason."""

from __future__ import annotations

import pytest

from bbjtune.evaluate.humaneval import (
    build_program,
    extract_solution,
    humaneval_requests,
    load_problems,
    score_humaneval,
)
from bbjtune.evaluate.sandbox import Limits

LIMITS = Limits(wall_s=8, cpu_s=4, memory_mb=512)


@pytest.fixture(scope="module")
def problems():
    return load_problems(12)


def rows_for(problems, solutions):
    return [
        {"suite": "humaneval", "id": p["task_id"], "sample": s, "code": code, "error": None}
        for p, codes in zip(problems, solutions)
        for s, code in enumerate(codes)
    ]


def test_the_package_ships_all_164_problems_in_order():
    all_problems = load_problems()
    assert len(all_problems) == 164
    assert [p["task_id"] for p in all_problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert len(load_problems(5)) == 5


def test_reference_solutions_pass_and_stubs_fail(problems):
    rows = rows_for(problems, [[p["canonical_solution"], "    return None\n"] for p in problems])
    scores, summary = score_humaneval(rows, "completion", LIMITS, [1, 2], workers=2)
    by = {(s["id"], s["sample"]): s for s in scores}
    for p in problems:
        assert by[(p["task_id"], 0)]["passed"], by[(p["task_id"], 0)]
        assert not by[(p["task_id"], 1)]["passed"]
    # every task has 1 of 2 samples right: pass@1 = 0.5, pass@2 = 1
    assert summary["pass_at_1"] == pytest.approx(0.5) and summary["pass_at_2"] == pytest.approx(1.0)
    assert summary["n_tasks"] == len(problems) and summary["statuses"]["passed"] == len(problems)


def test_a_hanging_answer_and_a_missing_answer_are_recorded_and_the_run_completes(problems):
    p0, p1, p2 = problems[:3]
    rows = [
        {
            "suite": "humaneval",
            "id": p0["task_id"],
            "sample": 0,
            "code": "    while True:\n        pass\n",
            "error": None,
        },
        {
            "suite": "humaneval",
            "id": p1["task_id"],
            "sample": 0,
            "code": "",
            "error": "cannot connect to server",
        },
        {
            "suite": "humaneval",
            "id": p2["task_id"],
            "sample": 0,
            "code": p2["canonical_solution"],
            "error": None,
        },
    ]
    scores, summary = score_humaneval(
        rows, "completion", Limits(wall_s=4, cpu_s=2, memory_mb=256), [1], workers=2
    )
    assert scores[0]["status"] in ("cpu_limit", "timeout") and not scores[0]["passed"]
    assert scores[1]["status"] == "no_answer" and "cannot connect" in scores[1]["reason"]
    assert scores[2]["passed"]
    assert summary["pass_at_1"] == pytest.approx(1 / 3, abs=1e-4)


def test_chat_answers_are_extracted_from_their_code_block(problems):
    p = problems[0]  # has_close_elements
    answer = (
        "Sure! Here is the function:\n\n```python\nfrom typing import List\n\n"
        f"def {p['entry_point']}(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
        "```\n\nIt compares every pair."
    )
    code = extract_solution(answer, p, "chat")
    assert code.startswith("from typing import List") and "Sure" not in code
    rows = [{"suite": "humaneval", "id": p["task_id"], "sample": 0, "code": code, "error": None}]
    scores, _ = score_humaneval(rows, "chat", LIMITS, [1], workers=1)
    assert scores[0]["passed"], scores[0]


def test_completion_answers_stop_at_the_next_top_level_statement(problems):
    p = problems[2]
    out = p["canonical_solution"] + "\n\ndef unrelated():\n    raise SystemExit(1)\n\nprint('hi')\n"
    code = extract_solution(out, p, "completion")
    assert "unrelated" not in code and code.strip() == p["canonical_solution"].strip()
    program = build_program(p, code, "completion")
    assert program.startswith(p["prompt"]) and program.rstrip().endswith(f"check({p['entry_point']})")


def test_requests_use_the_prompt_style(problems):
    chat = humaneval_requests(problems[:2], "chat", 300, system_prompt="You write code.")
    assert chat[0].messages[0] == {"role": "system", "content": "You write code."}
    assert problems[0]["prompt"] in chat[0].messages[1]["content"] and chat[0].max_new_tokens == 300
    completion = humaneval_requests(problems[:2], "completion", 300)
    assert completion[0].text == problems[0]["prompt"] and completion[0].messages is None
    assert "\ndef " in completion[0].stop
    assert completion[1].meta["suite"] == "humaneval" and completion[1].meta["id"] == "HumanEval/1"
