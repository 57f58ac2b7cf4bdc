"""generations.jsonl: every sample a model produced, written as it is produced, before any scoring.

One line per sample (see INTERFACES.md): id, prompt, category, generation, task, sample, output,
code, finish_reason, error, latency_s, model, suite. Lines are appended and fsync'ed after each
finished prompt, so a killed run keeps what it had; running the same command again skips every
prompt whose samples are all there (samples that failed to generate, finish_reason "error", are
tried again). Scoring reads only this file and cases.jsonl, so it can be re-run without the model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_jsonl, read_complete_jsonl
from bbjtune.models.generate import Backend, Completion, Request, Sampling

GENERATIONS_FILE = "generations.jsonl"
EMPTY_ANSWER = "the model returned an empty answer"


@dataclass
class GenerationStats:
    requests: int = 0
    reused: int = 0
    generated: int = 0
    failed_samples: int = 0
    seconds: float = 0.0
    tokens: int = 0
    first_error: str | None = None


def request_key(meta: dict[str, Any]) -> tuple[str, str]:
    return (meta["suite"], meta["id"])


def completed_keys(rows: Sequence[dict[str, Any]], n_samples: int) -> set[tuple[str, str]]:
    """Prompts whose samples 0..n-1 are all present and were generated (not failed)."""
    good: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        if r.get("finish_reason") != "error":
            good.setdefault((r["suite"], r["id"]), set()).add(r["sample"])
    want = set(range(n_samples))
    return {k for k, samples in good.items() if want <= samples}


def make_row(request: Request, sample: int, completion: Completion, label: str, code: str) -> dict[str, Any]:
    m = request.meta
    error = completion.error
    if error is None and not completion.text.strip():
        error = EMPTY_ANSWER
    return {
        "id": m["id"],
        "prompt": m.get("prompt", ""),
        "category": m.get("category"),
        "generation": m.get("generation"),
        "task": m.get("task"),
        "sample": sample,
        "output": completion.text,
        "code": code if error is None else "",
        "finish_reason": completion.finish_reason,
        "error": error,
        "latency_s": completion.latency_s,
        "tokens": completion.tokens,
        "model": label,
        "suite": m["suite"],
        **({"gateway": completion.gateway} if completion.gateway is not None else {}),
    }


def generate_to_file(
    backend_factory: Callable[[], Backend],
    requests: Sequence[Request],
    sampling: Sampling,
    path: str | Path,
    label: str,
    extract: Callable[[Request, str], str],
    on_done: Callable[[int], None] | None = None,
) -> GenerationStats:
    """Generate what is missing from `path` and append it; the backend is only built when needed."""
    path = Path(path)
    rows = read_complete_jsonl(path)
    done = completed_keys(rows, sampling.n)
    todo = [r for r in requests if request_key(r.meta) not in done]
    stats = GenerationStats(requests=len(requests), reused=len(requests) - len(todo))
    # Keep finished prompts only (drops failed or partial samples and a torn last line).
    atomic_write_jsonl(path, [r for r in rows if (r["suite"], r["id"]) in done])
    if on_done and stats.reused:
        on_done(stats.reused)
    if not todo:
        return stats
    backend = backend_factory()
    t0 = time.monotonic()
    try:
        with open(path, "a", encoding="utf-8") as fh:
            for index, completions in backend.generate(todo, sampling):
                request = todo[index]
                for s, completion in enumerate(completions):
                    code = extract(request, completion.text) if completion.error is None else ""
                    row = make_row(request, s, completion, label, code)
                    if row["error"] is not None:
                        stats.failed_samples += 1
                        stats.first_error = stats.first_error or row["error"]
                    stats.tokens += completion.tokens or 0
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                stats.generated += 1
                if on_done:
                    on_done(1)
    finally:
        stats.seconds = round(time.monotonic() - t0, 3)
        backend.close()
    return stats
