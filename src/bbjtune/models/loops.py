"""Where a runaway answer starts to loop, and the answer cut there: DPO's loop-cut pairs, the gateway's cut.

The largest single loss of the tuned 0.5B is answers that run to the token limit (42-57 of 220 on
the evaluation suites), nearly all failing. They loop: a line or block of code again and again,
often with a number counting up (`sqlbind sqlconn!,55`, `,56`, ...), one sentence of the
explanation over and over, or one item inside a line (`0,0,0,...`). DPO against a whole runaway
answer says little about where the loop starts.

A loop-cut pair does: its chosen answer is the runaway answer itself, cut after the first copy of
what it repeats (a code fence left open is closed), and its rejected answer is the runaway in full.
The two share every token up to the cut, so the preference falls on the one decision that matters:
stop there rather than write it once more. `train.dpo.loop_pairs` turns them on; a cut answer is
only chosen when its BBj compiles. The checking gateway returns a served answer that ran on in a
loop cut the same way (serve/gateway/sampling.py).

The text is read as words, numbers, punctuation marks and line ends, with case folded and every
number read as one value, so copies whose numbers count up still match. A loop is a tail of the
answer (the unit the token limit cut off aside) made of at least `MIN_REPEATS` copies of one
stretch of up to `MAX_PERIOD` units and at least `MIN_LOOP_UNITS` units long. The cut comes after
the first copy, at the end of its line (or else its sentence).
"""

from __future__ import annotations

import re

FENCE = "```"
MAX_PERIOD = 160  # units in the repeated stretch
MIN_REPEATS = 3  # copies of it, the first one included
MIN_LOOP_UNITS = 30  # a loop of one short item (`0,`) must still run this long
_UNIT = re.compile(r"\d+|\w+|\n|[^\w\s]")


def _unit(match: re.Match[str]) -> str:
    text = match.group().lower()
    return "0" if text[0].isdigit() else text


def _boundary(units: list[str], end: int, period: int) -> int:
    """Where to cut a loop whose first copy ends at `end`: at the end of the line (or else the sentence)
    that copy ends in, so whole lines or sentences stay; at `end` when neither ends within a period."""
    for mark in ("\n", "."):
        for i in range(end - 1, min(end - 1 + period, len(units))):
            if units[i] == mark:
                return i + 1
    return end


def loop_cut(answer: str) -> str | None:
    """The answer cut after the first copy of its loop (code fence closed), or None when it does not loop."""
    matches = list(_UNIT.finditer(answer))[:-1]  # the unit the token limit cut off
    units = [_unit(m) for m in matches]
    n = len(units)
    best: int | None = None
    for period in range(1, min(MAX_PERIOD, n // MIN_REPEATS) + 1):
        start = n - period  # walk back while each unit equals the one a period later
        while start > 0 and units[start - 1] == units[start - 1 + period]:
            start -= 1
        if n - start < max(period * MIN_REPEATS, MIN_LOOP_UNITS):
            continue
        if not any(u.strip() for u in units[start : start + period]):
            continue  # blank lines
        cut = _boundary(units, start + period, period)
        if best is None or cut < best:
            best = cut
    if best is None:
        return None
    kept = answer[: matches[best - 1].end()].rstrip()
    if kept.count(FENCE) % 2:  # inside a code block: close it
        kept += "\n" + FENCE
    return kept
