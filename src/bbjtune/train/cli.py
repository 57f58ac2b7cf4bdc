"""`bbjtune train`: the command line of the training stage (heavy imports stay inside the function)."""

from __future__ import annotations

from typing import Annotated

import typer

from bbjtune.config import load_config
from bbjtune.errors import BbjtuneError
from bbjtune.import_order import import_unsloth_first
from bbjtune.quiet import allow_bitsandbytes, needs_bitsandbytes
from bbjtune.train.job import is_main_process


def train(
    config: Annotated[
        str, typer.Argument(help="A config YAML file or a preset name (see `bbjtune config list`).")
    ],
    stage: Annotated[
        str | None,
        typer.Option(
            "--stage",
            help="Which training to run: cpt (stage 1: learn BBj from raw source code), sft (stage 2: "
            "learn to answer BBj requests), all (cpt, then sft on its result), or a self-training stage after "
            "sft: rft, dpo, grpo (learn from the checker's verdicts on the model's own answers). "
            "Default: train.stages.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a stopped run from its last checkpoint (fails if there is none). Without it, "
            "a stopped run with unchanged settings resumes anyway.",
        ),
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Train from scratch: ignore finished stages and checkpoints.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the config and data, show 3 examples with the tokens that are trained on "
            "highlighted, and estimate the GPU memory; trains nothing.",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one setting, e.g. --set train.lora.r=16 (repeatable)."),
    ] = None,
) -> None:
    """Fine-tune the model on the prepared BBj data (run `bbjtune data prepare CONFIG` first).

    Stage 1 (continued pretraining) teaches a Base model BBj syntax from raw source code.

    Stage 2 (instruction tuning) teaches it to answer BBj requests in chat form, and to stop when done.

    Writes LoRA adapters, metrics.jsonl and trained.json (what eval and export read) under the run directory.

    Ctrl-C or SIGTERM saves a checkpoint and stops; run the same command again to continue.

    Several GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml -m bbjtune train CONFIG
    (torchrun --nproc_per_node N -m bbjtune train CONFIG works too, also on CPU).
    """
    from rich.console import Console

    if resume and restart:
        raise BbjtuneError("--resume and --restart contradict each other", "pick one")
    if stage not in (None, "cpt", "sft", "all", "rft", "dpo", "grpo"):
        raise BbjtuneError(f"--stage {stage}: unknown stage", "use cpt, sft, all, rft, dpo or grpo")
    cfg = load_config(config, set_)
    if needs_bitsandbytes(cfg):
        allow_bitsandbytes()
    if not dry_run:
        import_unsloth_first(cfg)
    # the stage loads transformers: only when the verb runs (never for --help), and after Unsloth
    from bbjtune.train.stage import run_stage

    stages = None if stage is None else ["cpt", "sft"] if stage == "all" else [stage]
    console = Console(stderr=True, quiet=not is_main_process())  # one report, not one per GPU
    out = run_stage(
        cfg,
        stages=stages,
        resume="always" if resume else "never" if restart else "auto",
        dry_run=dry_run,
        console=console,
    )
    if not dry_run:
        console.print(
            f"[bold green]Done.[/] The trained model is described by [bold]{out / 'trained.json'}[/]"
        )
