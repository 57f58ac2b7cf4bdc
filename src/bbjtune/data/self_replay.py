"""Self-distilled replay: the model's own answers to general coding prompts, made by the data stage.

Stage 2 on BBj alone cost the real Qwen2.5-Coder-0.5B-Instruct 11.6 HumanEval points (56.1 -> 44.5);
with 20 % of its examples the model's own answers to the 160 shipped general prompts (2 samples at
temperature 0.7) it kept 55.5 while BBj compile@1 rose from 47.9 to 55.9 (experiments/real-0.5b/
RESULTS.md, 2026-12-06). `data.self_replay` makes that the default of the presets: `prepare` (so
`bbjtune run` and `bbjtune data prepare`) writes `<run>/replay/self-distilled.jsonl` when it is
missing or unfinished and reads it as one more `data.replay` file.

`distill(...)` is the generation itself, shared with `bbjtune data replay`: the prompts, the
progress bar, replay.generate (which resumes) and the one-line summary.

Answering loads a model, so it needs the GPU machine; it happens once per run: the file is kept,
and a second preparation only asks the prompts not asked yet. `bbjtune config check` and
`bbjtune train --dry-run` never call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.config import RunConfig
from bbjtune.data import replay
from bbjtune.errors import BbjtuneError
from bbjtune.models.backend import make_backend
from bbjtune.models.loading import find_architecture
from bbjtune.progress import progress_bar

SELF_REPLAY_FILE = Path("replay") / "self-distilled.jsonl"  # under the run folder


@dataclass
class Distilled:
    """One data stage's self-replay: where, who answered, and the totals over every run that wrote the file."""

    path: Path
    model: str
    prompts: int
    samples: int
    written_now: int
    totals: dict[str, int]

    def record(self, kept: int) -> dict[str, Any]:
        """For audit.json and the data manifest: `kept` is how many of the answers prepare kept."""
        return {
            "file": str(self.path),
            "model": self.model,
            "prompts": self.prompts,
            "samples": self.samples,
            **self.totals,
            "written_now": self.written_now,
            "kept": kept,
        }


def answering_model(cfg: RunConfig) -> str:
    """data.self_replay.model, else model.source (the config check refuses a Base model without one)."""
    return cfg.data.self_replay.model or cfg.model.source


def target(cfg: RunConfig) -> Path:
    return cfg.run_dir / SELF_REPLAY_FILE


def skip_reason(cfg: RunConfig) -> str | None:
    """Why an enabled self-replay is not made for this run (None: it is)."""
    if "sft" not in cfg.train_stages:
        return "stage 2 does not run (train.stages)"
    if cfg.train.sft.replay_ratio <= 0:
        return "train.sft.replay_ratio is 0"
    return None


def ensure(cfg: RunConfig, console: Console) -> Distilled | None:
    """Make or finish `<run>/replay/self-distilled.jsonl` when data.self_replay asks for it."""
    s = cfg.data.self_replay
    if not s.enabled:
        return None
    if (why := skip_reason(cfg)) is not None:
        console.print(f"data.self_replay: not made, {why}", highlight=False)
        return None
    if cfg.model.kind == "base" and not s.model:  # refused when a config is loaded; one built in code is not
        raise BbjtuneError(
            f"data.self_replay: model.source {cfg.model.source} is a Base model, which does not answer chat requests",
            "set data.self_replay.model to its Instruct sibling, or data.self_replay.enabled: false",
        )
    model = answering_model(cfg)
    path = target(cfg)
    prompts = Path(s.prompts) if s.prompts else replay.DEFAULT_PROMPTS
    result, n_prompts = distill(
        model,
        prompts,
        path,
        samples=s.samples,
        temperature=s.temperature,
        max_new_tokens=s.max_new_tokens,
        seed=cfg.data.seed,
        batch_size=s.batch_size,
        console=console,
        label="data.self_replay",
        before_loading=lambda: _refuse_a_real_model_on_the_cpu(model, s.samples),
    )
    totals = replay.generation_totals(path)
    if not totals["answers"]:
        raise BbjtuneError(
            f"data.self_replay: {model} finished none of its answers to the general prompts",
            "raise data.self_replay.max_new_tokens, let a stronger Instruct model answer "
            "(data.self_replay.model), or set data.self_replay.enabled: false",
        )
    return Distilled(path, model, n_prompts, s.samples, result.written, totals)


# Above this size the answers are not worth waiting for on a CPU: the 0.5B, the smallest real model,
# decodes 25 tokens/s at Q4_K_M through llama.cpp on 2 cores (RESULTS "Editor completion"; the data
# stage answers through transformers, not measured there), so 160 prompts x 2 answers of ~300 tokens take
# about an hour at that rate, and a 7B, 15x the parameters, most of a day.
CPU_MAX_PARAMS = 100_000_000


def _refuse_a_real_model_on_the_cpu(model: str, samples: int) -> None:
    """Stop before loading a real-sized answering model on a machine without a CUDA GPU. Called only
    when prompts are left to answer: a file finished on the GPU machine goes through on any machine."""
    arch = find_architecture(model)
    if arch is None or arch.params < CPU_MAX_PARAMS:
        return
    import torch  # loaded by the answering model anyway; only here, so that `bbjtune --help` stays light

    if torch.cuda.is_available():
        return
    raise BbjtuneError(
        f"data.self_replay: {model} ({arch.params / 1e9:.1f}B parameters) would answer the general prompts "
        f"({samples} answers each) on this machine's CPU, which takes hours",
        "run the data stage on the GPU machine (bbjtune data prepare CONFIG there), or set "
        "data.self_replay.enabled: false (`bbjtune data replay CONFIG --backend http` makes answers from "
        "a running server; list that file under data.replay)",
    )


def distill(
    model: str,
    prompts_path: Path,
    out: Path,
    *,
    samples: int,
    temperature: float | None,
    max_new_tokens: int,
    seed: int,
    console: Console,
    batch_size: int = 16,
    backend: str = "transformers",
    base_url: str | None = None,
    system: str | None = None,
    limit: int | None = None,
    label: str = "replay",
    before_loading: Callable[[], None] | None = None,
) -> tuple[replay.GenerateResult, int]:
    """Have `model` answer the prompts into `out` (resuming), with a progress bar and a summary line.

    Returns the result and the number of prompts asked for. temperature None: 0 (greedy) for one
    sample, 0.7 for several (several greedy samples would be copies). `before_loading` runs just
    before the model is loaded, which happens only when some prompts are left (it may refuse).
    """

    def load() -> Any:
        if before_loading is not None:
            before_loading()
        return make_backend(
            backend,
            model=model if backend != "http" else None,
            api_model=model,
            base_url=base_url,
            batch_size=batch_size,
        )

    rows = replay.load_prompts(prompts_path)[:limit]
    if temperature is None:
        temperature = 0.0 if samples == 1 else 0.7
    with progress_bar(
        f"{label}: {Path(model).name or model} answers general prompts", len(rows), console, eta=True
    ) as done:
        result = replay.generate(
            load,
            rows,
            out,
            model_name=Path(model).name or model,
            system=system,
            samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            progress=done,
        )
    console.print(
        f"{label}: {result.written} answers written to {out}"
        + (" (an earlier file made with other settings was replaced)" if result.restarted else "")
        + (f" ({result.skipped_done} prompts asked before)" if result.skipped_done else "")
        + (f"; {result.cut_off} left out (ran out of tokens or empty)" if result.cut_off else "")
        + (f"; {result.failed} failed" if result.failed else ""),
        highlight=False,
    )
    return result, len(rows)
