"""How often reviewers prefer the tuned model (run B) over the base (run A), with a 95% interval.

The unit is the prompt, not the rating. Each rating scores 1 when run B's answer was preferred,
0 when run A's was, and 0.5 for a tie: a tie counts as half a win, so 50% means "no difference".
When several reviewers rated the same prompt, their scores are averaged into one prompt score,
and the win rate is the mean over prompts. Counting prompts rather than ratings keeps three
reviewers agreeing on one prompt from looking like three independent pieces of evidence.

The interval is the Wilson score interval for a proportion, applied to (sum of prompt scores) out
of (number of prompts). Wilson behaves well for small samples and at 0% or 100%, where the
normal approximation collapses to a point. A prompt score in [0, 1] with mean p has a variance of
at most p(1-p), the variance of a win/loss coin, so ties and averaged reviewers only make the
interval conservative (wider than necessary), never too narrow.

`decisive_rate` (B's share of the ratings that were not ties) is reported beside it, as are the
raw counts, so a reader can see whether a 50% came from ties or from a split.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

Z_95 = 1.959963984540054
OUTCOME = {"b": 1.0, "a": 0.0, "tie": 0.5}


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `n` (successes may be fractional)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie between 0 and n, got {successes} of {n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(ratings: Iterable[dict]) -> dict:
    """Win rate of run B over run A for these ratings (dicts with "item_id" and "preferred")."""
    by_prompt: dict[object, list[float]] = defaultdict(list)
    wins = losses = ties = 0
    for rating in ratings:
        preferred = rating["preferred"]
        by_prompt[rating["item_id"]].append(OUTCOME[preferred])
        wins += preferred == "b"
        losses += preferred == "a"
        ties += preferred == "tie"
    n_prompts = len(by_prompt)
    score = sum(sum(values) / len(values) for values in by_prompt.values())
    low, high = wilson_interval(score, n_prompts)
    decisive = wins + losses
    return {
        "n_prompts": n_prompts,
        "n_ratings": wins + losses + ties,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": round(score / n_prompts, 4) if n_prompts else None,
        "ci_low": round(low, 4) if n_prompts else None,
        "ci_high": round(high, 4) if n_prompts else None,
        "decisive_rate": round(wins / decisive, 4) if decisive else None,
    }


def grouped_win_rates(ratings: list[dict], key: Callable[[dict], str]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for rating in ratings:
        groups[key(rating) or "(none)"].append(rating)
    return {name: win_rate(groups[name]) for name in sorted(groups)}


def mean_scores(ratings: list[dict], criteria: Iterable[str]) -> dict[str, dict]:
    """Mean 1-5 score of each run's answers per criterion (over ratings), and B minus A."""
    out = {}
    for criterion in criteria:
        a = [r[f"a_{criterion}"] for r in ratings]
        b = [r[f"b_{criterion}"] for r in ratings]
        mean_a = round(sum(a) / len(a), 3) if a else None
        mean_b = round(sum(b) / len(b), 3) if b else None
        out[criterion] = {
            "a": mean_a,
            "b": mean_b,
            "n": len(a),
            "delta": round(mean_b - mean_a, 3) if a else None,
        }
    return out


def position_bias(ratings: list[dict]) -> dict:
    """Share of decisive ratings that picked the answer shown on the left (about 0.5 when unbiased)."""
    decisive = [r for r in ratings if r["preferred"] != "tie"]
    left = sum(r["preferred"] == r["left_side"] for r in decisive)
    return {
        "decisive": len(decisive),
        "left_chosen": left,
        "left_rate": round(left / len(decisive), 4) if decisive else None,
    }


def agreement(ratings: list[dict]) -> dict:
    """Pairwise agreement on the preference between reviewers who rated the same prompt."""
    by_prompt: dict[object, list[str]] = defaultdict(list)
    for rating in ratings:
        by_prompt[rating["item_id"]].append(rating["preferred"])
    pairs = agreeing = shared = 0
    for prefs in by_prompt.values():
        if len(prefs) < 2:
            continue
        shared += 1
        for i in range(len(prefs)):
            for j in range(i + 1, len(prefs)):
                pairs += 1
                agreeing += prefs[i] == prefs[j]
    return {
        "prompts_with_several_reviewers": shared,
        "pairs": pairs,
        "agreement": round(agreeing / pairs, 4) if pairs else None,
    }
