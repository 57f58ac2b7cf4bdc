"""The `bbjtune` command line: one small function per verb; the work lives in the stage packages."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from click import ClickException
from rich.console import Console
from rich.markup import escape

from bbjtune import __version__
from bbjtune.bbj import cli as bbj_cli
from bbjtune.config import dump_config, list_presets, load_config, missing_inputs
from bbjtune.data import self_replay
from bbjtune.data.cli import data_app
from bbjtune.errors import BbjtuneError
from bbjtune.import_order import import_unsloth_first
from bbjtune.evaluate.cli import eval_app
from bbjtune.export import cli as export_cli
from bbjtune.models.inspect import describe_model
from bbjtune.models.loading import check_source
from bbjtune.quiet import allow_bitsandbytes, leave_bitsandbytes_unloaded, needs_bitsandbytes
from bbjtune.review.cli import review_app
from bbjtune.serve.cli import serve_app
from bbjtune.train import cli as train_cli

HELP = (
    "bbjtune turns a general code model (Qwen2.5-Coder) into a BBj expert and ships it.\n\n"
    "The usual path is one command, [bold]bbjtune run CONFIG[/bold], which runs every stage in order "
    "and writes everything under runs/<name>/. CONFIG is a YAML file or a preset name "
    "([bold]bbjtune config list[/bold]); start with [bold]quickstart[/bold] (a tiny local model that runs "
    "in minutes on a laptop)."
)

app = typer.Typer(
    help=HELP,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Show, check and list run configurations (YAML files and presets).", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(eval_app, name="eval")

console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bbjtune {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print bbjtune's version and exit."
        ),
    ] = False,
) -> None:
    pass


ConfigArg = Annotated[
    str, typer.Argument(help="A config YAML file or a preset name (see `bbjtune config list`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting, e.g. --set train.lora.r=16 (repeatable)."),
]


@app.command("run")
def run(
    config: ConfigArg,
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages to run (default all): data,train,eval,export.")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole pipeline for CONFIG: prepare data, train, evaluate, export."""
    cfg = load_config(config, set_)
    if needs_bitsandbytes(cfg):
        allow_bitsandbytes()
    if stages is None or "train" in stages:
        import_unsloth_first(cfg)
    # the pipeline loads every stage (transformers among them): only when the verb runs (not for --help),
    # and after Unsloth
    from bbjtune.pipeline import next_steps, parse_stages, run_pipeline

    outputs = run_pipeline(cfg, parse_stages(stages), console)
    console.print(f"\n[bold green]Done.[/] Results are in [bold]{cfg.run_dir}[/]:")
    for stage, path in outputs.items():
        console.print(f"  {stage:7s} {path}")
    steps = next_steps(outputs)
    if steps:
        console.print("\n[bold]Next:[/]")
        for what, where in steps:
            console.print(f"  {what}:\n    [bold]{where}[/]", highlight=False, soft_wrap=True)


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the full configuration with every default filled in (validates it first)."""

    typer.echo(dump_config(load_config(config, set_)), nl=False)


@config_app.command("check")
def config_check(config: ConfigArg, set_: SetOpt = None) -> None:
    """Validate a configuration and check that its data files exist; exit 0 when it is usable."""

    cfg = load_config(config, set_)
    try:
        kind = check_source(cfg.model.source)
    except BbjtuneError as exc:
        raise BbjtuneError(f"{config}: model.source: {exc.message}", exc.hint) from None
    missing = missing_inputs(cfg)
    if missing:
        raise BbjtuneError(
            f"{config}: these inputs match no file: {', '.join(missing)}",
            "fix the paths under data: (relative paths start from the current directory)",
        )
    console.print(f"[green]✓[/] {config} is valid (run '{cfg.name}', stages: {', '.join(cfg.train_stages)})")
    if cfg.data.self_replay.enabled:  # said here; made by the data stage only (it loads a model)
        skipped = self_replay.skip_reason(cfg)
        console.print(
            f"  data.self_replay: not made, {skipped}"
            if skipped
            else f"  data.self_replay: the data stage has {self_replay.answering_model(cfg)} answer the general "
            f"prompts {cfg.data.self_replay.samples} time(s) each into {self_replay.target(cfg)} "
            "(it loads that model: run the data stage on the GPU machine; once, the file is kept)",
            highlight=False,
        )
    if kind == "hub":
        console.print(
            f"  model.source {cfg.model.source} is a hub id: it is fetched (or read from the local "
            "Hugging Face cache) when a stage first loads it"
        )


@config_app.command("list")
def config_list() -> None:
    """List the shipped presets."""

    for name in list_presets():
        cfg = load_config(name)
        typer.echo(
            f"{name:34s} {cfg.model.source}  ({cfg.model.kind}; stages: {', '.join(cfg.train_stages)})"
        )


@app.command("inspect")
def inspect_model(
    source: Annotated[
        str, typer.Argument(help="A hub id, a local model directory, a .gguf file, or tiny:<preset>.")
    ],
) -> None:
    """Describe a model: architecture, size, vocabulary, special tokens and chat template."""

    for key, value in describe_model(source).items():
        typer.echo(f"{key:24s} {value}")


app.command("check")(bbj_cli.check)
app.command("train")(train_cli.train)
app.add_typer(data_app, name="data")
app.add_typer(review_app, name="review")
app.command("export")(export_cli.export)
app.add_typer(serve_app, name="serve")


def main() -> None:
    """Entry point: user errors become one line and exit code 2, never a traceback."""
    leave_bitsandbytes_unloaded()  # `run`/`train` load it again when their config quantizes
    try:
        code = app(prog_name="bbjtune", standalone_mode=False)
    except BbjtuneError as exc:
        console.print(
            # escaped: hints name extras like bbjtune[review], which Rich would take for a style tag and drop
            f"[bold red]error:[/] {escape(exc.message)}"
            + (f"\n[yellow]hint:[/] {escape(exc.hint)}" if exc.hint else ""),
            highlight=False,
        )
        sys.exit(exc.exit_code)
    except (ClickException, typer.TyperException) as exc:  # typer >= 0.25 raises its bundled click's errors
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] — finished files are kept; run the same command to resume")
        sys.exit(130)
    except SystemExit:
        raise
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            console.print(
                f"[bold red]error:[/] no space left on device ({escape(str(exc.filename or 'output'))})\n"
                "[yellow]hint:[/] free disk space or choose another output_dir; finished files are kept"
            )
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
