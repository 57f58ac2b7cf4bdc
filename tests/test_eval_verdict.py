"""HumanEval verdicts come from the judge, never from the sample: seven ways to fake a pass all fail.

Each wrong answer to HumanEval/0 below was scored as a pass when the verdict was the program's exit
code. They run through the real scoring path (`score_humaneval`), as root and as an unprivileged user.
"""

from __future__ import annotations

import json
import shutil

import pytest
from sandbox_users import USERS, make_home, run_as

WRONG = "def has_close_elements(numbers, threshold):\n    return None\n"
ATTACKS = {
    "sys.exit(0)": "import sys\n" + WRONG + "sys.exit(0)\n",
    "raise SystemExit(0)": WRONG + "raise SystemExit(0)\n",
    "os._exit(0)": "def has_close_elements(numbers, threshold):\n    import os\n    os._exit(0)\n",
    "atexit hook": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG,
    "sys.excepthook": "import os, sys\nsys.excepthook = lambda *args: os._exit(0)\n" + WRONG,
    "__main__ block that exits": WRONG + "if __name__ == '__main__':\n    import sys\n    sys.exit(0)\n",
    "== is always true": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n"
        "def has_close_elements(numbers, threshold):\n    return Anything()\n"
    ),
}
RIGHT = (
    "def has_close_elements(numbers, threshold):\n"
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
)

SCORE = """
import json, sys
from bbjtune.evaluate.humaneval import score_humaneval
from bbjtune.evaluate.sandbox import Limits
answers = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.loads(%r)
rows = [{"suite": "humaneval", "id": "HumanEval/0", "sample": i, "code": code, "error": None}
        for i, code in enumerate(answers.values())]
scores, summary = score_humaneval(rows, "chat", Limits(wall_s=20, cpu_s=10, memory_mb=512), [1], workers=2)
print(json.dumps({name: s for name, s in zip(answers, scores)}))
"""


@pytest.fixture(scope="module", params=USERS)
def verdicts(request):
    home = make_home(request.param)
    try:
        yield run_as(request.param, SCORE % json.dumps({**ATTACKS, "right": RIGHT}), home=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_wrong_answer_that_fakes_a_pass_fails(verdicts, attack):
    score = verdicts[attack]
    assert not score["passed"] and score["status"] == "failed", score
    assert score["reason"], score


def test_the_right_answer_still_passes(verdicts):
    assert verdicts["right"]["passed"], verdicts["right"]


def test_the_reasons_say_what_happened(verdicts):
    assert "before the tests finished" in verdicts["os._exit(0)"]["reason"]
    assert "not plain data" in verdicts["== is always true"]["reason"]


def test_answers_are_plain_data_with_their_exact_types():
    from bbjtune.humaneval_problems import load_problems
    from bbjtune.evaluate.judge import judge_solution
    from bbjtune.evaluate.sandbox import Limits

    # HumanEval/8 wants a tuple: a list with the right numbers must still fail, as it would in-process
    problem = load_problems(9)[8]
    limits = Limits(wall_s=20, cpu_s=10, memory_mb=512)
    as_list = problem["prompt"] + "    return [sum(numbers), __import__('math').prod(numbers)]\n"
    as_tuple = problem["prompt"] + "    return (sum(numbers), __import__('math').prod(numbers))\n"
    assert judge_solution(problem, as_list, limits).status == "failed"
    assert judge_solution(problem, as_tuple, limits).passed
    # a subclass of int whose == is rigged is refused, not compared
    rigged = problem["prompt"] + (
        "    class N(int):\n        def __eq__(self, o):\n            return True\n    return (N(0), N(0))\n"
    )
    result = judge_solution(problem, rigged, limits)
    assert result.status == "failed" and "not plain data" in result.reason


@pytest.mark.slow
def test_every_reference_solution_passes_under_the_judge():
    # The judge must accept all 164 canonical solutions, as the in-process harness did: plain data
    # covers every HumanEval answer, and tests that call the function by name reach the sample too.
    from bbjtune.evaluate.humaneval import score_humaneval
    from bbjtune.humaneval_problems import load_problems
    from bbjtune.evaluate.sandbox import Limits

    rows = [
        {
            "suite": "humaneval",
            "id": p["task_id"],
            "sample": 0,
            "code": p["canonical_solution"],
            "error": None,
        }
        for p in load_problems()
    ]
    scores, summary = score_humaneval(rows, "completion", Limits(), [1], workers=2)
    assert [s["id"] for s in scores if not s["passed"]] == [] and summary["pass_at_1"] == 1.0


def test_an_oversized_reply_fails_the_sample_and_the_judge_still_answers():
    from bbjtune.humaneval_problems import load_problems
    from bbjtune.evaluate.judge import MAX_MESSAGE_BYTES, judge_solution
    from bbjtune.evaluate.sandbox import Limits

    problem = load_problems(1)[0]
    # the sample finds the reply pipe itself and writes one line longer than a reply may be
    flood = problem["prompt"] + (
        "    import os\n"
        f"    line = b'{{\"ok\": \"' + b'x' * {MAX_MESSAGE_BYTES + 10} + b'\"}}\\n'\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, line)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return True\n"
    )
    result = judge_solution(problem, flood, Limits(wall_s=30, cpu_s=10, memory_mb=512, file_size_mb=64))
    assert result.status == "failed" and "too long" in result.reason, result
