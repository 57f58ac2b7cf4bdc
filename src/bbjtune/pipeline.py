"""`bbjtune run CONFIG`: the stages in order, each reading the files the previous one wrote.

Each stage lives in its own package and exposes `run_stage(cfg) -> Path` in its `stage` module;
this file only knows their order. Stages talk through run directories (INTERFACES.md), not
through each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bbjtune.config import RunConfig
from bbjtune.data import stage as data_stage
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate import stage as eval_stage
from bbjtune.evaluate.sandbox import detect_isolation
from bbjtune.export import stage as export_stage
from bbjtune.train import stage as train_stage

STAGES: dict[str, Callable[[RunConfig], Path]] = {
    "data": data_stage.run_stage,
    "train": train_stage.run_stage,
    "eval": eval_stage.run_stage,
    "export": export_stage.run_stage,
}
STAGE_ORDER = tuple(STAGES)
STAGE_TITLES = {
    "data": "Data: audit, clean and split the training data",
    "train": "Train: continued pretraining and instruction tuning",
    "eval": "Evaluate: compile rate, patterns, HumanEval, base vs tuned",
    "export": "Export: merged weights, GGUF, Ollama Modelfile, vLLM config",
}


def parse_stages(text: str | None) -> list[str]:
    if not text:
        return list(STAGE_ORDER)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGE_ORDER]
    if unknown:
        raise BbjtuneError(f"unknown stage(s): {', '.join(unknown)}", f"choose from {', '.join(STAGE_ORDER)}")
    return [s for s in STAGE_ORDER if s in wanted]


def run_pipeline(cfg: RunConfig, stages: list[str], console: Console | None = None) -> dict[str, Path]:
    """Run the chosen stages in pipeline order; returns each stage's output directory."""
    console = console or Console(stderr=True)
    check_before_start(cfg, stages)
    outputs: dict[str, Path] = {}
    for i, stage in enumerate(stages, 1):
        console.rule(f"[bold]{i}/{len(stages)} {STAGE_TITLES[stage]}")
        t0 = time.time()
        outputs[stage] = STAGES[stage](cfg)
        console.print(f"[green]✓[/] {stage} finished in {time.time() - t0:.0f} s → {outputs[stage]}")
    return outputs


def check_before_start(cfg: RunConfig, stages: list[str]) -> None:
    """What a later stage would refuse, said before the first one starts: an evaluation with HumanEval
    needs a working sandbox, and finding out after hours of training helps nobody."""
    if "eval" in stages and cfg.eval.humaneval.enabled and stages[0] != "eval":
        try:
            detect_isolation(cfg.eval.humaneval.sandbox)
        except BbjtuneError as exc:
            raise BbjtuneError(
                f"the evaluation stage would stop after training: {exc.message}",
                f"{exc.hint}; or leave HumanEval out (eval.humaneval.enabled: false)",
            ) from exc


def next_steps(outputs: dict[str, Path]) -> list[tuple[str, str]]:
    """(what, where) for the reports a finished run wrote and the commands that come next."""
    steps: list[tuple[str, str]] = []
    data, evaluation = outputs.get("data"), outputs.get("eval")
    if data is not None and (data / "report.html").exists():
        steps.append(("the data report (what was kept, set aside and why)", str(data / "report.html")))
    if evaluation is not None:
        for label, what in (
            ("compare", "base vs tuned, side by side"),
            ("tuned", "the tuned model's answers"),
            ("base", "the base model's answers"),
        ):
            if (evaluation / label / "report.html").exists():
                steps.append((f"the evaluation report: {what}", str(evaluation / label / "report.html")))
        if (evaluation / "base").is_dir() and (evaluation / "tuned").is_dir():
            steps.append(
                (
                    "rate the answers blind in your browser",
                    f"bbjtune review {evaluation / 'base'} {evaluation / 'tuned'}",
                )
            )
    return steps
