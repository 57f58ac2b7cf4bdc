"""Sampling in segments, with finished rows replaced by waiting ones (`sampling.engine: refill`).

A padded batch (`TransformersBackend`'s default) decodes until its longest row ends. Self-training's
answers end at very different lengths (on the real 0.5B: median 60 tokens, one in ten at the 512-token
limit), so most rows of a batch sit finished while the GPU still computes them: a real round used
2,071 tokens/s where forced-length rows gave 12,409. Here every row generates at most `segment` new
tokens at a time; after each segment the rows that ended (a stop token, a stop string, their token
limit) give back their place to rows still waiting, and the unfinished ones go on in the next
segment from their prompt plus what they have written (the cost: that text is read again, one
prefill per segment, which a GPU does much faster than decoding).

Each row is one sample (a request with n samples makes n rows). Greedy decoding gives the answer the
padded batch gives; sampling draws from the same distribution (a continuation depends only on the
text before it), with other random numbers. Results are yielded per request as soon as all its
samples ended, so the caller writes them at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from bbjtune.models.requests import Completion, Request, Sampling, generation_kwargs

Row = tuple[int, int]  # (request index, sample index)


def generate_refill(
    backend: Any, requests: Sequence[Request], sampling: Sampling, segment: int
) -> Iterator[tuple[int, list[Completion]]]:
    """Yield (index, n completions) per request, in segments of `segment` new tokens."""
    ids, groups = backend.prompt_groups(requests, sampling)
    for (max_new, request_stops), members in groups.items():
        yield from _group(backend, ids, members, max_new, request_stops, sampling, segment)


def _group(
    backend: Any,
    ids: list[list[int]],
    members: list[int],
    max_new: int,
    request_stops: tuple[str, ...],
    sampling: Sampling,
    segment: int,
) -> Iterator[tuple[int, list[Completion]]]:
    torch = backend._torch
    tok = backend.tokenizer
    stop_ids, stops = backend.token_stops(request_stops)
    stop_set = set(stop_ids)
    # longest prompts first: an out-of-memory batch shows up at the start
    queue: deque[Row] = deque(
        (i, s) for i in sorted(members, key=lambda i: -len(ids[i])) for s in range(sampling.n)
    )
    written: dict[Row, list[int]] = {}
    seconds: dict[Row, float] = {}
    results: dict[int, list[Completion | None]] = {i: [None] * sampling.n for i in members}
    budget = backend.batch_tokens or backend.batch_size * sampling.n * (max(map(len, ids)) + max_new)
    active: list[Row] = []
    step = 0

    def length(row: Row) -> int:  # the row's text so far: prompt and answer
        return len(ids[row[0]]) + len(written.get(row, ()))

    while queue or active:
        # rows x (longest text + one segment) within the budget. The texts grow, so when they no longer fit,
        # the longest rows wait (keeping what they wrote) until others end; then waiting rows fill the room
        active.sort(key=length)
        widest = length(active[-1]) + segment if active else 0
        while len(active) > 1 and len(active) * widest > budget:
            queue.appendleft(active.pop())
            widest = length(active[-1]) + segment
        while queue and (not active or (len(active) + 1) * max(widest, length(queue[0]) + segment) <= budget):
            widest = max(widest, length(queue[0]) + segment)
            active.append(queue.popleft())
        seqs = [ids[i] + written.get((i, s), []) for i, s in active]
        new = min(segment, max(max_new - len(written.get(r, ())) for r in active))
        enc = tok.pad({"input_ids": seqs}, padding=True, return_tensors="pt").to(backend.device)
        kwargs = generation_kwargs(backend, sampling, stop_ids, stops, new)
        torch.manual_seed(sampling.seed + step)
        step += 1
        t0 = time.monotonic()
        try:
            with torch.inference_mode():
                out = backend.model.generate(**enc, **kwargs)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(active) == 1:
                (i, s), active = active[0], []
                results[i][s] = Completion.failed("out of GPU memory for this prompt; lower max_new_tokens")
                yield from _finished(results, i)
                continue
            budget = max(1, budget // 2)
            queue.extendleft(reversed(active[len(active) // 2 :]))  # they keep what they wrote
            active = active[: len(active) // 2]
            continue
        share = (time.monotonic() - t0) / len(active)
        still: list[Row] = []
        for row, got in zip(active, out[:, enc["input_ids"].shape[1] :].tolist()):
            seconds[row] = seconds.get(row, 0.0) + share
            end = next((k for k, t in enumerate(got) if t in stop_set), None)
            text = written.setdefault(row, [])
            text.extend(got if end is None else got[: end + 1])
            del text[max_new:]
            done = end is not None or len(text) >= max_new
            if not done and stops:
                done = any(s in tok.decode(text, skip_special_tokens=True) for s in stops)
            if not done:
                still.append(row)
                continue
            i, s = row
            answer, finish, n_tok = backend.answer(written.pop(row), stop_set, stops)
            results[i][s] = Completion(answer, finish, None, round(seconds.pop(row), 4), n_tok)
            yield from _finished(results, i)
        active = still


def _finished(results: dict[int, list[Completion | None]], i: int) -> Iterator[tuple[int, list[Completion]]]:
    """(i, its completions) once every sample of request i has ended."""
    if all(c is not None for c in results[i]):
        yield i, results.pop(i)  # type: ignore[misc]
