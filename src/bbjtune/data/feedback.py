"""`bbjtune data feedback LOG`: the gateway's rated exchanges as training data.

From each chat exchange of the log (`bbjtune serve gateway`):
- rated up, no correction: the answer is an accepted SFT conversation (request + answer);
- corrected: the correction is an SFT conversation (request + correction), and, when it differs
  from the model's answer, a preference pair: chosen = the correction, rejected = the answer;
- with `checker_pairs`, also a pair per best-of-N attempt that failed the checker against the
  answer that passed (never for an answer rated down), and per answer the gateway cut where it
  looped, the runaway against the answer given (source "loop"). Off by default: the checker judges
  syntax, not whether the code does what was asked.
Rated down without a correction, unrated and fill-in-the-middle exchanges give nothing.

The same cleaning as any other data, with the data stage's own functions: the conversation must
pass the ChatML schema check of `data prepare` (`parse_line`); secrets are scrubbed and literal
`\\n` escapes repaired (`repair_messages`); fragments and cut-off answers are set aside
(`truncation_reason`); code that fails the checker is set aside (an accepted answer whose code
fails is a rating mistake, a correction that fails is unfinished); exact duplicates are dropped
(`example_id`); prompts that overlap the evaluation suites or HumanEval are set aside
(`ContaminationIndex`, as for `data prepare` and replay). Every exchange set aside is listed in
rejected.jsonl with its reason.

Outputs: sft.jsonl (ChatML, for data.chatml), preference.jsonl (trl's conversational preference
format: prompt = the request's messages, chosen/rejected = one assistant message each),
rejected.jsonl and summary.json.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_json, atomic_write_jsonl
from bbjtune.bbj.compile import compile_answer
from bbjtune.data.chatml import LineProblem, parse_line
from bbjtune.data.clean import TRUNCATED, truncation_reason
from bbjtune.data.replay import benchmark_prompts
from bbjtune.data.scan import repair_messages
from bbjtune.decontamination import ContaminationIndex, eval_prompts, example_id, prompt_of
from bbjtune.gateway_log import read_log

SFT_FILE, PREFERENCE_FILE, REJECTED_FILE, SUMMARY_FILE = (
    "sft.jsonl",
    "preference.jsonl",
    "rejected.jsonl",
    "summary.json",
)


@dataclass
class FeedbackResult:
    sft: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # exchanges that give nothing, by why
    scrubbed: Counter = field(default_factory=Counter)
    exchanges: int = 0
    checked_against_prompts: int = 0

    def summary(self) -> dict[str, Any]:
        kinds = Counter(r["kind"] for r in self.sft)
        return {
            "exchanges": self.exchanges,
            "sft": len(self.sft),
            "sft_accepted": kinds["accepted"],
            "sft_corrected": kinds["corrected"],
            "preference_pairs": len(self.pairs),
            "pairs_by_source": dict(Counter(p["source"] for p in self.pairs)),
            "rejected": dict(Counter(r["reason"] for r in self.rejected)),
            "skipped": dict(self.skipped),
            "scrubbed": dict(self.scrubbed),
            "checked_against_prompts": self.checked_against_prompts,
        }


def _text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of content parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") == "text"]
        if len(parts) == len(content) and all(isinstance(t, str) for t in parts):
            return "".join(parts)
    return None


class _Builder:
    def __init__(self, d: Any, compiler: str, index: ContaminationIndex, checker_pairs: bool):
        self.d, self.compiler, self.index, self.checker_pairs = d, compiler, index, checker_pairs
        self.result = FeedbackResult()
        self.seen_sft: set[str] = set()
        self.seen_pairs: set[str] = set()

    def reject(self, row: dict[str, Any], reason: str, detail: str) -> None:
        self.result.rejected.append({"exchange": row["id"], "reason": reason, "detail": detail})

    def add(self, row: dict[str, Any]) -> None:
        res = self.result
        res.exchanges += 1
        if row["endpoint"] != "chat":
            res.skipped["fill-in-the-middle"] += 1
            return
        correction = row["correction"] if row["correction"] and row["correction"].strip() else None
        accepted = row["rating"] == 1 and correction is None
        checker_pairs = (
            self.checker_pairs and row["verdict"] == "pass" and row["rating"] != -1 and row["rejected"]
        )
        if not (accepted or correction or checker_pairs):
            res.skipped["rated down, no correction" if row["rating"] == -1 else "not rated"] += 1
            return
        prompt = self._prompt(row)
        if prompt is None:
            return
        if (match := self.index.match(prompt_of(prompt))) is not None:
            self.reject(
                row,
                "overlaps-eval",
                f"the prompt shares {match.overlap:.0%} of the "
                f"{self.index.n}-word sequences of {match.label}",
            )
            return
        if accepted:
            self._sft(row, prompt, row["answer"], "accepted")
        if (
            correction
            and self._sft(row, prompt, correction, "corrected")
            and correction.strip() != row["answer"].strip()
        ):
            self._pair(row, prompt, correction, row["answer"], "corrected")
        if checker_pairs:
            for attempt in row["rejected"]:
                if attempt["verdict"] in ("fail", "loop"):  # loop: the gateway cut the answer where it looped
                    source = "checker" if attempt["verdict"] == "fail" else "loop"
                    self._pair(row, prompt, row["answer"], attempt["answer"], source)

    def _prompt(self, row: dict[str, Any]) -> list[dict[str, str]] | None:
        messages = []
        for m in row["request"].get("messages") or []:
            text = _text(m.get("content")) if isinstance(m, dict) else None
            if text is None:
                self.reject(row, "unusable-request", "a message has no text content (images or tool calls)")
                return None
            messages.append({"role": m.get("role"), "content": text})
        return messages

    def _clean(
        self, row: dict[str, Any], prompt: list[dict[str, str]], answer: str
    ) -> list[dict[str, str]] | None:
        """The conversation prompt + answer, scrubbed and checked as `data prepare` checks a line."""
        messages = [dict(m) for m in prompt] + [{"role": "assistant", "content": answer}]
        try:
            messages, _ = parse_line(json.dumps({"messages": messages}).encode())
        except LineProblem as exc:
            self.reject(row, exc.reason, exc.detail)
            return None
        _, scrubbed = repair_messages(messages, fix_escapes=self.d.fix_escapes, scrub=self.d.scrub_secrets)
        self.result.scrubbed.update(scrubbed)
        return messages

    def _sft(self, row: dict[str, Any], prompt: list[dict[str, str]], answer: str, kind: str) -> bool:
        messages = self._clean(row, prompt, answer)
        if messages is None:
            return False
        final = messages[-1]["content"]
        if len(final.strip()) <= self.d.min_answer_chars:
            self.reject(row, f"{kind}-too-short", f"the answer has {len(final.strip())} characters")
            return False
        if kind == "accepted" and (why := truncation_reason(final)) is not None:
            self.reject(row, f"{kind}-{TRUNCATED}", why)
            return False
        result = compile_answer(final, self.compiler)
        if result.code.strip() and not result.compiles:
            self.reject(row, f"{kind}-fails-checker", result.reason)
            return False
        key = example_id(messages)
        if key in self.seen_sft:
            self.result.skipped["duplicate"] += 1
            return True  # the same conversation is already in: its pair may still be new
        self.seen_sft.add(key)
        self.result.sft.append(
            {
                "messages": messages,
                "id": key,
                "source": "feedback",
                "kind": kind,
                "exchange": row["id"],
                "model": row["model"],
            }
        )
        return True

    def _pair(
        self, row: dict[str, Any], prompt: list[dict[str, str]], chosen: str, rejected: str, source: str
    ) -> None:
        good = self._clean(row, prompt, chosen)
        bad = self._clean(row, prompt, rejected) if good else None
        if good is None or bad is None:
            return
        if good[-1]["content"] == bad[-1]["content"]:
            return
        key = hashlib.sha256(json.dumps([good, bad[-1]], ensure_ascii=False).encode()).hexdigest()[:16]
        if key in self.seen_pairs:
            self.result.skipped["duplicate pair"] += 1
            return
        self.seen_pairs.add(key)
        self.result.pairs.append(
            {
                "prompt": good[:-1],
                "chosen": [good[-1]],
                "rejected": [bad[-1]],
                "id": key,
                "source": source,
                "exchange": row["id"],
                "model": row["model"],
            }
        )


def build(
    rows: list[dict[str, Any]],
    d: Any,
    *,
    compiler: str = "auto",
    eval_items: list[tuple[str, str]],
    checker_pairs: bool = False,
) -> FeedbackResult:
    """Training data from the log's rows (see the module doc); `d` is the data config (filters)."""
    index = ContaminationIndex(d.decontaminate_ngram, d.decontaminate_threshold)
    for label, prompt in eval_items:
        index.add(label, prompt)
    builder = _Builder(d, compiler, index, checker_pairs)
    builder.result.checked_against_prompts = len(eval_items)
    for row in rows:
        builder.add(row)
    return builder.result


def write(result: FeedbackResult, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / SFT_FILE, result.sft)
    atomic_write_jsonl(out_dir / PREFERENCE_FILE, result.pairs)
    atomic_write_jsonl(out_dir / REJECTED_FILE, result.rejected)
    summary = result.summary()
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def run(
    log_path: Path, out_dir: Path, d: Any, *, compiler: str, checker_pairs: bool, warn: Callable[[str], None]
) -> dict[str, Any]:
    rows = read_log(log_path)
    _, items = eval_prompts(d.decontaminate_against)
    result = build(
        rows,
        d,
        compiler=compiler,
        eval_items=[*items, *benchmark_prompts(warn, "feedback data")],
        checker_pairs=checker_pairs,
    )
    return write(result, out_dir)
