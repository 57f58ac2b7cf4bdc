"""Self-training stages after SFT: the model learns from the checker's verdicts on its own answers.

`train.stages: [cpt, sft, rft, dpo]` (any of rft, dpo, grpo after sft). Each round of a stage:

1. start: the previous model (SFT's, or the previous stage's or round's) merged into 16-bit
   weights in `<stage>/round-N/start/` — the model that samples, and the base a fresh LoRA
   adapter trains on (for DPO also the frozen reference: the adapter switched off);
2. sample `sampling.samples_per_prompt` answers per prompt (`samples.py`, resumable; by default
   prompts derived from the sources that stage 2 did not train on, see `sampling.prompts`) and
   judge each (`verdict.py`: compiles, tier-2 clean, the prompt's must-patterns, finished);
3. build the data: RFT — the best passing answer of each prompt (plus the references); DPO — pairs
   of a passing and a failing answer to the same prompt (the reference stands in for a passing
   one where none passed; a failing greedy answer is rejected first), and with `loop_pairs` a
   runaway answer against itself cut where its loop starts (`models/loops.py`); KTO instead when pairs
   are scarce (unpaired good and bad answers);
4. train (`preference.py` for DPO/KTO/GRPO, stage 2's recipe for RFT) into `round-N/adapter/`.

`round-N/round.json` records pass rates, answers kept, pairs built; `<stage>/selftrain.json`
lists all rounds (the report's section). A finished round is not redone; a killed one resumes
(samples from samples.jsonl, training from its checkpoint).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_json, atomic_write_text, sha256_file
from bbjtune.config import SAMPLING_EXECUTION, SelfSampleConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.generate import TransformersBackend
from bbjtune.models.loops import loop_cut
from bbjtune.progress import new_progress
from bbjtune.train import preference, sft, verdict
from bbjtune.train.inputs import TrainingData
from bbjtune.train.job import StageJob, is_main_process, read_record, wait_for_everyone
from bbjtune.train.release import START_FILE, merge_start, release_superseded, start_chain, was_released
from bbjtune.train.samples import SAMPLES_FILE, TRAIN, SelfPrompt, by_prompt, sample_prompts, training_prompts
from bbjtune.train.trainer import free_memory
from bbjtune.train.verdict import CHECKS

SUMMARY_FILE = "selftrain.json"
REPORT_FILE = "selftrain.md"
REPORT_COLUMNS = (
    ("round", "round"),
    ("prompts", "prompts"),
    ("samples", "samples"),
    ("compile_rate", "compile"),
    ("clean_rate", "clean"),
    ("patterns_rate", "patterns"),
    ("pass_rate", "pass"),
    ("ran_on_rate", "ran on"),
    ("prompts_with_a_passing_answer", "prompts passing"),
    ("rft_examples", "RFT examples"),
    ("pairs", "pairs"),
    ("median_answer_tokens", "median tokens"),
)
ROUND_FILE = "round.json"
SAMPLING_FILE = "sampling.json"


@dataclass
class RoundJob(StageJob):
    """One round of a self-training stage: writes under `<stage>/round-N/`."""

    round: int | None = 1

    @property
    def out_dir(self) -> Path:
        return self.cfg.train_dir / self.stage / f"round-{self.round}"


def run_selftrain(job: StageJob, data: TrainingData, previous: tuple[str, str | None]) -> dict[str, Any]:
    """All rounds of one self-training stage, starting from `previous` = (16-bit model, adapter or None)."""
    sampling = job.stage_cfg.sampling
    rounds: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for n in range(1, sampling.rounds + 1):
        origin = model_identity(previous)
        rjob = RoundJob(
            cfg=job.cfg,
            stage=job.stage,
            base_source="",
            backend=job.backend,
            console=job.console,
            data_fingerprint=f"{job.data_fingerprint}:{origin}",
            resume=job.resume,
            round=n,
        )
        rjob.base_source = str(_start_model(rjob, previous, origin))
        result = run_round(rjob, data)
        rounds.append(result["round"])
        previous = (rjob.base_source, str(rjob.adapter_dir))
        if is_main_process():
            atomic_write_json(
                job.cfg.train_dir / job.stage / SUMMARY_FILE,
                {"stage": job.stage, "checks": CHECKS, "rounds": rounds},
            )
            atomic_write_text(job.cfg.train_dir / job.stage / REPORT_FILE, report_section(job.stage, rounds))
    return {
        "metrics": {**result["metrics"], "rounds": rounds},
        "lora": result["lora"],
        "base": previous[0],
        "adapter": previous[1],
    }


def model_identity(model: tuple[str, str | None]) -> str:
    """What a round starts from: the base's path and the previous adapter's weights (a retrained SFT differs)."""
    base, adapter = model
    # a local path is named absolutely, also once the model there was released (train.keep_round_models,
    # train.cpt.keep_merged): a run directory given relatively must not change what a finished round started from
    parts = [str(Path(base).resolve()) if Path(base).exists() or was_released(base) else base]
    if adapter is not None:
        weights = sorted(Path(adapter).glob("adapter_model.*"))
        parts += [sha256_file(w) for w in weights] or [str(adapter)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _start_model(job: RoundJob, previous: tuple[str, str | None], origin: str) -> Path | str:
    """The previous model merged into `round-N/start/`, merged again when what it came from has changed.

    Whatever was sampled from an older start model is stale then too, so the round's samples go with it.
    A start released earlier (train.keep_round_models: false) is rebuilt only when its round must train;
    the model it comes from is released first when the config lets it go (`release.release_superseded`),
    and a released one is stood in for by the original model and the chain of adapters.
    """
    base, adapter = previous
    if adapter is None:
        return base
    start = job.out_dir / "start"
    record = job.out_dir / START_FILE
    job.base_source = str(start)  # what the round's fingerprint names, whether the start is on disk or not
    rec = read_record(record)
    current = rec.get("origin") == origin
    on_disk = (start / "config.json").exists()
    if is_main_process() and not (current and (on_disk or (rec.get("released") and _round_done(job)))):
        if not current:
            (job.out_dir / SAMPLES_FILE).unlink(missing_ok=True)
        release_superseded(job.cfg, base, job.console)
        root, adapters = (base, []) if Path(base, "config.json").exists() else start_chain(job.cfg, base)
        adapters = [*adapters, adapter]
        job.console.print(
            f"{job.stage} round {job.round}: merging {', '.join(adapters)} into {root} → {start}"
        )
        merge_start(job.cfg, root, adapters, start)
        atomic_write_json(record, {"origin": origin, "base": base, "adapter": adapter})
    wait_for_everyone()
    return start


def _round_done(job: RoundJob) -> bool:
    done = read_record(job.out_dir / ROUND_FILE)
    return (
        job.resume != "never"
        and done.get("fingerprint") == job.fingerprint()
        and (job.adapter_dir / "adapter_config.json").exists()
    )


def run_round(job: RoundJob, data: TrainingData) -> dict[str, Any]:
    """Sample, judge, build the data and train one round; a round already done is read back."""
    if _round_done(job):
        done = read_record(job.out_dir / ROUND_FILE)
        job.console.print(f"[green]✓[/] {job.stage} round {job.round}: already trained ({job.adapter_dir})")
        return {"metrics": done.get("metrics", {}), "lora": done.get("lora", {}), "round": done["stats"]}
    sampling = job.stage_cfg.sampling
    prompts = training_prompts(job.cfg, data.conversations, sampling)
    for note in prompts.notes:
        job.console.print(f"[yellow]note:[/] {job.stage} round {job.round}: {note}", highlight=False)
    if not prompts.prompts:
        raise BbjtuneError(
            f"{job.stage}: no training prompt to sample ({_describe_skips(prompts.skipped)})",
            "self-training needs training answers with BBj code; check train.jsonl",
        )
    rows, speed = _sample(job, prompts.prompts, sampling)
    built = build_data(job, prompts.prompts, rows)
    stats = {
        "round": job.round,
        "checks": CHECKS,
        "prompts": len(prompts.prompts),
        "prompts_skipped": prompts.skipped,
        **sample_stats(rows),
        "prompt_sources": source_stats(prompts.prompts, rows),
        **({"greedy": g} if (g := greedy_stats(rows, sampling.samples_per_prompt)) else {}),
        **built.stats,
        "sampling_speed": speed,
    }
    job.console.print(describe_round(job.stage, stats))
    result = train_round(job, data, built)
    if is_main_process():
        atomic_write_json(
            job.out_dir / ROUND_FILE,
            {
                "fingerprint": job.fingerprint(),
                "stats": stats,
                "metrics": result["metrics"],
                "lora": result["lora"],
            },
        )
    return {**result, "round": stats}


def _what_is_drawn(settings: dict[str, Any]) -> dict[str, Any]:
    sampling = {k: v for k, v in (settings.get("sampling") or {}).items() if k not in SAMPLING_EXECUTION}
    return {**settings, "sampling": sampling}


def _sample(
    job: RoundJob, prompts: list[SelfPrompt], sampling: SelfSampleConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All samples of the round, and how fast this call generated the new ones (model load excluded)."""
    path = job.out_dir / SAMPLES_FILE
    started = 0.0
    settings = {
        "sampling": sampling.model_dump(mode="json", exclude={"rounds"}),
        "start": job.data_fingerprint,
    }
    if _what_is_drawn(read_record(job.out_dir / SAMPLING_FILE)) != _what_is_drawn(settings):
        path.unlink(missing_ok=True)  # samples drawn otherwise are not reused
    atomic_write_json(job.out_dir / SAMPLING_FILE, settings)
    backend = None
    try:
        with new_progress(job.console, unit="prompts") as progress:
            task = progress.add_task(
                f"{job.stage} round {job.round}: sampling {sampling.samples_per_prompt} answers per prompt",
                total=len(prompts),
            )

            class Lazy:  # the model loads once, when a prompt is left to sample (the k samples, then the greedy)
                def generate(self, requests, settings):
                    nonlocal backend, started
                    if backend is None:
                        backend = TransformersBackend.load(
                            job.base_source,
                            dtype=job.cfg.model.dtype,
                            batch_tokens=sampling.batch_tokens,
                            continuous=sampling.engine == "continuous",
                            refill_segment=sampling.refill_segment,
                        )
                        started = time.monotonic()
                    yield from backend.generate(requests, settings)

            rows = sample_prompts(
                Lazy(),
                prompts,
                sampling,
                path,
                seed=sampling.seed + 1000 * job.round,
                on_prompt=lambda k: progress.advance(task, k),
            )
        seconds = time.monotonic() - started if started else 0.0
        tokens = backend.generated_tokens if backend is not None else 0
    finally:
        if backend is not None:
            backend.close()
        free_memory()
    speed = {
        "engine": sampling.engine,
        "generated_tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
    }
    return rows, speed


def sample_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pass rates of the samples (the round's own compile@1-like figures)."""
    n = len(rows) or 1
    verdicts = [r["verdict"] for r in rows]
    tokens = sorted(r.get("tokens") or 0 for r in rows)
    return {
        "samples": len(rows),
        "compile_rate": round(sum(v["compiles"] for v in verdicts) / n, 4),
        "clean_rate": round(sum(v["clean"] for v in verdicts) / n, 4),
        "patterns_rate": round(sum(v["patterns_ok"] for v in verdicts) / n, 4),
        "pass_rate": round(sum(v["passed"] for v in verdicts) / n, 4),
        "ran_on_rate": round(sum(v["ran_on"] for v in verdicts) / n, 4),
        "median_answer_tokens": tokens[len(tokens) // 2] if tokens else 0,
    }


def greedy_stats(rows: list[dict[str, Any]], k: int) -> dict[str, Any] | None:
    """Pass rates of the greedy answers alone (sampling.greedy): the round's view of what an evaluation sees."""
    greedy = [r for r in rows if r["sample"] == k]
    if not greedy:
        return None
    s = sample_stats(greedy)
    return {key: s[key] for key in ("samples", "compile_rate", "clean_rate", "pass_rate", "ran_on_rate")}


def source_stats(prompts: list[SelfPrompt], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pass rates per prompt source (fresh, train, extra): how far recall on trained prompts flatters."""
    source = {p.id: p.source for p in prompts}
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(p.source for p in prompts):
        mine = [r for r in rows if source.get(r["prompt_id"]) == name]
        figures = sample_stats(mine)
        out[name] = {
            "prompts": sum(p.source == name for p in prompts),
            **{k: figures[k] for k in ("samples", "compile_rate", "clean_rate", "pass_rate")},
        }
    return out


@dataclass
class Built:
    rft: list[list[dict[str, str]]]
    pairs: list[dict[str, Any]]
    unpaired: list[dict[str, Any]]
    stats: dict[str, Any]


def _best_first(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=lambda r: (-r["verdict"]["reward"], len(r["output"]), r["sample"]))


def _rejected_first(failing: list[dict[str, Any]], greedy_sample: int | None) -> list[dict[str, Any]]:
    """Failing answers in the order DPO rejects them: a failing greedy answer (`sampling.greedy`) first,
    as it is the one an evaluation and an editor see; then the worst first."""
    worst_first = _best_first(failing)[::-1]
    return sorted(
        worst_first, key=lambda r: r["sample"] != greedy_sample
    )  # stable: the rest keep their order


def _pair(prompt: SelfPrompt, chosen: str, rejected: str) -> dict[str, Any]:
    """One preference pair in trl's conversational format."""
    return {
        "prompt": prompt.context,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _loop_pair(
    prompt: SelfPrompt, failing: list[dict[str, Any]], sampling: SelfSampleConfig
) -> dict[str, Any] | None:
    """train.dpo.loop_pairs: the first answer that ran on in a loop (failing answers in rejection order),
    cut after the loop's first copy as chosen against itself in full, when the cut answer compiles."""
    for r in failing:
        if not r["verdict"]["ran_on"] or (cut := loop_cut(r["output"])) is None:
            continue
        judged = verdict.judge(
            cut,
            prompt.must,
            compiler=sampling.compiler,
            min_pattern_share=sampling.min_pattern_share,
        )
        if judged.compiles:
            return _pair(prompt, cut, r["output"])
    return None


def _keeps_reference(setting: bool | str, prompt: SelfPrompt) -> bool:
    """train.rft.include_references: all, none, or only where stage 2 has not trained on the reference."""
    return prompt.source != TRAIN if setting == "untrained" else bool(setting)


def build_data(job: StageJob, prompts: list[SelfPrompt], rows: list[dict[str, Any]]) -> Built:
    """RFT conversations, DPO pairs and KTO examples from the judged samples."""
    cfg = job.stage_cfg
    by_id = {p.id: p for p in prompts}
    rft: list[list[dict[str, str]]] = []
    pairs: list[dict[str, Any]] = []
    unpaired: list[dict[str, Any]] = []
    prompts_with_pass = loop_pairs = 0
    sampling = getattr(cfg, "sampling", None)
    greedy_sample = sampling.samples_per_prompt if sampling is not None and sampling.greedy else None
    with_loops = getattr(cfg, "loop_pairs", False)
    for pid, samples in by_prompt(rows):
        prompt = by_id.get(pid)
        if prompt is None:
            continue
        passing = _best_first([r for r in samples if r["verdict"]["passed"]])
        failing = _rejected_first([r for r in samples if r["verdict"]["failed"]], greedy_sample)
        prompts_with_pass += bool(passing)
        if passing:
            rft.append([*prompt.context, {"role": "assistant", "content": passing[0]["output"]}])
        if _keeps_reference(getattr(cfg, "include_references", False), prompt):
            rft.append([*prompt.context, {"role": "assistant", "content": prompt.reference}])
        chosen = [r["output"] for r in passing]
        if not chosen and getattr(cfg, "reference_as_chosen", False) and failing:
            chosen = [prompt.reference] * len(failing)  # against each failing answer, up to the limit
        limit = getattr(cfg, "max_pairs_per_prompt", 1)
        for good, bad in list(zip(chosen, [r["output"] for r in failing]))[:limit]:
            pairs.append(_pair(prompt, good, bad))
        if with_loops:
            loop = _loop_pair(prompt, failing, sampling)
            if loop is not None:
                pairs.append(loop)
                loop_pairs += 1
        for r in passing[:limit] + failing[:limit]:
            unpaired.append(
                {
                    "prompt": prompt.context,
                    "completion": [{"role": "assistant", "content": r["output"]}],
                    "label": bool(r["verdict"]["passed"]),
                }
            )
    stats = {
        "prompts_with_a_passing_answer": prompts_with_pass,
        "rft_examples": len(rft),
        "pairs": len(pairs),
        **({"loop_pairs": loop_pairs} if with_loops else {}),
        "kto_examples": len(unpaired),
    }
    return Built(rft, pairs, unpaired, stats)


def train_round(job: RoundJob, data: TrainingData, built: Built) -> dict[str, Any]:
    if job.stage == "rft":
        if not built.rft:
            setting = job.stage_cfg.include_references
            why = (
                "is off"
                if setting is False
                else "is 'untrained', and every prompt was a training prompt (its reference is stage 2's data)"
            )
            raise BbjtuneError(
                f"rft: no answer passed the checks and train.rft.include_references {why}",
                "set train.rft.include_references: true, give prompts stage 2 has not seen (data.sources, "
                "sampling.extra_prompts), sample more (sampling.samples_per_prompt), or lower "
                "sampling.min_pattern_share",
            )
        return sft.run_sft(
            job, TrainingData(conversations=built.rft, heldout=data.heldout, replay=data.replay)
        )
    if job.stage == "dpo":
        return preference.run_preference(job, built.pairs, built.unpaired)
    return preference.run_grpo(job, data)


def report_section(stage: str, rounds: list[dict[str, Any]]) -> str:
    """A Markdown section with one row per round: the samples' pass rates and what was built from them."""

    def cell(key: str, value: Any) -> str:
        return f"{value:.1%}" if key.endswith("_rate") and isinstance(value, (int, float)) else str(value)

    lines = [
        f"## Self-training: {stage}",
        "",
        f"Checks: {rounds[0]['checks'] if rounds else CHECKS}. Rates are shares of all samples of the round.",
        "",
        "| " + " | ".join(title for _, title in REPORT_COLUMNS) + " |",
        "|" + "---|" * len(REPORT_COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(k, r.get(k, "")) for k, _ in REPORT_COLUMNS) + " |" for r in rounds]
    by_source = [
        f"round {r['round']}: "
        + ", ".join(
            f"{name} {s['pass_rate']:.1%} of {s['samples']} samples ({s['prompts']} prompts)"
            for name, s in r["prompt_sources"].items()
        )
        for r in rounds
        if r.get("prompt_sources")
    ]
    if by_source:
        lines += ["", "Pass rate by prompt source: " + "; ".join(by_source) + "."]
    skipped = rounds[-1].get("prompts_skipped") if rounds else None
    if skipped:
        lines += [
            "",
            "Prompts left out: " + ", ".join(f"{n} {reason}" for reason, n in skipped.items()) + ".",
        ]
    return "\n".join(lines) + "\n"


def describe_round(stage: str, s: dict[str, Any]) -> str:
    skipped = f", {sum(s['prompts_skipped'].values())} prompts left out" if s["prompts_skipped"] else ""
    return (
        f"{stage} round {s['round']}: {s['samples']} samples of {s['prompts']} prompts{skipped} — compile "
        f"{s['compile_rate']:.0%}, clean {s['clean_rate']:.0%}, patterns {s['patterns_rate']:.0%}, pass "
        f"{s['pass_rate']:.0%}, ran on {s['ran_on_rate']:.0%}; {s['prompts_with_a_passing_answer']} prompts with a "
        f"passing answer, {s['rft_examples']} RFT examples, {s['pairs']} pairs (checks: {s['checks']})"
        + (
            "; pass by prompt source: "
            + ", ".join(f"{n} {v['pass_rate']:.0%}" for n, v in s["prompt_sources"].items())
            if s.get("prompt_sources")
            else ""
        )
        + (
            f"; greedy answers pass {s['greedy']['pass_rate']:.0%}, ran on {s['greedy']['ran_on_rate']:.0%}"
            if s.get("greedy")
            else ""
        )
        + (
            f"; sampled {s['sampling_speed']['tokens_per_s']:,.0f} tokens/s"
            if s["sampling_speed"]["tokens_per_s"]
            else ""
        )
    )


def _describe_skips(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "train.jsonl has no conversations"
