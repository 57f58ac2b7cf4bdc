"""The checker's verdict on one sampled answer: what self-training keeps, pairs and rewards.

An answer is judged on three things, cheapest first:

1. syntax: its BBj code (extracted as the evaluation does) compiles, by bbjcpl when installed,
   else by bbjtune's checker (`bbj.compile.compile_code`, the same call compile@k makes);
2. tier 2 (`bbj.quality.check_quality`, the checks clean@k runs): BBjAPI methods that exist,
   labels that are defined, executable code, no runaway repetition;
3. the prompt's own must-patterns, derived from its reference answer (`bbj.must`): the share it
   matches must reach `min_pattern_share`.

`bbj.quality.assess` makes checks 1 and 2: the code is compiled once, by the chosen compiler.

An answer that hit the token limit fails: it ran on instead of finishing. `passed` answers are
RFT's training data and DPO's chosen side; `failed` ones (not clean) are DPO's rejected side;
`reward` orders answers and is GRPO's reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bbjtune.bbj import extract_bbj
from bbjtune.bbj.must import pattern_share
from bbjtune.bbj.quality import assess

# Which checks judge answers here (syntax and tier 2): recorded in round.json and selftrain.json
CHECKS = "checker+quality"


@dataclass
class Verdict:
    compiles: bool
    clean: bool  # compiles and passes the tier-2 checks
    pattern_share: float  # share of the prompt's must-patterns matched
    patterns_ok: bool
    ran_on: bool  # hit max_new_tokens
    findings: list[str] = field(default_factory=list)
    reason: str = ""  # first compile error, when it does not compile
    compiler: str = ""

    @property
    def passed(self) -> bool:
        """Good enough to learn from: clean, on the task's patterns, finished."""
        return self.clean and self.patterns_ok and not self.ran_on

    @property
    def failed(self) -> bool:
        """Clearly worse than a passing answer: does not compile, is not clean, or ran on."""
        return not self.clean or self.ran_on

    @property
    def reward(self) -> float:
        """0 to 3: compiles (0.5), clean (0.5), the patterns' share (1), finished (1)."""
        return round(0.5 * self.compiles + 0.5 * self.clean + self.pattern_share + (not self.ran_on), 4)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "failed": self.failed, "reward": self.reward}


def judge(
    answer: str,
    must: Sequence[str],
    *,
    finish_reason: str = "stop",
    compiler: str = "auto",
    min_pattern_share: float = 0.5,
) -> Verdict:
    """The verdict on one answer to a prompt whose must-patterns are `must`."""
    assessment = assess(extract_bbj(answer or ""), compiler=compiler)
    share = pattern_share(answer or "", must)
    return Verdict(
        compiles=assessment.compiles,
        clean=assessment.clean,
        pattern_share=round(share, 4),
        patterns_ok=share >= min_pattern_share,
        ran_on=finish_reason == "length",
        findings=[str(f) for f in assessment.findings] if assessment.compiles else [],
        reason=assessment.compile_reason,
        compiler=assessment.compiler,
    )
