"""The held-out split: what the model is tested on never leaks into training.

Split: examples whose prompts are the same or similar (MinHash Jaccard of character 5-grams at
least `group_threshold`) form one group, and a group goes to one side only. Groups are ordered by
a hash of (seed, the group's first example's content) — deterministic wherever the data stage runs
from, and adding data moves few examples —
and taken into the held-out set per category until each category has its share (`ratio` of its
examples, largest remainders first, at least one held-out example overall when ratio > 0, and
never the last example of a category).

Decontamination (the n-gram index against held-out and eval prompts) lives in
bbjtune/decontamination.py: self-training checks its prompts with the same index.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict

from bbjtune.data.clean import ExampleInfo, SimilarityIndex


# ----------------------------------------------------------------------------- grouping


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_similar(infos: list[ExampleInfo], threshold: float) -> list[int]:
    """For each example (by position in `infos`), the position of its group's first member."""
    uf = UnionFind(len(infos))
    by_prompt: dict[bytes, int] = {}
    index = SimilarityIndex(threshold)
    for pos, info in enumerate(infos):
        first = by_prompt.setdefault(info.prompt_key, pos)
        if first != pos:
            uf.union(first, pos)
        if info.prompt_sig is not None:
            for _, other in index.matches(info.prompt_sig):
                uf.union(other, pos)
            index.add(pos, info.prompt_sig)
    return [uf.find(i) for i in range(len(infos))]


# ----------------------------------------------------------------------------- split


def split_heldout(infos: list[ExampleInfo], ratio: float, seed: int, group_threshold: float) -> set[int]:
    """The spool indexes of the held-out examples."""
    if ratio <= 0 or len(infos) < 2:
        return set()
    roots = group_similar(infos, group_threshold)
    groups: dict[int, list[int]] = defaultdict(list)
    for pos, root in enumerate(roots):
        groups[root].append(pos)
    per_category = Counter(info.category or "" for info in infos)
    targets = _allocate(per_category, ratio, len(infos))

    def order(root: int) -> str:
        # by content (prompt + answer), not by file and line: the same data gave another split when the
        # data stage ran from another folder (a relative path spelled differently), or after a file moved
        return hashlib.sha256(f"{seed}:".encode() + infos[root].example_key).hexdigest()

    heldout: set[int] = set()
    taken: Counter = Counter()
    for root in sorted(groups, key=order):
        members = groups[root]
        category = infos[root].category or ""
        if taken[category] + len(members) > targets[category]:
            continue  # too big for what this category still needs; try the next group
        if len(members) > max(1, len(infos) // 4):
            continue  # a group this large would make the held-out set one topic
        taken[category] += len(members)
        heldout.update(infos[m].index for m in members)
    return heldout


def _allocate(per_category: Counter, ratio: float, total: int) -> dict[str, int]:
    """Held-out counts per category: `ratio` of each, rounded by largest remainder to the overall total."""
    want_total = max(1, round(ratio * total))
    exact = {c: ratio * n for c, n in per_category.items()}
    counts = {c: math.floor(v) for c, v in exact.items()}
    rest = want_total - sum(counts.values())
    for c in sorted(exact, key=lambda c: (-(exact[c] - counts[c]), c))[: max(0, rest)]:
        counts[c] += 1
    return {c: min(n, per_category[c] - 1) for c, n in counts.items()}  # a category keeps one for training


# ----------------------------------------------------------------------------- source files

MIN_SOURCES_TO_HOLD_OUT = 10  # with fewer files, every one is worth more for training than for a test


def split_sources(digests: list[bytes], ratio: float, seed: int) -> set[int]:
    """The positions of the source files held out of stage 1 (the FIM suite is built from them), given
    the sha256 digest of each file's bytes (`file_digest`).

    Files are ordered by a hash of (seed, content): the choice does not depend on where the corpus
    lies or how it is globbed, and adding files moves few others. `ratio` of them, at least one,
    once there are MIN_SOURCES_TO_HOLD_OUT files."""
    if ratio <= 0 or len(digests) < MIN_SOURCES_TO_HOLD_OUT:
        return set()
    want = max(1, round(ratio * len(digests)))
    order = sorted(
        range(len(digests)), key=lambda i: hashlib.sha256(f"{seed}:".encode() + digests[i]).hexdigest()
    )
    return set(order[:want])


def file_digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()
