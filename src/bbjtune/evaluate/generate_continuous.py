"""Continuous batching for the transformers backend (`TransformersBackend(continuous=True)`).

transformers' `generate_batch` keeps a paged KV cache and refills the batch as soon as a sequence
ends, instead of running every row of a batch until its longest answer ends. With n samples per
prompt it prefills the prompt once and forks n sequences from it (its "child" requests share the
prompt's cache blocks). Both matter for self-training: k=8 sampled answers per prompt differ a lot
in length, and a padded batch computes the short ones' rows for nothing until the longest stops.

Prompts go in chunks of `chunk` prompts so results reach the caller (and the samples file) while
the run goes on. On a CPU it is slow (tens of seconds for a dozen short answers from a tiny model:
the engine is built for GPUs), so the padded batches stay the default; benchmarks/sample_speed.py
measures both on a GPU in one run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from bbjtune.evaluate.generate import Completion, Request, Sampling, truncate_at_stop


def generate_continuous(backend: Any, requests: Sequence[Request], sampling: Sampling,
                        chunk: int = 256) -> Iterator[tuple[int, list[Completion]]]:
    """Yield (index, n completions) per request, chunk by chunk, through `model.generate_batch`."""
    from transformers import GenerationConfig

    torch = backend._torch
    tok = backend.tokenizer
    prompts = [backend.render(r) for r in requests]
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.max_new_tokens or sampling.max_new_tokens, r.stop), []).append(i)
    for (max_new, stops), members in groups.items():
        config = GenerationConfig(max_new_tokens=max_new, num_return_sequences=sampling.n,
                                  min_new_tokens=getattr(backend.model.generation_config, "min_new_tokens", None),
                                  eos_token_id=backend.stop_ids, pad_token_id=tok.pad_token_id,
                                  do_sample=sampling.temperature > 0,
                                  **({"temperature": sampling.temperature, "top_p": sampling.top_p}
                                     if sampling.temperature > 0 else {}))
        for start in range(0, len(members), chunk):
            part = members[start:start + chunk]
            torch.manual_seed(sampling.seed + start)
            t0 = time.monotonic()
            with torch.inference_mode():
                outputs = backend.model.generate_batch([ids[i] for i in part], generation_config=config,
                                                       progress_bar=False)
            share = (time.monotonic() - t0) / len(part)
            by_prompt: dict[tuple[int, ...], list[int]] = {}
            for i in part:
                by_prompt.setdefault(tuple(ids[i]), []).append(i)
            found: dict[int, list[Completion]] = {i: [] for i in part}
            for out in outputs.values():
                owners = by_prompt.get(tuple(out.prompt_ids)) or []
                owner = next((i for i in owners if len(found[i]) < sampling.n), None)
                if owner is not None:
                    found[owner].append(_completion(backend, out, stops, share))
            for i in part:
                got = found[i] + [Completion.failed("continuous batching returned no answer", share)] * (
                    sampling.n - len(found[i]))
                yield i, got


def _completion(backend: Any, out: Any, stops: tuple[str, ...], share: float) -> Completion:
    if out.error is not None:
        return Completion.failed(str(out.error), share)
    tokens = list(out.generated_tokens)
    stop_set = set(backend.stop_ids)
    end = next((k for k, t in enumerate(tokens) if t in stop_set), None)
    finish = "stop" if end is not None else "length"
    tokens = tokens if end is None else tokens[:end]
    backend.generated_tokens += len(tokens)
    text, hit = truncate_at_stop(backend.tokenizer.decode(tokens, skip_special_tokens=True), stops)
    return Completion(text, "stop" if hit else finish, None, round(share, 4), len(tokens))
