"""Generation backends behind one interface, and the local transformers backend.

A backend turns `Request`s (a chat conversation, or a raw text to continue) into `Completion`s:
n samples per request, with the same sampling settings everywhere. Three backends:

- `transformers` (this file): a model loaded in this process, optionally with a LoRA adapter on
  top of a base; prompts are rendered with the model's chat template, batched by similar length
  with left padding, and generation stops on `<|im_end|>` and `<|endoftext|>`. Batches hold a
  fixed number of prompts (`batch_size`), or as many as fit a token budget (`batch_tokens`:
  sequences x (longest prompt + new tokens)), which keeps a GPU busy when n samples per prompt
  multiply the rows; `static_cache` pre-allocates the KV cache, which lets transformers compile
  the decoding step on a GPU (prompts are then padded to a multiple of 64 tokens, so few distinct
  shapes need compiling). `continuous` hands the prompts to transformers' continuous batching
  instead (`generate_continuous`, at the end of this file); `refill_segment` decodes in segments and
  gives the rows of ended answers to waiting ones (generate_refill.py). The types all backends share
  are in requests.py.
- `http` (generate_http.py): any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server).
- `gguf` (generate_gguf.py): a GGUF file through llama-cpp-python.

Backends yield results as they finish so the caller can write them to disk at once: a killed
run loses at most one batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from bbjtune.errors import BbjtuneError
from bbjtune.models import load_model, load_tokenizer
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, render_chatml
from bbjtune.models.merge import apply_adapter
from bbjtune.models.generate_refill import generate_refill
from bbjtune.models.requests import (  # noqa: F401 — the backends import these from here
    Backend,
    Completion,
    Request,
    Sampling,
    generation_kwargs,
    truncate_at_stop,
    window_repeat_penalty,
)
from bbjtune.models.trained import load_trained

STOP_TOKENS = (IM_END, ENDOFTEXT)
SMALL_MODEL_PARAMS = 100_000_000  # below this, CPU generation runs single-threaded


# ----------------------------------------------------------------------------- transformers


class TransformersBackend:
    """A causal LM in this process; batched generation with left padding."""

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        description: dict[str, Any] | None = None,
        batch_tokens: int | Literal["auto"] | None = None,
        static_cache: bool = False,
        continuous: bool = False,
        refill_segment: int | None = None,
    ):
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = (
                ENDOFTEXT if ENDOFTEXT in self.tokenizer.get_vocab() else self.tokenizer.eos_token
            )
        self.batch_size = batch_size
        self.static_cache = static_cache
        self.continuous = continuous
        self.refill_segment = refill_segment  # generate_refill.py: segments of this many new tokens
        self.device = next(model.parameters()).device
        self.batch_tokens = (
            auto_batch_tokens(model.config, self.device) if batch_tokens == "auto" else batch_tokens
        )
        self.stop_ids = self._stop_ids()
        self._description = description or {}
        self._torch = torch
        self.generated_tokens = 0

    @classmethod
    def load(
        cls,
        source: str,
        adapter: str | None = None,
        tokenizer: str | None = None,
        dtype: str = "auto",
        batch_size: int = 16,
        batch_tokens: int | Literal["auto"] | None = None,
        static_cache: bool = False,
        continuous: bool = False,
        refill_segment: int | None = None,
    ) -> TransformersBackend:
        """A model from any source bbjtune accepts, with an optional LoRA adapter applied on top."""
        import torch

        device_map = "auto" if torch.cuda.is_available() else None
        model = load_model(source, dtype=dtype, device_map=device_map)
        tok_source = tokenizer or (adapter if adapter and _has_tokenizer(adapter) else source)
        tok = load_tokenizer(tok_source)
        if adapter:
            model = apply_adapter(model, adapter)
        return cls(
            model,
            tok,
            batch_size,
            {"source": source, "adapter": adapter, "tokenizer": str(tok_source)},
            batch_tokens=batch_tokens,
            static_cache=static_cache,
            continuous=continuous,
            refill_segment=refill_segment,
        )

    @classmethod
    def from_trained(
        cls, trained: str | Path, dtype: str = "auto", batch_size: int = 16, refill_segment: int | None = None
    ) -> TransformersBackend:
        """The fine-tuned model described by a train run's trained.json (or its run directory)."""
        import torch

        device_map = "auto" if torch.cuda.is_available() else None
        model, tok = load_trained(trained, dtype=dtype, device_map=device_map, merge=True)
        return cls(model, tok, batch_size, {"trained": str(trained)}, refill_segment=refill_segment)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "batch_size": self.batch_size,
            "batch_tokens": self.batch_tokens,
            "static_cache": self.static_cache,
            "continuous": self.continuous,
            "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            **({"refill_segment": self.refill_segment} if self.refill_segment else {}),
            **self._description,
        }

    def close(self) -> None:
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    def _stop_ids(self) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in STOP_TOKENS if t in vocab}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return sorted(ids)

    def render(self, request: Request) -> str:
        if request.text is not None:
            return request.text
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
        return render_chatml(request.messages, add_generation_prompt=True)

    def generate(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[Completion]]]:
        torch = self._torch
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and sum(p.numel() for p in self.model.parameters()) < SMALL_MODEL_PARAMS:
            # Small matrices: thread start-up costs more than it saves (20x slower on a busy 2-core box).
            torch.set_num_threads(1)
        try:
            if self.continuous:
                yield from generate_continuous(self, requests, sampling)
            elif self.refill_segment:
                yield from generate_refill(self, requests, sampling, self.refill_segment)
            else:
                yield from self._generate_all(requests, sampling)
        finally:
            torch.set_num_threads(threads)

    def _generate_all(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[Completion]]]:
        prompts = [self.render(r) for r in requests]
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        # Same settings together, then longest first: similar lengths share a batch (little padding)
        # and an out-of-memory batch shows up at the start, not after an hour.
        order = sorted(
            range(len(requests)),
            key=lambda i: (
                requests[i].max_new_tokens or sampling.max_new_tokens,
                requests[i].stop,
                -lengths[i],
            ),
        )
        for batch_no, batch in enumerate(self._batches(order, lengths, requests, sampling)):
            groups = _split_by_settings(batch, requests)
            for group in groups:
                yield from self._generate_batch(
                    group, prompts, requests, sampling, seed=sampling.seed + batch_no
                )

    def _batches(
        self, order: list[int], lengths: list[int], requests: Sequence[Request], sampling: Sampling
    ) -> Iterator[list[int]]:
        """`batch_size` prompts at a time, or as many as keep rows x (longest prompt + new tokens) within batch_tokens."""
        if not self.batch_tokens:
            for start in range(0, len(order), self.batch_size):
                yield order[start : start + self.batch_size]
            return
        batch: list[int] = []
        longest = 0
        for i in order:
            new = requests[i].max_new_tokens or sampling.max_new_tokens
            wider = max(longest, lengths[i] + new)
            if batch and (len(batch) + 1) * sampling.n * wider > self.batch_tokens:
                yield batch
                batch, wider = [], lengths[i] + new
            batch.append(i)
            longest = wider
        if batch:
            yield batch

    def _generate_batch(
        self, batch: list[int], prompts: list[str], requests: Sequence[Request], sampling: Sampling, seed: int
    ) -> Iterator[tuple[int, list[Completion]]]:
        torch = self._torch
        req = requests[batch[0]]
        max_new = req.max_new_tokens or sampling.max_new_tokens
        t0 = time.monotonic()
        try:
            texts = self._run_generate([prompts[i] for i in batch], req.stop, max_new, sampling, seed)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                yield (
                    batch[0],
                    [Completion.failed("out of GPU memory for this prompt; lower max_new_tokens")]
                    * sampling.n,
                )
                return
            torch.cuda.empty_cache()
            half = len(batch) // 2
            yield from self._generate_batch(batch[:half], prompts, requests, sampling, seed)
            yield from self._generate_batch(batch[half:], prompts, requests, sampling, seed)
            return
        share = (time.monotonic() - t0) / len(batch)
        for j, i in enumerate(batch):
            yield (
                i,
                [
                    Completion(text, finish, None, round(share, 4), n_tok)
                    for text, finish, n_tok in texts[j * sampling.n : (j + 1) * sampling.n]
                ],
            )

    def prompt_groups(
        self, requests: Sequence[Request], sampling: Sampling
    ) -> tuple[list[list[int]], dict[tuple[int, tuple[str, ...]], list[int]]]:
        """The prompts' token ids, and the requests grouped by (token limit, stop strings)."""
        ids = self.tokenizer([self.render(r) for r in requests], add_special_tokens=False)["input_ids"]
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_new_tokens or sampling.max_new_tokens, r.stop), []).append(i)
        return ids, groups

    def token_stops(self, stops: tuple[str, ...]) -> tuple[list[int], tuple[str, ...]]:
        """(stop token ids, remaining stop strings) for a request's stops.

        A stop that is one special token (the FIM suite's <|fim_prefix|>, <|file_sep|>, ...) ends generation
        as a stop id: decoding skips special tokens, so as a stop string it would never be seen. Added
        tokens count too: Qwen's tokenizer read from a GGUF lists the FIM tokens as added, not special."""
        special = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        vocab = self.tokenizer.get_vocab()
        stop_ids = sorted(set(self.stop_ids) | {vocab[s] for s in stops if s in special and s in vocab})
        return stop_ids, tuple(s for s in stops if s not in special)

    def _run_generate(
        self, prompts: list[str], stops: tuple[str, ...], max_new: int, sampling: Sampling, seed: int
    ) -> list[tuple[str, str, int]]:
        torch = self._torch
        enc = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
            pad_to_multiple_of=64 if self.static_cache else None,
        ).to(self.device)
        stop_ids, stops = self.token_stops(stops)
        kwargs = generation_kwargs(self, sampling, stop_ids, stops, max_new)
        kwargs["num_return_sequences"] = sampling.n
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        stop_set = set(stop_ids)
        return [self.answer(ids, stop_set, stops) for ids in out[:, enc["input_ids"].shape[1] :].tolist()]

    def answer(self, ids: Sequence[int], stop_ids: set[int], stops: tuple[str, ...]) -> tuple[str, str, int]:
        """(text, finish reason, tokens) of generated ids: cut at the first stop id, then at the first stop string."""
        end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
        finish = "stop" if end is not None else "length"
        ids = ids if end is None else ids[:end]
        self.generated_tokens += len(ids)
        text, hit = truncate_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stops)
        return text, "stop" if hit else finish, len(ids)


# Sampling batches sized to the GPU (`sampling.batch_tokens: auto`). Measured on one H200 with the
# 0.5B shape (benchmarks/results/sample_speed-2026-12-06-h200.json): 2,048 rows x 233 tokens peaked
# at 22.9 GiB above the weights, 4.2x their KV cache (the growing cache is copied as it grows; fp32
# logits and top-p sorting per row). Half of the free memory goes to the batch, which keeps the OOM
# fallback (halving a batch) for the unforeseen.
AUTO_MEMORY_SHARE = 0.5
AUTO_BYTES_PER_KV_BYTE = 4.2
AUTO_CPU_BATCH_TOKENS = 65_536
AUTO_MAX_BATCH_TOKENS = 4_194_304


def kv_bytes_per_token(config: Any, dtype_bytes: int = 2) -> int:
    """Bytes of K and V cache one token takes across all layers of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def batch_tokens_for(config: Any, free_bytes: int, dtype_bytes: int = 2) -> int:
    """The token budget (rows x (prompt + new tokens)) that fits `free_bytes` of GPU memory."""
    per_token = AUTO_BYTES_PER_KV_BYTE * kv_bytes_per_token(config, dtype_bytes)
    budget = int(AUTO_MEMORY_SHARE * free_bytes / per_token)
    return max(4_096, min(AUTO_MAX_BATCH_TOKENS, budget // 4_096 * 4_096))


def auto_batch_tokens(config: Any, device: Any) -> int:
    """`batch_tokens: auto`: sized to the free memory of the model's GPU; a fixed budget on a CPU."""
    import torch

    if getattr(device, "type", "cpu") != "cuda":
        return AUTO_CPU_BATCH_TOKENS
    free, _total = torch.cuda.mem_get_info(device)
    dtype = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None)
    dtype_bytes = 4 if str(dtype).endswith("float32") else 2
    return batch_tokens_for(config, free, dtype_bytes)


def _split_by_settings(batch: list[int], requests: Sequence[Request]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i in batch:
        groups.setdefault((requests[i].max_new_tokens, requests[i].stop), []).append(i)
    return list(groups.values())


def _has_tokenizer(path: str) -> bool:
    p = Path(path)
    return (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists()


# ----------------------------------------------------------------------------- continuous batching
# transformers' `generate_batch` keeps a paged KV cache and refills the batch as soon as a sequence
# ends, instead of running every row of a batch until its longest answer ends. With n samples per
# prompt it prefills the prompt once and forks n sequences from it (its "child" requests share the
# prompt's cache blocks). Both matter for self-training: k=8 sampled answers per prompt differ a lot
# in length, and a padded batch computes the short ones' rows for nothing until the longest stops.
# Prompts go in chunks of `chunk` prompts so results reach the caller (and the samples file) while
# the run goes on. On a CPU it is slow (tens of seconds for a dozen short answers from a tiny model:
# the engine is built for GPUs), so the padded batches stay the default; benchmarks/sample_speed.py
# measures both on a GPU in one run.


def generate_continuous(
    backend: Any, requests: Sequence[Request], sampling: Sampling, chunk: int = 256
) -> Iterator[tuple[int, list[Completion]]]:
    """Yield (index, n completions) per request, chunk by chunk, through `model.generate_batch`."""
    from transformers import GenerationConfig

    torch = backend._torch
    tok = backend.tokenizer
    ids, groups = backend.prompt_groups(requests, sampling)
    for (max_new, request_stops), members in groups.items():
        stop_ids, stops = backend.token_stops(request_stops)
        config = GenerationConfig(
            max_new_tokens=max_new,
            num_return_sequences=sampling.n,
            min_new_tokens=getattr(backend.model.generation_config, "min_new_tokens", None),
            eos_token_id=stop_ids,
            pad_token_id=tok.pad_token_id,
            do_sample=sampling.temperature > 0,
            **(
                {"temperature": sampling.temperature, "top_p": sampling.top_p}
                if sampling.temperature > 0
                else {}
            ),
        )
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            torch.manual_seed(sampling.seed + start)
            t0 = time.monotonic()
            with torch.inference_mode():
                outputs = backend.model.generate_batch(
                    [ids[i] for i in part], generation_config=config, progress_bar=False
                )
            if not outputs:
                # seen with transformers 5.17 on an H200: no output and no error, 0.6 s for 2,048 answers
                raise BbjtuneError(
                    f"transformers {transformers_version()}'s continuous batching returned no answers "
                    f"for {len(part)} prompts",
                    "use the padded batches instead (sampling.engine: batched, the default)",
                )
            share = (time.monotonic() - t0) / len(part)
            by_prompt: dict[tuple[int, ...], list[int]] = {}
            for i in part:
                by_prompt.setdefault(tuple(ids[i]), []).append(i)
            found: dict[int, list[Completion]] = {i: [] for i in part}
            for out in outputs.values():
                owners = by_prompt.get(tuple(out.prompt_ids)) or []
                owner = next((i for i in owners if len(found[i]) < sampling.n), None)
                if owner is not None:
                    found[owner].append(_completion(backend, out, stop_ids, stops, share))
            for i in part:
                got = found[i] + [Completion.failed("continuous batching returned no answer", share)] * (
                    sampling.n - len(found[i])
                )
                yield i, got


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _completion(
    backend: Any, out: Any, stop_ids: list[int], stops: tuple[str, ...], share: float
) -> Completion:
    if out.error is not None:
        return Completion.failed(str(out.error), share)
    text, finish, tokens = backend.answer(list(out.generated_tokens), set(stop_ids), stops)
    return Completion(text, finish, None, round(share, 4), tokens)
