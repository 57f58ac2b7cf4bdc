"""Win rate, its interval and the side statistics of human review, against hand-computed values."""

from __future__ import annotations

import random

import pytest

from bbjtune.review import stats


def _r(item, preferred, reviewer="ann", left="a", **extra):
    return {"item_id": item, "preferred": preferred, "reviewer": reviewer, "left_side": left, **extra}


def test_wilson_interval_matches_known_values():
    # Reference values of the Wilson score interval (z = 1.96).
    low, high = stats.wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = stats.wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == pytest.approx(1.0)
    low, high = stats.wilson_interval(50, 100)
    assert low == pytest.approx(1 - high) and round(low, 4) == 0.4038


def test_wilson_interval_edge_cases():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)
    low, high = stats.wilson_interval(2.5, 5)  # fractional successes (ties count half)
    assert low < 0.5 < high and low == pytest.approx(1 - high)


def test_ties_count_half_and_are_reported():
    result = stats.win_rate([_r(1, "b"), _r(2, "a"), _r(3, "tie"), _r(4, "tie")])
    assert result["win_rate"] == 0.5
    assert (result["wins"], result["losses"], result["ties"]) == (1, 1, 2)
    assert result["decisive_rate"] == 0.5
    assert result["n_prompts"] == 4 and result["n_ratings"] == 4
    low, high = stats.wilson_interval(2.0, 4)
    assert (result["ci_low"], result["ci_high"]) == (round(low, 4), round(high, 4))


def test_all_wins_keeps_a_wide_interval_on_few_prompts():
    result = stats.win_rate([_r(1, "b"), _r(2, "b"), _r(3, "b")])
    assert result["win_rate"] == 1.0
    assert result["ci_high"] == 1.0 and result["ci_low"] < 0.5  # three prompts prove little


def test_reviewers_of_one_prompt_are_averaged_not_counted_twice():
    # Prompt 1: two reviewers prefer B, one prefers A -> 2/3. Prompt 2: A -> 0. Mean = 1/3.
    ratings = [_r(1, "b", "ann"), _r(1, "b", "bob"), _r(1, "a", "cy"), _r(2, "a", "ann")]
    result = stats.win_rate(ratings)
    assert result["n_prompts"] == 2 and result["n_ratings"] == 4
    assert result["win_rate"] == pytest.approx(round((2 / 3 + 0) / 2, 4))
    low, high = stats.wilson_interval(2 / 3, 2)
    assert result["ci_low"] == round(low, 4) and result["ci_high"] == round(high, 4)
    assert result["decisive_rate"] == 0.5


def test_no_ratings_gives_empty_result():
    result = stats.win_rate([])
    assert result["win_rate"] is None and result["n_prompts"] == 0 and result["decisive_rate"] is None


def test_grouped_and_scores():
    ratings = [
        _r(1, "b", category="gui", a_correctness=2, b_correctness=4),
        _r(2, "a", category="gui", a_correctness=4, b_correctness=3),
        _r(3, "b", category="sql", a_correctness=1, b_correctness=5),
    ]
    groups = stats.grouped_win_rates(ratings, lambda r: r["category"])
    assert list(groups) == ["gui", "sql"]
    assert groups["gui"]["win_rate"] == 0.5 and groups["sql"]["win_rate"] == 1.0
    scores = stats.mean_scores(ratings, ["correctness"])["correctness"]
    assert scores == {"a": round(7 / 3, 3), "b": 4.0, "n": 3, "delta": round(4.0 - round(7 / 3, 3), 3)}


def test_position_bias_and_agreement():
    ratings = [
        _r(1, "a", "ann", left="a"),
        _r(1, "a", "bob", left="b"),
        _r(2, "b", "ann", left="b"),
        _r(2, "tie", "bob", left="a"),
        _r(3, "b", "ann", left="a"),
    ]
    bias = stats.position_bias(ratings)
    assert bias == {"decisive": 4, "left_chosen": 2, "left_rate": 0.5}
    agreement = stats.agreement(ratings)
    assert agreement == {"prompts_with_several_reviewers": 2, "pairs": 2, "agreement": 0.5}


def test_interval_covers_the_true_rate_with_ties():
    # The claim in stats.py: with ties counted half, the Wilson interval is conservative. Simulate
    # 20-prompt reviews where B wins 45%, loses 25% and ties 30% (true rate 0.6) and count how
    # often the interval contains 0.6.
    rng = random.Random(7)
    covered, runs = 0, 2000
    for _ in range(runs):
        ratings = [_r(k, rng.choices(["b", "a", "tie"], weights=[45, 25, 30])[0]) for k in range(20)]
        result = stats.win_rate(ratings)
        covered += result["ci_low"] <= 0.6 <= result["ci_high"]
    assert covered / runs >= 0.95
