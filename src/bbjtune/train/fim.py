"""Stage 1's fill-in-the-middle samples: a share of the documents rearranged around a hole.

Editors ask the model to fill a hole (Continue, llama.cpp's /infill, Ollama with a suffix), and
Qwen2.5-Coder was pretrained for that. Continued pretraining on plain left-to-right text alone
would train the infilling away, so stage 1 turns `train.cpt.fim_rate` of its documents into FIM
samples (Bavarian et al. 2022, arXiv:2207.14255: rates of 0.5-0.9 cost left-to-right ability
nothing measurable; StarCoder trained at 0.5):

- the hole: two cuts at random characters (`char`), or, with `fim_line_level_rate`, at line
  starts, so the middle is whole lines (what "complete this line/block" asks); the middle is never
  empty;
- the layout: PSM, or SPM with `fim_spm_rate` (models/fim.py gives both and where they come from);
- with `fim_repo_rate`, a FIM sample from a source file starts with other files of its folder
  (`<|repo_name|>` / `<|file_sep|>`, Qwen2.5-Coder's repository-level form), as many as fit.

The loss stays on every token (the middle and its closing <|endoftext|> included), as in the FIM
paper and StarCoder: the model learns to read the prefix and suffix too.

A sample never exceeds the row length: trl's `bfd_split` packing would otherwise cut it, and the
tail (a middle without its prefix) would teach nonsense. Documents whose FIM form does not fit stay
plain. Everything is decided by a random generator seeded from (seed, document number), so the
same data and seed give the same samples, also when resuming.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bbjtune.models.fim import (
    RepoFile,
    contains_fim_token,
    psm_sample,
    repo_context,
    spm_sample,
)


@dataclass(frozen=True)
class FimSettings:
    rate: float = 0.5
    spm_rate: float = 0.5
    line_level_rate: float = 0.5
    repo_rate: float = 0.0
    repo_max_files: int = 8
    seed: int = 42


@dataclass
class FimStats:
    documents: int = 0
    fim: Counter = field(default_factory=Counter)  # psm/spm x char/line, repo
    kept_plain: Counter = field(default_factory=Counter)  # why a chosen document stayed plain

    def to_dict(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "fim_samples": sum(self.fim[k] for k in ("psm", "spm")),
            "by_kind": dict(self.fim),
            "kept_plain": dict(self.kept_plain),
        }


def split_document(text: str, rng: random.Random, line_level: bool) -> tuple[str, str, str] | None:
    """(prefix, middle, suffix) with a non-empty middle, cut at characters or at line starts."""
    if line_level:
        starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)] + [len(text)]
        if len(starts) < 2:
            return None
        a, b = sorted(rng.sample(range(len(starts)), 2))
        lo, hi = starts[a], starts[b]
    else:
        if len(text) < 2:
            return None
        lo, hi = sorted(rng.sample(range(len(text) + 1), 2))
    if lo == hi:
        return None
    return text[:lo], text[lo:hi], text[hi:]


def fim_documents(
    texts: Sequence[str],
    sources: Sequence[str | None],
    settings: FimSettings,
    fits: Callable[[list[str]], list[bool]],
) -> tuple[list[str], FimStats]:
    """The stage 1 documents with `settings.rate` of them as FIM samples (same order, same count).

    `fits(texts)` says for each text whether it fits one training row (the caller counts tokens).
    """
    stats = FimStats(documents=len(texts))
    out = list(texts)
    if settings.rate <= 0:
        return out, stats
    folders = _files_by_folder(texts, sources)
    candidates: dict[int, tuple[str, str]] = {}  # document -> (kind, text)
    for i, text in enumerate(texts):
        rng = random.Random(f"{settings.seed}:fim:{i}")
        if rng.random() >= settings.rate:
            continue
        if contains_fim_token(text):  # a literal <|fim_...|> in the code would be read as structure
            stats.kept_plain["contains-fim-token"] += 1
            continue
        line_level = rng.random() < settings.line_level_rate
        parts = split_document(text, rng, line_level)
        if parts is None:
            stats.kept_plain["too-short"] += 1
            continue
        spm = rng.random() < settings.spm_rate
        sample = (spm_sample if spm else psm_sample)(*parts)
        kind = f"{'spm' if spm else 'psm'}-{'line' if line_level else 'char'}"
        if settings.repo_rate > 0 and rng.random() < settings.repo_rate:
            lead = _repo_lead(i, sources, folders, texts, settings, rng, sample, fits)
            if lead:
                sample, kind = lead + sample, kind + "-repo"
        candidates[i] = (kind, sample)
    order = sorted(candidates)
    ok = fits([candidates[i][1] for i in order]) if order else []
    for i, fit in zip(order, ok):
        kind, sample = candidates[i]
        if not fit:
            stats.kept_plain["too-long-with-fim-tokens"] += 1
            continue
        out[i] = sample
        stats.fim[kind.split("-")[0]] += 1
        stats.fim[kind] += 1
        if kind.endswith("-repo"):
            stats.fim["repo"] += 1
    return out, stats


def _files_by_folder(texts: Sequence[str], sources: Sequence[str | None]) -> dict[str, list[int]]:
    """Documents from source files (not training answers), by the folder they come from."""
    folders: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        if source and not source.startswith("chatml:"):
            folders.setdefault(os.path.dirname(source), []).append(i)
    return folders


def _repo_lead(
    i: int,
    sources: Sequence[str | None],
    folders: dict[str, list[int]],
    texts: Sequence[str],
    settings: FimSettings,
    rng: random.Random,
    sample: str,
    fits: Callable[[list[str]], list[bool]],
) -> str:
    """Other files of the document's folder, as many as fit beside the sample ('' when none does)."""
    source = sources[i]
    if not source or source.startswith("chatml:"):
        return ""
    folder = os.path.dirname(source)
    others = [j for j in folders.get(folder, []) if sources[j] != source]  # not the document's own chunks
    rng.shuffle(others)
    repo = os.path.basename(folder) or "repository"
    chosen: list[RepoFile] = []
    path = os.path.basename(source)
    for j in others[: settings.repo_max_files]:
        trial = [*chosen, RepoFile(os.path.basename(sources[j] or ""), texts[j])]
        if fits([repo_context(repo, trial, path) + sample])[0]:
            chosen = trial
        else:
            break
    return repo_context(repo, chosen, path) if chosen else ""
