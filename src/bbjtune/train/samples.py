"""Self-training's prompts and samples: which prompts the model answers, k times each.

`sampling.prompts` picks them. `fresh` (the default): the data stage's `selftrain-prompts.jsonl`,
prompts derived from the BBj sources that stage 2 did not train on, plus `sampling.extra_prompts`
(e.g. `bbjtune data derive` output); on train.jsonl's prompts a model just tuned on their answers
mostly recalls them (66.6 % of one round's samples passed there, against compile@1 55.9 % on unseen
eval prompts: Qwen2.5-Coder-0.5B-Instruct, one H100), so they teach less. Without fresh prompts (no
data.sources) it falls back to `train`, with a note: the prepared `train.jsonl` plus the extra files;
`both` takes all of them. Every prompt is checked again against
the eval suites and the held-out split with the data stage's own index and settings
(`bbjtune.decontamination`, `data.decontaminate_*`), so nothing close to what is measured is
trained on. A prompt needs a reference answer with BBj code: its must-patterns come from there,
and a prose answer cannot be checked.

Samples are written to `samples.jsonl`, one line per answer with its verdict, appended and
fsync'ed after each prompt; a killed run keeps complete lines (a torn last line is dropped and the
file rewritten atomically) and the next run samples only the prompts not yet complete.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_jsonl, read_complete_jsonl
from bbjtune.bbj import extract_bbj
from bbjtune.bbj.must import derive_must_patterns
from bbjtune.config import SELFTRAIN_PROMPTS_FILE, RunConfig, SelfSampleConfig, expand_globs
from bbjtune.decontamination import ContaminationIndex, eval_prompts, example_id, prompt_of
from bbjtune.errors import BbjtuneError
from bbjtune.models.generate import Request, Sampling
from bbjtune.train.inputs import load_conversations
from bbjtune.train.verdict import judge

SAMPLES_FILE = "samples.jsonl"
FRESH, TRAIN, EXTRA = "fresh", "train", "extra"  # where a prompt came from (round.json's prompt_sources)


@dataclass
class SelfPrompt:
    id: str
    context: list[dict[str, str]]  # the conversation up to and including the last user turn
    reference: str  # the training data's answer
    must: list[str]  # patterns derived from the reference's code
    # FRESH (selftrain-prompts.jsonl), TRAIN (train.jsonl) or EXTRA (sampling.extra_prompts)
    source: str = TRAIN


@dataclass
class PromptSet:
    prompts: list[SelfPrompt] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    notes: list[str] = field(default_factory=list)  # for the console: e.g. the fallback to train prompts

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def training_prompts(
    cfg: RunConfig, conversations: Sequence[list[dict[str, str]]], sampling: SelfSampleConfig
) -> PromptSet:
    """The prompts a self-training round samples (`sampling.prompts`), decontaminated, at most max_prompts."""
    d = cfg.data
    index = ContaminationIndex(d.decontaminate_ngram, d.decontaminate_threshold)
    for label, prompt in eval_prompts(d.decontaminate_against)[1]:
        index.add(label, prompt)
    for n, conv in enumerate(load_conversations(cfg.data_dir / "heldout.jsonl", required=False), 1):
        index.add(f"held-out {n}", prompt_of(conv))
    extra: list[list[dict[str, str]]] = []
    for path in expand_globs(sampling.extra_prompts):
        extra.extend(load_conversations(path))
    if sampling.extra_prompts and not extra:
        raise BbjtuneError(
            f"sampling.extra_prompts {sampling.extra_prompts} matched no conversations",
            "check the globs, or remove extra_prompts",
        )
    fresh_path = cfg.data_dir / SELFTRAIN_PROMPTS_FILE
    fresh = load_conversations(fresh_path, required=False)
    mode, notes = sampling.prompts, []
    if mode == "fresh" and not fresh:
        mode = "train"
        why = (
            f"{fresh_path} has no prompts (data.sources gave none)"
            if fresh_path.exists()
            else f"no {fresh_path} (prepare the data again to derive fresh prompts)"
        )
        notes.append(f"{why}: sampling the training prompts instead, which the model was just trained on")
    candidates = [
        *((TRAIN, c) for c in (conversations if mode in ("train", "both") else [])),
        *((FRESH, c) for c in (fresh if mode in ("fresh", "both") else [])),
        *((EXTRA, c) for c in extra),
    ]
    out = PromptSet(notes=notes)
    seen: set[str] = set()
    for origin, conv in candidates:
        last_answer = max((i for i, m in enumerate(conv) if m["role"] == "assistant"), default=-1)
        context = conv[:last_answer]
        if last_answer < 1 or context[-1]["role"] != "user":
            out.skip("no user turn before the answer")
            continue
        pid = example_id(context)
        if pid in seen:
            out.skip("duplicate prompt")
            continue
        seen.add(pid)
        if len(index) and index.match(prompt_of(context)) is not None:
            out.skip("overlaps an eval or held-out prompt")
            continue
        reference = conv[last_answer]["content"]
        if not extract_bbj(reference).strip():
            out.skip("reference has no BBj code")
            continue
        out.prompts.append(SelfPrompt(pid, context, reference, derive_must_patterns(reference), origin))
    if sampling.max_prompts and len(out.prompts) > sampling.max_prompts:
        # a seeded sample across all files, not the first file's prompts (train.jsonl keeps the input order)
        keep = set(random.Random(sampling.seed).sample(range(len(out.prompts)), sampling.max_prompts))
        out.prompts = [p for i, p in enumerate(out.prompts) if i in keep]
    return out


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Complete lines of samples.jsonl (a line torn by a kill is left out; sample_prompts rewrites the file)."""
    return read_complete_jsonl(path)


def sample_prompts(
    backend: Any,
    prompts: Sequence[SelfPrompt],
    sampling: SelfSampleConfig,
    path: Path,
    *,
    seed: int,
    on_prompt: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """k samples per prompt (and the greedy answer, sample k, with `sampling.greedy`), judged and appended
    to `path`; prompts already complete there are not sampled again."""
    k = sampling.samples_per_prompt
    rows = read_samples(path)
    done = {pid for pid, n in Counter(r["prompt_id"] for r in rows if r["sample"] < k).items() if n >= k}
    greedy_done = {r["prompt_id"] for r in rows if r["sample"] == k} if sampling.greedy else set()
    rows = [  # a prompt cut off halfway is sampled again in full
        r
        for r in rows
        if (r["sample"] < k and r["prompt_id"] in done)
        or (r["sample"] == k and r["prompt_id"] in greedy_done)
    ]
    atomic_write_jsonl(path, rows)
    todo = [p for p in prompts if p.id not in done]
    if on_prompt and done:
        on_prompt(len(done & {p.id for p in prompts}))
    settings = Sampling(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        n=k,
        seed=seed,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows += _sample_into(path, backend, todo, settings, sampling, first=0, on_prompt=on_prompt)
    if sampling.greedy:
        greedy = Sampling(temperature=0.0, max_new_tokens=sampling.max_new_tokens, n=1, seed=seed)
        todo = [p for p in prompts if p.id not in greedy_done]
        rows += _sample_into(path, backend, todo, greedy, sampling, first=k, on_prompt=None)
    return rows


def _sample_into(
    path: Path,
    backend: Any,
    todo: Sequence[SelfPrompt],
    settings: Sampling,
    sampling: SelfSampleConfig,
    *,
    first: int,
    on_prompt: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """Generate for `todo`, judge, append each prompt's answers (numbered from `first`) as they come."""
    if not todo:
        return []
    requests = [Request(messages=p.context, meta={"id": p.id}) for p in todo]
    rows: list[dict[str, Any]] = []
    with open(path, "a", encoding="utf-8") as fh:
        for i, completions in backend.generate(requests, settings):
            prompt = todo[i]
            new = [_row(prompt, first + s, c, sampling) for s, c in enumerate(completions)]
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            fh.flush()
            os.fsync(fh.fileno())
            rows.extend(new)
            if on_prompt:
                on_prompt(1)
    return rows


def _row(prompt: SelfPrompt, sample: int, completion: Any, sampling: SelfSampleConfig) -> dict[str, Any]:
    verdict = judge(
        completion.text,
        prompt.must,
        finish_reason=completion.finish_reason,
        compiler=sampling.compiler,
        min_pattern_share=sampling.min_pattern_share,
    )
    if completion.error:  # the backend could not answer: neither a good nor a bad example
        verdict.clean = verdict.compiles = False
    return {
        "prompt_id": prompt.id,
        "prompt_source": prompt.source,
        "sample": sample,
        "output": completion.text,
        "finish_reason": completion.finish_reason,
        "error": completion.error,
        "tokens": completion.tokens,
        "verdict": verdict.to_dict(),
    }


def by_prompt(rows: Sequence[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("error"):
            groups.setdefault(r["prompt_id"], []).append(r)
    yield from groups.items()
