"""`bbjtune data audit|prepare|derive|replay|feedback`: look at the training data, then clean and split it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import typer

from bbjtune.artifacts import atomic_write_jsonl
from bbjtune.bbj.compile import check_compiler
from bbjtune.config import apply_override, default_data_config, load_config, validate_config
from bbjtune.data import feedback, replay, self_replay
from bbjtune.data.audit import flagged_summary
from bbjtune.data.cpt import find_sources
from bbjtune.data.derive import (
    COMPLETE_MAX_LINES,
    COMPLETE_MIN_LINES,
    api_pairs,
    default_system_prompt,
    derive_pairs,
)
from bbjtune.data.stage import audit as run_audit
from bbjtune.data.stage import prepare as run_prepare
from bbjtune.errors import BbjtuneError

data_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Check, clean and split training data: ChatML instruction files (JSONL, one conversation per "
    "line) and raw BBj source files.\n\n[bold]audit[/bold] reports what is in the data and what is wrong "
    "with it, without changing anything; [bold]prepare[/bold] writes the cleaned train/held-out sets and "
    "the plain-BBj corpus for stage 1; [bold]derive[/bold] makes instruction pairs from BBj sources; "
    "[bold]replay[/bold] makes general conversations that keep general skills in stage 2; "
    "[bold]feedback[/bold] turns the gateway's rated answers into training data.",
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="A config YAML file or preset; its data: section sets the filters."),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one setting, e.g. --set data.seed=7.")
]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict", help="Stop at the first unusable line (exit 2) instead of setting it aside."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Count tokens with this model's tokenizer (hub id, folder, .gguf, tiny:demo); "
        "default: the config's model.source.",
    ),
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")]


def audit(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="ChatML JSONL files or globs (default: the config's data.chatml).", show_default=False
        ),
    ] = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    max_length: Annotated[
        int | None, typer.Option(help="Token limit to compare against (default: train.sft.max_length).")
    ] = None,
    out: OutOpt = None,
    strict: StrictOpt = False,
    set_: SetOpt = None,
) -> None:
    """Report on ChatML training data without changing it: broken lines (bad JSON, wrong roles, empty \
answers, non-UTF-8), system prompts, token lengths against the training limit, duplicate and \
near-duplicate examples, fragments and cut-off answers, literal \\n escapes, BBj code that fails the \
checker, secrets in code, and the balance of categories and BBj generations.

    Writes audit.json and report.html (with plots) to --out (default runs/data-audit).

    Exit codes: 0 — no problems found; 1 — some lines would be set aside by prepare; 2 — a usage \
problem (a missing file, a bad config), or with --strict the first unusable line.
    """
    from rich.console import Console

    cfg = _config(config, set_, chatml=files, model=model, out=None)
    if max_length:
        cfg.data.max_length = max_length
    if not cfg.data.chatml:
        raise BbjtuneError("no ChatML files given", "pass JSONL files, or --config with data.chatml set")
    out_dir = out or Path("runs/data-audit")
    outcome = run_audit(cfg, out_dir, strict=strict or cfg.data.strict, console=Console(stderr=True))
    _print_summary(outcome.audit, out_dir, prepared=False)
    if outcome.rejected:
        raise typer.Exit(1)


def prepare(
    config: Annotated[
        str | None,
        typer.Argument(
            help="A config YAML file or preset (e.g. quickstart); optional when --chatml/--sources are given.",
            show_default=False,
        ),
    ] = None,
    chatml: Annotated[
        list[str] | None,
        typer.Option("--chatml", help="ChatML JSONL files or globs (repeatable); replaces data.chatml."),
    ] = None,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--sources", help="BBj source files, globs or folders (repeatable); replaces data.sources."
        ),
    ] = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    strict: StrictOpt = False,
    set_: SetOpt = None,
) -> None:
    """Clean and split the training data and build the stage 1 corpus.

    Sets aside broken lines, fragments, cut-off answers, over-long and duplicate examples (each with \
its reason, in rejected.jsonl), repairs literal \\n escapes, scrubs passwords, API keys, e-mail and \
IP addresses, splits off a held-out set (similar prompts stay on one side), removes training examples \
that overlap held-out or evaluation prompts, and turns BBj sources plus the code in the training \
answers into plain-text chunks.

    Writes train.jsonl, heldout.jsonl, cpt.jsonl, rejected.jsonl, audit.json, report.html and \
manifest.json to --out (default: the run's data folder, runs/<name>/data).

    Exit codes: 0 — nothing was set aside; 1 — some lines or examples were set aside (the outputs are \
complete; see rejected.jsonl); 2 — a usage problem (a missing file or folder, a bad config), or with \
--strict the first unusable line.
    """
    from rich.console import Console

    if config is None and not chatml and not sources:
        raise BbjtuneError(
            "nothing to prepare", "give a config (bbjtune data prepare quickstart) or --chatml/--sources"
        )
    cfg = _config(config, set_, chatml=chatml, model=model, out=out, sources=sources)
    outcome = run_prepare(cfg, cfg.data_dir, strict=strict or cfg.data.strict, console=Console(stderr=True))
    _print_summary(outcome.audit, outcome.out_dir, prepared=True)
    if outcome.rejected:
        raise typer.Exit(1)


def derive(
    out: Annotated[Path, typer.Option("--out", "-o", help="The ChatML JSONL file to write.")],
    sources: Annotated[
        list[str] | None,
        typer.Argument(help="BBj source files, globs or folders to derive from.", show_default=False),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(help="The system prompt of every pair (default: the one in examples/chatml)."),
    ] = None,
    bbjapi: Annotated[
        bool,
        typer.Option(
            "--bbjapi",
            help="Also write factual pairs about the real BBjAPI classes: each class's methods and their "
            "argument counts (from the API table the checks use), so the model learns names that exist.",
        ),
    ] = False,
) -> None:
    """Derive instruction pairs from real BBj code: "write this documented method", "explain this \
method" (from its rem /** ... */ doc comment) and "complete this program"; and from reference \
libraries in the BBj language server's .bbl format, one factual pair per documented builtin function, \
system variable, ERR=* label and callback event. Feed the file to [bold]prepare[/bold] with your other \
ChatML data; prepare deduplicates and decontaminates it."""
    from rich.console import Console

    if not sources and not bbjapi:
        raise BbjtuneError(
            "data derive: nothing to derive from", "name BBj source files or folders, or pass --bbjapi"
        )
    files, _ = find_sources(sources) if sources else ([], [])
    system = system or default_system_prompt()
    api = api_pairs(system) if bbjapi else []
    n = atomic_write_jsonl(out, itertools.chain(derive_pairs(files, system), api))
    console = Console(stderr=True)
    console.print(
        f"{n - len(api)} instruction pairs from {len(files)} source files"
        + (f" and {len(api)} about the BBjAPI classes" if bbjapi else "")
        + f" → {out}"
    )
    if not n:
        console.print(
            "[yellow]note:[/] nothing to derive from: pairs come from methods with a rem /** ... */ doc "
            f"comment, programs of {COMPLETE_MIN_LINES}-{COMPLETE_MAX_LINES} lines and /@@ ... @/ doc blocks "
            "of reference libraries (.bbl)"
        )


def replay_command(
    config: Annotated[
        str | None,
        typer.Argument(
            help="A config YAML file or preset: its data.self_replay.model or model.source answers (unless "
            "--model) and its run folder holds the output.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The model that answers (hub id, folder, .gguf, tiny:demo; with --backend http the "
            "server's model name). For a Base model give its Instruct sibling.",
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help='JSONL of {"prompt": ...} lines (or ChatML; the last user turn is the prompt); '
            "default: 160 general coding prompts shipped with bbjtune.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The ChatML JSONL to write (default: <run folder>/replay/self-distilled.jsonl).",
        ),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Answers per prompt.")] = 1,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", min=0.0, help="Default: 0 (greedy) for one sample, 0.7 for several."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=16)] = 1024,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N prompts.")] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="transformers (load the model here), http (an OpenAI-compatible server: vLLM, "
            "Ollama) or gguf.",
        ),
    ] = "transformers",
    base_url: Annotated[str | None, typer.Option("--base-url", help="The server for --backend http.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            help="A system message for every conversation (default: none, so the model's default "
            "applies, as for HumanEval).",
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Make general (non-BBj) training conversations from the model's own answers, to mix into stage 2.

    Fine-tuning on BBj alone costs some general coding skill; training on a share of the model's own answers to general coding prompts (self-distillation) keeps it. Answers that run out of tokens are left out. Written as it goes: run the same command again after an interruption to continue.

    Then list the file under data.replay in the config and run [bold]bbjtune data prepare[/bold]; train.sft.replay_ratio (default 0.2) sets its share of stage 2's examples.
    """
    from rich.console import Console

    cfg = _config(config, set_, chatml=None, model=None, out=None) if config else None
    source = model or (self_replay.answering_model(cfg) if cfg else None)
    if not source:
        raise BbjtuneError(
            "no model to answer the prompts", "pass --model, or a config whose model.source is set"
        )
    if not model and cfg and cfg.model.kind == "base" and not cfg.data.self_replay.model:
        raise BbjtuneError(
            f"{source} is a Base model (model.kind: base): it does not answer chat requests yet",
            "let its Instruct sibling answer: --model Qwen/Qwen2.5-Coder-7B-Instruct (the same size "
            "as the config's model)",
        )
    target = out or ((cfg.run_dir if cfg else Path("runs")) / self_replay.SELF_REPLAY_FILE)
    console = Console(stderr=True)
    self_replay.distill(
        source,
        prompts or replay.DEFAULT_PROMPTS,
        target,
        samples=samples,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=cfg.data.seed if cfg else 42,
        console=console,
        batch_size=batch_size,
        backend=backend,
        base_url=base_url,
        system=system,
        limit=limit,
    )
    if replay.generation_totals(target)["answers"]:
        console.print(
            f"Next: add '{target}' to data.replay in the config (or set data.self_replay.enabled: true "
            "and let the data stage make it), then bbjtune data prepare CONFIG"
        )
    else:
        raise BbjtuneError(
            "the model finished none of its answers",
            "raise --max-new-tokens, or let a stronger (Instruct) model answer with --model",
        )


def feedback_command(
    log: Annotated[
        Path,
        typer.Argument(help="The gateway's exchange log (bbjtune serve gateway --log).", show_default=False),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: feedback/ beside the log).")
    ] = None,
    config: ConfigOpt = None,
    compiler: Annotated[
        str, typer.Option(help="Checker for the answers: auto (bbjcpl when installed), bbjcpl or builtin.")
    ] = "auto",
    checker_pairs: Annotated[
        bool,
        typer.Option(
            "--checker-pairs",
            help="Also pair each best-of-N attempt that failed the checker (rejected) with the "
            "answer that passed (chosen).",
        ),
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Turn the gateway's rated answers into training data: SFT conversations (answers rated up, and \
corrections) and preference pairs (the model's answer rejected, the correction chosen).

    Scrubbed, deduplicated and checked against the evaluation prompts like any other data (the data: section \
of --config sets the filters). Writes sft.jsonl (add it to data.chatml), preference.jsonl (prompt/chosen/rejected \
in trl's conversational format), rejected.jsonl and summary.json.
    """
    from rich.console import Console

    check_compiler(compiler)
    d = load_config(config, set_).data if config else default_data_config()
    console = Console(stderr=True)
    target = out or log.parent / "feedback"
    s = feedback.run(
        log,
        target,
        d,
        compiler=compiler,
        checker_pairs=checker_pairs,
        warn=lambda msg: console.print(f"[yellow]warning:[/] {msg}"),
    )
    console.print(
        f"{s['exchanges']} exchanges: {s['sft']} SFT conversations ({s['sft_accepted']} accepted, "
        f"{s['sft_corrected']} corrected), {s['preference_pairs']} preference pairs"
        + (f"; set aside: {', '.join(f'{k} {v}' for k, v in s['rejected'].items())}" if s["rejected"] else "")
        + (
            f"; nothing from: {', '.join(f'{k} {v}' for k, v in s['skipped'].items())}"
            if s["skipped"]
            else ""
        )
    )
    console.print(f"Results in [bold]{target}[/] (sft.jsonl, preference.jsonl, rejected.jsonl, summary.json)")


def _config(
    config: str | None,
    overrides: list[str] | None,
    *,
    chatml: list[str] | None,
    model: str | None,
    out: Path | None,
    sources: list[str] | None = None,
):
    """The run config: a file or preset, or (without one) the defaults; command-line data paths win."""

    if config:
        cfg = load_config(config, overrides)
    else:
        stages = "all" if chatml and sources else ("cpt" if sources else "sft")
        raw: dict = {
            "name": "data",
            "train": {"stages": stages},
            "data": {
                "chatml": list(chatml or []),
                "sources": list(sources or []),
                "output_dir": str(out or "runs/data"),
            },
        }
        for item in overrides or []:
            apply_override(raw, item)
        cfg = validate_config(raw, source="command line")
    if chatml:
        cfg.data.chatml = list(chatml)
    if sources:
        cfg.data.sources = list(sources)
    if model:
        cfg.model.source = model
    if out is not None:
        cfg.data.output_dir = str(out)
    return cfg


def _print_summary(audit: dict, out_dir: Path, prepared: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Data " + ("preparation" if prepared else "audit"), show_header=True)
    for col in ("step", "in", "set aside", "out"):
        table.add_column(col, justify="right" if col in ("in", "out") else "left")
    for step in audit["steps"]:
        removed = ", ".join(f"{k} {v}" for k, v in step["removed"].items()) or "-"
        table.add_row(step["step"], str(step["in"]), removed, str(step["out"]))
    console.print(table)
    tok = audit["tokens"]
    if tok.get("count"):
        console.print(
            f"tokens per conversation: median {tok['median']:.0f}, max {tok['max']} "
            f"({tok['over_limit']} over the {tok['limit']} limit; {audit['tokenizer']})"
        )
    code = audit["code"]
    if code["blocks"]:
        console.print(f"BBj code blocks: {code['blocks']} checked, {code['blocks_failed']} fail the checker")
    if code.get("examples_flagged"):
        rules, fate = flagged_summary(code)
        console.print(
            f"tier 2: {code['examples_flagged']} answers whose BBj passes the checker break a tier 2 check "
            f"({rules}); {fate}; the report lists them"
        )
    if "cpt" in audit:
        c = audit["cpt"]
        console.print(
            f"stage 1 corpus: {c['chunks']} chunks, {c['tokens']} tokens from {c['files_written']} "
            f"files and {c['answer_blocks_written']} answer code blocks"
        )
        if c.get("heldout_files"):
            console.print(
                f"{c['heldout_files']} source files held out of training for the completion test "
                "(heldout_sources.jsonl)"
            )
    if "replay" in audit:
        r = audit["replay"]
        console.print(
            f"replay: {r['kept']} general conversations for stage 2 (replay.jsonl), checked against "
            f"{r['checked_against_prompts']} evaluation prompts"
        )
        if sd := r.get("self_distilled"):
            console.print(
                f"  {sd['kept']} of them from data.self_replay: {sd['answers']} answers by {sd['model']} "
                f"in {sd['file']}",
                highlight=False,
            )
    n = audit["rejected"]["total"]
    if n:
        console.print(
            f"[yellow]{n} set aside[/] — "
            + ", ".join(f"{k} {v}" for k, v in audit["rejected"]["by_reason"].items())
        )
    console.print(f"Results in [bold]{out_dir}[/] (report.html{', rejected.jsonl' if prepared else ''})")


data_app.command("audit")(audit)
data_app.command("prepare")(prepare)
data_app.command("derive")(derive)
data_app.command("replay")(replay_command)
data_app.command("feedback")(feedback_command)
