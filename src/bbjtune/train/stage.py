"""The training stage as the pipeline sees it: `run_stage(cfg) -> Path` (the train directory).

Runs the configured stages in order — stage 1 (CPT) then stage 2 (SFT) on the merged result for
Base models, SFT alone for Instruct models — and writes `trained.json`. A stage that already
finished with the same settings and data is not trained again; a stage that was stopped resumes
from its last checkpoint (`resume="auto"`, the default), or must resume (`"always"`, --resume),
or starts over (`"never"`, --restart).

Self-training stages (`rft`, `dpo`, `grpo`, listed after sft in `train.stages`) start from the
model before them and run in rounds (selftrain.py); `trained.json` then points at the last
round's merged start model and its adapter.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.artifacts import MANIFEST_NAME, StageRun, sha256_file
from bbjtune.config import SELF_TRAINING_STAGES, SELFTRAIN_PROMPTS_FILE, TRAIN_STAGE_ORDER, RunConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.loading import check_source
from bbjtune.models.trained import write_trained
from bbjtune.train import backends, cpt, sft
from bbjtune.train.dryrun import show_dry_run
from bbjtune.train.inputs import TrainingData, load_training_data
from bbjtune.train.job import StageJob, is_main_process, read_record
from bbjtune.train.modelcard import write_model_card
from bbjtune.train.release import (
    START_FILE,
    ensure_stage1_merged,
    ensure_start,
    release_stage1_merged,
    was_released,
)
from bbjtune.train.resources import check_before_loading, show_train_disk
from bbjtune.train.selftrain import run_selftrain
from bbjtune.train.trainer import configure_torch
from bbjtune.train.verdict import CHECKS


def run_stage(
    cfg: RunConfig,
    stages: list[str] | None = None,
    resume: str = "auto",
    dry_run: bool = False,
    console: Console | None = None,
) -> Path:
    """Train `stages` (default: the config's plan, `cfg.train_stages`); returns the train directory.

    Choosing stages does not change the plan: `--stage sft` on a Base config whose plan is
    CPT → SFT trains stage 2 on the existing `cpt/merged`.
    """
    console = console or Console(stderr=True)
    stages = [s for s in TRAIN_STAGE_ORDER if s in (stages or cfg.train_stages)]
    if not stages:
        raise BbjtuneError("no training stage is enabled", "enable train.cpt or train.sft, or pick --stage")
    if stages[0] == "cpt" or "cpt" not in cfg.train_stages:  # the first stage trains the original model
        check_source(cfg.model.source)  # a missing model is the first thing to fix, before the data
    data = load_training_data(cfg.data_dir, stages)

    backends.check_launch(cfg, stages)  # a dry run under accelerate launch says the same as the real one
    if dry_run:
        supervised = [s for s in stages if s not in SELF_TRAINING_STAGES]
        if supervised:
            show_dry_run(cfg, supervised, data, console)
        for s in stages:
            if s in SELF_TRAINING_STAGES:
                sampling = getattr(cfg.train, s).sampling
                console.print(
                    f"{s}: {sampling.rounds} round(s) of {sampling.samples_per_prompt} samples per training "
                    f"prompt (temperature {sampling.temperature:g}, up to {sampling.max_new_tokens} tokens), "
                    f"judged by {CHECKS}; then training on the verdicts"
                )
        show_train_disk(cfg, stages, console)
        return cfg.train_dir

    backends.use_one_gpu_unless_launched(console)
    if is_main_process():  # after the line above: it must run before CUDA is touched
        check_before_loading(cfg, stages, console)  # disk (and RAM on a CPU) before any model is loaded
    backend = backends.choose_backend(cfg.train.backend)  # Unsloth, if chosen, was imported first by the CLI

    configure_torch(cfg)
    console.print(
        f"training {' → '.join(stages)} on {cfg.model.source} with the {backend} backend "
        f"({'QLoRA 4-bit' if cfg.train.quantization.load_in_4bit else cfg.model.dtype}); "
        f"writing to {cfg.train_dir}"
    )
    chained = "cpt" in cfg.train_stages or "cpt" in stages  # stage 2 then starts from stage 1's merged model
    results: dict[str, dict[str, Any]] = {}
    for stage in stages:
        if stage in SELF_TRAINING_STAGES:
            results[stage] = _run_self_training(cfg, stage, backend, console, resume, data, chained)
            continue
        job = StageJob(
            cfg=cfg,
            stage=stage,
            base_source=base_for(cfg, stage, chained),
            backend=backend,
            console=console,
            resume=resume,
            data_fingerprint=data_fingerprint(cfg, stage, chained),
        )
        if stage == "sft" and chained:
            console.print(f"stage 2 starts from stage 1's merged model {job.base_source}")
        results[stage] = _run_one(job, data)
    if is_main_process():
        # the model trained.json will name may have been released by a longer plan run before
        ensure_start(cfg, model_after(cfg, stages[-1], chained)[0], console)
        _write_handle(cfg, stages[-1], results[stages[-1]], data, chained)
        if chained and stages[-1] == "sft":
            if not cfg.train.cpt.keep_merged:
                release_stage1_merged(cfg, console)
            else:  # kept again after an earlier release: rebuild what trained.json names
                ensure_stage1_merged(cfg, str(cfg.train_dir / "cpt" / "merged"), console)
    return cfg.train_dir


def model_after(cfg: RunConfig, stage: str, chained: bool) -> tuple[str, str | None]:
    """(16-bit model, adapter or None) that `stage` produced: what the next self-training stage starts from."""
    if stage in SELF_TRAINING_STAGES:
        summary = read_record(cfg.train_dir / stage / "selftrain.json")
        rounds = summary.get("rounds") or []
        if not rounds:
            raise BbjtuneError(
                f"{stage} has not run yet ({cfg.train_dir / stage})", f"train it first (--stage {stage})"
            )
        last = cfg.train_dir / stage / f"round-{rounds[-1]['round']}"
        start = (
            last / "start"
            if (last / "start" / "config.json").exists()
            or (last / START_FILE).exists()  # on disk or released
            else model_after(cfg, _before(cfg, stage), chained)[0]
        )
        return str(start), str(last / "adapter")
    adapter = cfg.train_dir / stage / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise BbjtuneError(
            f"{stage} has not run yet: {adapter} does not exist", f"train it first (--stage {stage})"
        )
    return base_for(cfg, stage, chained), str(adapter)


def _plan_with(cfg: RunConfig, stage: str) -> list[str]:
    """The configured stages with sft and `stage` in (a --stage rft on a config that plans only cpt and sft)."""
    return [s for s in TRAIN_STAGE_ORDER if s in cfg.train_stages or s in ("sft", stage)]


def _before(cfg: RunConfig, stage: str) -> str:
    """The stage a self-training stage starts after: the one before it in the plan (sft at least)."""
    plan = _plan_with(cfg, stage)
    return plan[plan.index(stage) - 1]


def _run_self_training(
    cfg: RunConfig, stage: str, backend: str, console: Console, resume: str, data: TrainingData, chained: bool
) -> dict[str, Any]:
    if backends.world_size() > 1:
        raise BbjtuneError(
            f"{stage} samples from the model in one process; it does not run under a multi-process launch",
            f"run it on its own without accelerate launch/torchrun: bbjtune train CONFIG --stage {stage}",
        )
    # a released model is stood in for by its chain (release.start_chain) when the first start is merged
    previous = model_after(cfg, _before(cfg, stage), chained)
    job = StageJob(
        cfg=cfg,
        stage=stage,
        base_source=previous[0],
        backend=backend,
        console=console,
        resume=resume,
        data_fingerprint=f"{data_fingerprint(cfg, 'sft', chained)}:{previous}{_fresh_prompts_part(cfg)}",
    )
    result = run_selftrain(job, data, previous)
    m = result["metrics"]
    console.print(
        f"[green]✓[/] {stage}: {len(m['rounds'])} round(s), last {m.get('steps')} steps; adapter "
        f"{result['adapter']} on {result['base']}; rounds in {cfg.train_dir / stage / 'selftrain.json'}"
    )
    return result


def base_for(cfg: RunConfig, stage: str, chained: bool) -> str:
    """Stage 1 starts from the original model; stage 2 from stage 1's merged model when they are chained."""
    if stage == "cpt" or not chained:
        return cfg.model.source
    merged = cfg.train_dir / "cpt" / "merged"
    if not (merged / "config.json").exists() and not was_released(merged):
        raise BbjtuneError(
            f"stage 2 trains on stage 1's merged model, but {merged} does not exist",
            "run stage 1 first (--stage cpt or --stage all), or set train.stages: sft",
        )
    return str(merged)


def data_fingerprint(cfg: RunConfig, stage: str, chained: bool) -> str:
    """Hashes of the files a stage learns from (for stage 2 on stage 1's model, also stage 1's identity)."""
    names = (
        ["cpt.jsonl", "heldout.jsonl"] if stage == "cpt" else ["train.jsonl", "heldout.jsonl", "replay.jsonl"]
    )
    parts = [f"{n}:{sha256_file(cfg.data_dir / n)}" for n in names if (cfg.data_dir / n).exists()]
    if stage == "sft" and chained:
        parts.append("cpt:" + str(_manifest(cfg.train_dir / "cpt").get("fingerprint")))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _fresh_prompts_part(cfg: RunConfig) -> str:
    """The hash of the fresh prompts a self-training round samples: new ones make a finished round stale."""
    path = cfg.data_dir / SELFTRAIN_PROMPTS_FILE
    return f":{SELFTRAIN_PROMPTS_FILE}:{sha256_file(path)}" if path.exists() else ""


def _manifest(directory: Path) -> dict[str, Any]:
    return read_record(directory / MANIFEST_NAME)


def _is_done(job: StageJob) -> bool:
    manifest = _manifest(job.out_dir)
    outputs_there = (job.adapter_dir / "adapter_config.json").exists() and (
        job.stage != "cpt"
        or (job.out_dir / "merged" / "config.json").exists()
        or was_released(job.out_dir / "merged")  # released after stage 2: rebuilt when needed
    )
    return (
        job.resume != "never"
        and manifest.get("status") == "complete"
        and manifest.get("fingerprint") == job.fingerprint()
        and outputs_there
    )


class _Record(StageRun):
    """The stage's manifest; only the main process writes it under `accelerate launch`."""

    def write_manifest(self, status: str) -> Path:
        return super().write_manifest(status) if is_main_process() else self.dir / MANIFEST_NAME


def _run_one(job: StageJob, data: TrainingData) -> dict[str, Any]:
    if _is_done(job):
        manifest = _manifest(job.out_dir)
        job.console.print(
            f"[green]✓[/] {job.stage}: already trained with these settings and data "
            f"({job.adapter_dir}); --restart trains it again"
        )
        return {"metrics": manifest.get("metrics", {}), "lora": manifest.get("lora", {})}
    ensure_stage1_merged(job.cfg, job.base_source, job.console)
    record = _Record(job.out_dir, stage=f"train-{job.stage}", config=job.cfg.model_dump(mode="json"))
    with record as run:
        run.add_inputs(
            p for p in data.files if p.name != ("cpt.jsonl" if job.stage == "sft" else "train.jsonl")
        )
        run.extra.update(fingerprint=job.fingerprint(), backend=job.backend, base_model=job.base_source)
        with run.timed("train"):
            result = (cpt.run_cpt if job.stage == "cpt" else sft.run_sft)(job, data)
        run.metrics.update(result["metrics"])
        run.extra["lora"] = result["lora"]
        run.extra["gradient_checkpointing"] = job.checkpointing  # what ran (`auto` decided)
        run.outputs += [str(job.adapter_dir)] + ([str(job.out_dir / "merged")] if job.stage == "cpt" else [])
        if is_main_process():
            write_model_card(
                job.adapter_dir / "README.md",
                cfg=job.cfg,
                stage=job.stage,
                base_model=job.base_source,
                metrics=result["metrics"],
                lora=result["lora"],
                inputs=run.inputs,
                backend=job.backend,
            )
    if is_main_process() and not job.cfg.train.keep_checkpoints:
        shutil.rmtree(job.checkpoints_dir, ignore_errors=True)
    _summarize(job, result["metrics"])
    return result


def _summarize(job: StageJob, metrics: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, (int, float)) else "–"

    processes = metrics.get("processes") or 1
    where = f" on {processes} processes ({metrics.get('distributed')})" if processes > 1 else ""
    job.console.print(
        f"[green]✓[/] {job.stage}: {metrics.get('steps')} steps{where}, loss {fmt(metrics.get('first_loss'))} → "
        f"{fmt(metrics.get('final_loss'))}, held-out loss {fmt(metrics.get('first_eval_loss'))} → "
        f"{fmt(metrics.get('eval_loss'))}; saved in {job.adapter_dir}"
    )
    check = metrics.get("stop_check") or {}
    if "of" in check:
        style = "green" if check["stopped"] == check["of"] else "yellow"
        job.console.print(
            f"  [{style}]{check['stopped']} of {check['of']}[/] held-out answers end with <|im_end|> "
            f"(greedy; lengths {check['answer_tokens']} tokens)"
        )
    elif "error" in check or "skipped" in check:
        job.console.print(f"  [yellow]stop check skipped:[/] {check.get('error') or check['skipped']}")


def _write_handle(
    cfg: RunConfig, last_stage: str, result: dict[str, Any], data: TrainingData, chained: bool
) -> Path:
    base, adapter = model_after(cfg, last_stage, chained)
    if last_stage in SELF_TRAINING_STAGES:
        plan = _plan_with(cfg, last_stage)
        chain = [s for s in plan[: plan.index(last_stage) + 1] if s != "cpt" or chained]
        max_length = cfg.train.sft.max_length
    else:
        chain = ["cpt", "sft"] if last_stage == "sft" and base != cfg.model.source else [last_stage]
        max_length = getattr(cfg.train, last_stage).max_length
    return write_trained(
        cfg.train_dir,
        base_model=base,
        original_model=cfg.model.source,
        adapter=Path(adapter),
        tokenizer=Path(adapter),
        stages=chain,
        lora=result["lora"],
        max_length=max_length,
        system_prompt=cfg.data.system_prompt or data.system_prompt,
    )
