"""Prompts for self-training that stage 2 never trained on: derived from the BBj sources.

Self-training (train/selftrain.py) samples the model's own answers and learns from the checker's
verdicts. On the prompts of train.jsonl a freshly tuned model mostly recalls the reference answers
it was just trained on: one round on 173 training prompts with Qwen2.5-Coder-0.5B-Instruct passed
66.6 % of its samples, while the same model reached compile@1 55.9 % on unseen eval prompts. So
the data stage also writes `selftrain-prompts.jsonl`: the write and complete-the-program pairs
`derive.derive_pairs` finds in `data.sources` (explain pairs have prose answers the checker cannot
judge), left out when

- they come from a source file held out for the fill-in-the-middle evaluation,
- their prompt is also a training prompt (the same user text: nothing fresh about it),
- they overlap an eval or held-out prompt (the same index and settings as train.jsonl),
- their reference answer fails the BBj checker and `data.code_check` is `reject` (the references
  stand in as passing answers in RFT and DPO).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_open
from bbjtune.config import SELFTRAIN_PROMPTS_FILE
from bbjtune.data.derive import derive_pairs
from bbjtune.data.scan import CodeChecker, answer_bbj_blocks
from bbjtune.decontamination import ContaminationIndex, example_id, prompt_of

FROM_HELDOUT_SOURCE = "from a held-out source file"
IN_TRAINING = "prompt is a training prompt"
OVERLAPS_EVAL_OR_HELDOUT = "overlaps an eval or held-out prompt"
DUPLICATE = "duplicate prompt"
NO_CODE = "reference has no BBj code"
FAILS_CHECKER = "reference fails the BBj checker"
RECORD_KEYS = ("source", "derived", "category", "generation")


def prompt_text_key(messages: list[dict[str, str]]) -> str:
    """The user turns, case and spacing aside: two prompts with the same key ask the same thing."""
    return " ".join(prompt_of(messages).casefold().split())


def write_selftrain_prompts(
    out_dir: Path,
    sources: Iterable[Path],
    held_out: set[str],
    train_prompts: set[str],
    index: ContaminationIndex,
    *,
    system: str,
    check_code: bool,
) -> dict[str, Any]:
    """Write `<out_dir>/selftrain-prompts.jsonl`; returns {derived, kept, skipped: {reason: n}}.

    `held_out`: real paths of the held-out source files; `train_prompts`: `prompt_text_key`s of
    train.jsonl; `index`: eval and held-out prompts. The file is written even when empty, so a file
    left from an earlier preparation is never sampled.
    """
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    derived = kept = 0
    checker = CodeChecker() if check_code else None
    with atomic_open(out_dir / SELFTRAIN_PROMPTS_FILE) as fh:
        for pair in derive_pairs(sources, system):
            if pair.get("task") != "write":
                continue
            derived += 1
            messages = pair["messages"]
            reason = None
            if os.path.realpath(pair["source"]) in held_out:
                reason = FROM_HELDOUT_SOURCE
            elif (pid := example_id(messages[:-1])) in seen:
                reason = DUPLICATE
            elif prompt_text_key(messages) in train_prompts:
                reason = IN_TRAINING
            elif len(index) and index.match(prompt_of(messages)) is not None:
                reason = OVERLAPS_EVAL_OR_HELDOUT
            else:
                codes, _ = answer_bbj_blocks(messages[-1]["content"])
                if not codes:
                    reason = NO_CODE
                elif checker is not None and any(checker.first_error(c) for c in codes):
                    reason = FAILS_CHECKER
            if reason is not None:
                skipped[reason] += 1
                continue
            seen.add(pid)
            kept += 1
            record = {"messages": messages, "id": pid, **{k: pair[k] for k in RECORD_KEYS if k in pair}}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"derived": derived, "kept": kept, "skipped": dict(skipped)}
