"""The data stage's files, read and checked before any model is loaded.

`train.jsonl` / `heldout.jsonl` hold one ChatML conversation per line, `cpt.jsonl` one `{"text"}`
chunk of raw BBj code per line (see INTERFACES.md). A bad line stops training with its file and
line number, in the first second, not after the model has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import most_common_system_prompt, read_jsonl
from bbjtune.bbj import extract_code_blocks
from bbjtune.errors import BbjtuneError

ROLES = {"system", "user", "assistant", "tool"}
PREPARE_HINT = "run `bbjtune data prepare CONFIG` (or `bbjtune run CONFIG`) first"
PREPARE_FIX = f"fix or remove the line, or re-run the data stage ({PREPARE_HINT})"


@dataclass
class TrainingData:
    """What one training run reads: conversations for SFT, text chunks for CPT, their files."""

    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    heldout: list[list[dict[str, str]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text_sources: list[str | None] = field(default_factory=list)  # cpt.jsonl's "source" of each text
    replay: list[list[dict[str, str]]] = field(default_factory=list)  # general conversations (replay.jsonl)
    files: list[Path] = field(default_factory=list)

    def replay_sample(self, ratio: float, seed: int) -> list[list[dict[str, str]]]:
        """Replay conversations making up `ratio` of the BBj + replay mix (all of them when there are fewer)."""
        import random

        if ratio <= 0 or not self.replay:
            return []
        wanted = round(ratio / (1 - ratio) * len(self.conversations))
        if wanted >= len(self.replay):
            return list(self.replay)
        return random.Random(seed).sample(self.replay, wanted)

    def describe_replay(self, mixed: int, ratio: float) -> str:
        """What stage 2 mixes in, for the training log and the dry run."""
        share = mixed / (mixed + len(self.conversations))
        return (
            f"stage 2 mixes {mixed} of {len(self.replay)} general conversations (replay.jsonl) into "
            f"{len(self.conversations)} BBj ones: {share:.0%} of the examples (train.sft.replay_ratio {ratio:g})"
        )

    @property
    def system_prompt(self) -> str | None:
        """The most common system message of the training conversations (None when there is none)."""
        return most_common_system_prompt(self.conversations)

    def heldout_code(self) -> list[str]:
        """The code blocks of the held-out answers: stage 1's evaluation set (BBj the model has not seen)."""

        return [
            block.code
            for c in self.heldout
            for m in c
            if m["role"] == "assistant"
            for block in extract_code_blocks(m["content"])
            if block.fenced and block.code.strip()
        ]


def check_conversation(obj: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The `messages` of one line, validated: roles known, contents strings, at least one answer."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BbjtuneError(
            f'{where}: no "messages" list', 'each line needs {"messages": [{"role": ..., "content": ...}]}'
        )
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BbjtuneError(
                f"{where}: message {i + 1} needs a role ({', '.join(sorted(ROLES))}) and a text content",
                'write it as {"role": "user", "content": "..."}',
            )
        clean.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in clean):
        raise BbjtuneError(
            f"{where}: the conversation has no assistant answer",
            "there is nothing to learn from it; remove it",
        )
    return clean


def load_conversations(path: Path, required: bool = True) -> list[list[dict[str, str]]]:
    if not path.exists():
        if required:
            raise BbjtuneError(f"{path} not found", PREPARE_HINT)
        return []
    return [check_conversation(obj, f"{path}:{lineno}") for lineno, obj in read_jsonl(path, PREPARE_FIX)]


def load_text_records(path: Path) -> list[tuple[str, str | None]]:
    """(text, source) of each cpt.jsonl line with text; source is the file path or chatml:<id>."""
    if not path.exists():
        raise BbjtuneError(f"{path} not found (stage 1 reads raw BBj code from it)", PREPARE_HINT)
    records = []
    for lineno, obj in read_jsonl(path, PREPARE_FIX):
        text = obj.get("text")
        if not isinstance(text, str):
            raise BbjtuneError(f'{path}:{lineno}: no "text" string', 'each line needs {"text": "..."}')
        if text.strip():
            source = obj.get("source")
            records.append((text, source if isinstance(source, str) else None))
    return records


def load_training_data(data_dir: Path, stages: list[str]) -> TrainingData:
    """Read what the given stages need from the data stage's directory; fail early and clearly."""
    data = TrainingData()
    if {"sft", "rft", "dpo", "grpo"} & set(stages):  # self-training samples the training prompts
        data.conversations = load_conversations(data_dir / "train.jsonl")
        data.files.append(data_dir / "train.jsonl")
        if not data.conversations:
            raise BbjtuneError(
                f"{data_dir / 'train.jsonl'} has no conversations",
                "add ChatML examples and re-run the data stage",
            )
        data.replay = load_conversations(data_dir / "replay.jsonl", required=False)
        if data.replay:
            data.files.append(data_dir / "replay.jsonl")
    # both stages evaluate on the held-out conversations (stage 1 on their answers' code)
    data.heldout = load_conversations(data_dir / "heldout.jsonl", required=False)
    if data.heldout:
        data.files.append(data_dir / "heldout.jsonl")
    if "cpt" in stages:
        records = load_text_records(data_dir / "cpt.jsonl")
        data.texts = [text for text, _ in records]
        data.text_sources = [source for _, source in records]
        data.files.append(data_dir / "cpt.jsonl")
        if not data.texts:
            raise BbjtuneError(
                f"{data_dir / 'cpt.jsonl'} has no text",
                "give raw BBj sources (data.sources) or set train.stages: sft",
            )
    return data
