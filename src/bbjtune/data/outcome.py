"""What the data stage's passes hand each other: the analysis (scan + filters) and what was written.

`stage.py` builds them, `audit.py` turns them into figures; both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.config import RunConfig
from bbjtune.data.chatml import Rejection
from bbjtune.data.clean import Decision
from bbjtune.data.replay import ReplayResult
from bbjtune.data.scan import ScanResult
from bbjtune.data.tokens import TokenCounter


@dataclass
class Analysis:
    """The outcome of the scan and the filters: what an audit shows, and what prepare builds on."""

    cfg: RunConfig
    chatml_files: list[Path]
    tokens: TokenCounter
    max_length: int
    scan: ScanResult
    decisions: list[Decision]
    system_prompt: str | None
    system_prompt_added: int = 0

    @property
    def rejected_indexes(self) -> set[int]:
        return {d.index for d in self.decisions}


@dataclass
class Outcome:
    out_dir: Path
    audit: dict[str, Any]
    rejected: int
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Written:
    """What the writing pass produced (audit.py turns it into figures)."""

    train: int
    heldout: int
    heldout_indexes: set[int]
    contaminated: list[Decision]
    cpt: Any  # CptCorpus
    rejections: list[Rejection]
    split_by_category: dict[str, dict[str, int]]
    eval_prompts: int
    straddling_prompts: int
    replay: ReplayResult | None = None  # when data.replay gave files
    heldout_sources: list[str] = field(default_factory=list)  # source files kept out of stage 1
    # self-training's fresh prompts (selftrain_prompts.py): {derived, kept, skipped: {reason: n}}
    selftrain_prompts: dict[str, Any] = field(
        default_factory=lambda: {"derived": 0, "kept": 0, "skipped": {}}
    )
