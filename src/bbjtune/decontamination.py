"""Decontamination: what the model is tested on never leaks into what it learns from.

A training prompt is dropped when it contains at least `threshold` of the word n-grams of a
held-out or evaluation prompt (prompts shorter than n words must appear whole). The index holds
the held-out and eval n-grams only; training prompts stream past it. Two stages use it: the data
stage filters train.jsonl (data/stage.py, data/replay.py), and self-training checks the prompts it
samples again (train/samples.py: extra prompt files never went through the data stage), so both
live here, below the stages, with the conversation helpers they share (`prompt_of`, `example_id`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bbjtune.config import expand_globs
from bbjtune.errors import BbjtuneError

_WORD_RE = re.compile(r"\w+")
MIN_SHORT_NGRAM = 3  # prompts of fewer words than this are matched only as a whole


def example_id(messages: list[dict[str, str]]) -> str:
    """The stable id of a conversation: sha256 of its messages (canonical JSON), 16 hex digits."""
    canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def prompt_of(messages: list[dict[str, str]]) -> str:
    """The user turns of a conversation: what decontamination compares."""
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def eval_prompts(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files, [(label, prompt)]) of the evaluation suites to decontaminate against."""
    files = expand_globs(patterns) if patterns else []
    if patterns and not files:  # a warning here went unnoticed: the data would silently go unchecked
        raise BbjtuneError(
            f"data.decontaminate_against: {', '.join(patterns)} match no file (relative paths "
            f"start from the current directory, {Path.cwd()})",
            "give the evaluation prompts' path (absolute, or relative to where you run bbjtune), or "
            "set data.decontaminate_against: [] to train without checking against them",
        )
    prompts = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("prompt"), str):
                    prompts.append((f"eval {path.stem}:{row.get('id', n)}", row["prompt"]))
    return files, prompts


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@dataclass
class Match:
    label: str  # e.g. "heldout data/x.jsonl:12" or "eval bbj-core:file-io-001"
    overlap: float  # share of that prompt's n-grams found in the training prompt


class ContaminationIndex:
    """Word n-grams of held-out and eval prompts; `match(train_prompt)` finds the ones it overlaps."""

    def __init__(self, n: int, threshold: float):
        self.n = n
        self.threshold = threshold
        self._grams: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._sizes: list[int] = []
        self._labels: list[str] = []
        self._short_lengths: set[int] = set()
        self._exact: dict[tuple[str, ...], int] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, label: str, prompt: str) -> None:
        tokens = words(prompt)
        if not tokens:
            return
        item = len(self._labels)
        self._labels.append(label)
        if len(tokens) >= self.n:
            grams = ngrams(tokens, self.n)
        elif len(tokens) >= MIN_SHORT_NGRAM:
            grams = {tuple(tokens)}
            self._short_lengths.add(len(tokens))
        else:
            self._exact.setdefault(tuple(tokens), item)
            self._sizes.append(1)
            return
        self._sizes.append(len(grams))
        for g in grams:
            self._grams[g].append(item)

    def match(self, prompt: str) -> Match | None:
        """The indexed prompt this training prompt overlaps most, if at or above the threshold."""
        tokens = words(prompt)
        exact = self._exact.get(tuple(tokens))
        if exact is not None:
            return Match(self._labels[exact], 1.0)
        grams = ngrams(tokens, self.n)
        for k in self._short_lengths:
            grams |= ngrams(tokens, k)
        hits: Counter = Counter()
        for g in grams:
            for item in self._grams.get(g, ()):
                hits[item] += 1
        best = None
        for item, count in hits.items():
            overlap = count / self._sizes[item]
            if overlap >= self.threshold and (best is None or overlap > best.overlap):
                best = Match(self._labels[item], overlap)
        return best
