"""Paired sign tests in `eval compare`: is a difference between two models real or within noise?"""

import json
from math import comb

from bbjtune.evaluate.compare import compare_dirs
from bbjtune.evaluate.paired import describe, p_text, paired_changes, sign_test


def test_the_sign_test_is_the_exact_two_sided_binomial():
    assert sign_test(0, 0) == 1.0
    assert sign_test(0, 5) == 2 / 32 and sign_test(5, 0) == 2 / 32
    assert sign_test(0, 6) == 2 / 64 < 0.05
    assert sign_test(3, 3) == 1.0
    # the real 0.5B: SFT + replay against DPO straight after it, compile@1 (34 fixed, 49 broken)
    assert abs(sign_test(34, 49) - 2 * sum(comb(83, i) for i in range(35)) / 2**83) < 1e-12
    assert 0.1 < sign_test(34, 49) < 0.15
    # the gateway's 16 fixed, 0 broken: printed as such, not rounded to 0
    assert p_text(sign_test(16, 0)) == "p < 0.001" and p_text(sign_test(34, 49)) == "p = 0.12"


def bbj(case, sample=0, **fields):
    return {"suite": "bbj-core", "id": case, "sample": sample, **fields}


def test_paired_changes_count_only_first_answers_both_models_were_judged_on():
    a = [bbj(f"c{i}", compiles=False, clean=False, patterns_ok=None) for i in range(8)]
    b = [bbj(f"c{i}", compiles=True, clean=i < 2, patterns_ok=True) for i in range(8)]
    a += [bbj("c0", sample=1, compiles=True), bbj("only-a", compiles=True)]
    b += [bbj("c0", sample=1, compiles=False)]
    a += [{"suite": "humaneval", "id": "HumanEval/0", "sample": 0, "passed": True}]
    b += [{"suite": "humaneval", "id": "HumanEval/0", "sample": 0, "passed": False}]
    got = paired_changes(a, b)
    assert got["compile@1"] == {
        "n": 8,
        "better": 8,
        "worse": 0,
        "p_value": 0.00781,
        "verdict": "a real gain",
    }
    assert got["clean@1"]["better"] == 2 and got["clean@1"]["verdict"] == "within noise"
    assert "patterns pass rate" not in got  # A's answers were never judged on patterns
    assert got["HumanEval pass@1"] == {
        "n": 1,
        "better": 0,
        "worse": 1,
        "p_value": 1.0,
        "verdict": "within noise",
    }
    flipped = paired_changes(b, a)["compile@1"]
    assert flipped["worse"] == 8 and flipped["verdict"] == "a real loss"
    same = paired_changes(a, a)["compile@1"]
    assert same["verdict"] == "no change" and same["p_value"] == 1.0
    assert describe("compile@1", got["clean@1"] | {"verdict": "within noise"}).endswith(
        "within noise, a rerun could reverse it"
    )


def write_eval(directory, label, compile_rate, scores):
    directory.mkdir(parents=True)
    results = {
        "model": label,
        "compiler": "builtin",
        "compile_at_k": {"1": compile_rate},
        "patterns_pass_rate": 0.5,
        "factual_accuracy": None,
        "humaneval": None,
        "by_category": {},
        "by_generation": {},
        "n_prompts": len(scores),
    }
    (directory / "results.json").write_text(json.dumps(results))
    (directory / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))


def test_compare_says_when_a_regression_is_within_noise_and_when_it_is_real(tmp_path):
    # 10 prompts: B breaks 3 and fixes 1 (-20 points, p = 0.62); then B breaks 7 and fixes none (p = 0.016)
    a = [bbj(f"c{i}", compiles=i < 5) for i in range(10)]
    b = [bbj(f"c{i}", compiles=(i < 2) or i == 9) for i in range(10)]
    write_eval(tmp_path / "noisy" / "base", "base", 0.5, a)
    write_eval(tmp_path / "noisy" / "tuned", "tuned", 0.3, b)
    cmp = compare_dirs(tmp_path / "noisy" / "base", tmp_path / "noisy" / "tuned", tmp_path / "noisy" / "cmp")
    assert cmp["paired"]["compile@1"]["verdict"] == "within noise"
    (regression,) = [r for r in cmp["regressions"] if r.startswith("compile@1")]
    assert "within noise: 1 prompts better, 3 worse of 10" in regression
    html = (tmp_path / "noisy" / "cmp" / "report.html").read_text()
    assert "Is the difference real?" in html and "within noise" in html

    a = [bbj(f"c{i}", compiles=True) for i in range(10)]
    b = [bbj(f"c{i}", compiles=i >= 7) for i in range(10)]
    write_eval(tmp_path / "real" / "base", "base", 1.0, a)
    write_eval(tmp_path / "real" / "tuned", "tuned", 0.3, b)
    cmp = compare_dirs(tmp_path / "real" / "base", tmp_path / "real" / "tuned", tmp_path / "real" / "cmp")
    assert cmp["paired"]["compile@1"]["verdict"] == "a real loss"
    (regression,) = [r for r in cmp["regressions"] if r.startswith("compile@1")]
    assert "within noise" not in regression
    # an eval directory without scores.jsonl (older runs) compares as before, without paired tests
    (tmp_path / "real" / "tuned" / "scores.jsonl").unlink()
    assert (
        compare_dirs(tmp_path / "real" / "base", tmp_path / "real" / "tuned", tmp_path / "real" / "c2")[
            "paired"
        ]
        == {}
    )
