"""`bbjtune eval`: measure how well a model writes BBj (and that it still writes Python).

    bbjtune eval CONFIG                      base and tuned model of a run, then the comparison
    bbjtune eval --model SOURCE [--adapter DIR] [--label NAME]   one model
    bbjtune eval --backend http --base-url URL --api-model NAME  a served model (vLLM, Ollama, llama.cpp)
    bbjtune eval --backend gguf --model FILE.gguf                a GGUF file
    bbjtune eval compare A B                 two eval directories side by side
    bbjtune eval score DIR                   score saved answers again, without the model

The heavy libraries (torch, transformers, matplotlib) load only when a model or a plot is needed,
inside the modules that use them, so `bbjtune --help` stays fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from bbjtune.artifacts import common_system_prompt
from bbjtune.config import EvalConfig, load_config, validate_config
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate.compare import compare_dirs
from bbjtune.evaluate.run import evaluate_model, score_dir
from bbjtune.evaluate.stage import (
    http_backend,
    humaneval_style,
    load_fim_cases,
    load_suites,
    print_summary,
    run_stage,
    trained_fingerprint,
)
from bbjtune.models import resolve_source
from bbjtune.models.backend import make_backend
from bbjtune.models.trained import read_trained


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it is not one of its commands, goes to `default_command`.

    `bbjtune eval CONFIG` and `bbjtune eval --model X` run `bbjtune eval run ...`, while
    `bbjtune eval compare A B` and `bbjtune eval --help` keep their usual meaning.
    """

    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Measure BBj skill: share of answers that compile, use the right APIs, answer facts right; "
    "HumanEval shows whether Python was forgotten. [bold]bbjtune eval CONFIG[/bold] evaluates a run's base "
    "and tuned models and compares them; [bold]bbjtune eval --model X[/bold] evaluates one model.",
)

Opt = typer.Option


@eval_app.command("run")
def eval_run(
    config: Annotated[
        str | None,
        typer.Argument(
            help="A run config or preset: evaluates its base and tuned models (or only --model, with its settings)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        Opt(
            help="Evaluate this model: hub id, directory, .gguf, tiny:<preset>; "
            "with --backend http the served model name."
        ),
    ] = None,
    adapter: Annotated[str | None, Opt(help="A LoRA adapter directory to put on --model.")] = None,
    trained: Annotated[
        str | None, Opt(help="A training run's trained.json (or run directory): the tuned model.")
    ] = None,
    backend: Annotated[
        str | None, Opt(help="transformers (local), http (OpenAI-compatible server) or gguf.")
    ] = None,
    base_url: Annotated[
        str | None, Opt(help="http backend: the server's address, e.g. http://127.0.0.1:11434/v1.")
    ] = None,
    suite: Annotated[
        list[str] | None, Opt(help="Eval suite file(s) (JSONL or YAML); repeatable. Default: the config's.")
    ] = None,
    label: Annotated[
        str | None, Opt(help="Name of this model's results directory (default from the model).")
    ] = None,
    out: Annotated[
        Path | None,
        Opt(help="Where eval/<label>/ directories go (default: the run's eval dir, or runs/eval)."),
    ] = None,
    limit: Annotated[int | None, Opt(help="At most N prompts per suite, spread over the categories.")] = None,
    humaneval_limit: Annotated[int | None, Opt(help="Only the first N HumanEval tasks.")] = None,
    no_humaneval: Annotated[bool, Opt("--no-humaneval", help="Skip HumanEval.")] = False,
    humaneval_style: Annotated[
        str | None,
        Opt(
            help="HumanEval prompts: chat (Instruct models) or completion "
            "(Base models continue the code). Default: from the config's "
            "model.kind, chat without a config."
        ),
    ] = None,
    sandbox: Annotated[
        str | None,
        Opt(
            help="Isolation of the model's HumanEval code: auto (bubblewrap; refuses to "
            "run without it), or the weaker namespaces / rlimits, which you choose "
            "here or with eval.humaneval.sandbox."
        ),
    ] = None,
    n_samples: Annotated[int | None, Opt(help="Answers per prompt (compile@k needs k of them).")] = None,
    k: Annotated[list[int] | None, Opt(help="k for compile@k and pass@k; repeatable.")] = None,
    temperature: Annotated[float | None, Opt(help="Sampling temperature (0 = greedy).")] = None,
    max_new_tokens: Annotated[int | None, Opt(help="Longest answer, in tokens.")] = None,
    batch_size: Annotated[int | None, Opt(help="Prompts generated together (transformers backend).")] = None,
    compiler: Annotated[str | None, Opt(help="auto (bbjcpl when installed), builtin or bbjcpl.")] = None,
    system_prompt: Annotated[
        str | None, Opt(help="System prompt for every question (default: the training data's).")
    ] = None,
    fresh: Annotated[
        bool, Opt("--fresh", help="Discard saved answers and generate everything again.")
    ] = False,
    set_: Annotated[
        list[str] | None, Opt("--set", help="Override a config setting, e.g. --set eval.top_p=0.9.")
    ] = None,
) -> None:
    """Evaluate a run (base vs tuned) or one model; answers are saved first, so a killed run resumes."""
    console = Console(stderr=True)
    cfg = load_config(config, set_) if config else None
    if set_ and not config:
        raise BbjtuneError("--set needs a CONFIG", "pass a config or preset name before the options")
    updates = {
        key: value
        for key, value in {
            "suites": suite or None,
            "limit": limit,
            "n_samples": n_samples,
            "k": k or None,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "compiler": compiler,
            "backend": backend,
            "base_url": base_url,
            "system_prompt": system_prompt,
        }.items()
        if value is not None
    }
    base = cfg.eval.model_dump() if cfg else EvalConfig().model_dump()
    he = base["humaneval"]
    if humaneval_limit is not None:
        he["limit"] = humaneval_limit
    if no_humaneval:
        he["enabled"] = False
    if humaneval_style is not None:
        he["prompt_style"] = humaneval_style
    if sandbox is not None:
        he["sandbox"] = sandbox
    if backend == "gguf" and model:
        updates["gguf_file"] = model
    if backend == "http" and model:
        updates["api_model"] = model
    merged = {**base, **updates, "humaneval": he}
    if "k" in updates and "n_samples" not in updates:
        merged["n_samples"] = max(merged["n_samples"], max(updates["k"]))
    ecfg = _validated_eval(merged)
    single = model or trained or adapter or not cfg
    if not single:
        cfg.eval = ecfg
        if out:
            cfg.eval.output_dir = str(out)

        path = run_stage(cfg, fresh=fresh)
        console.print(f"[green]✓[/] reports: {path}/*/report.html")
        return
    _eval_one(cfg, ecfg, model, adapter, trained, label, out, fresh, console)


def _validated_eval(raw: dict[str, Any]) -> Any:
    try:
        return EvalConfig.model_validate(raw)
    except ValidationError:
        validate_config({"name": "eval", "eval": raw}, source="eval options")  # raises with a clear message
        raise BbjtuneError("invalid eval options", "check the values") from None


def _eval_one(
    cfg: Any,
    ecfg: Any,
    model: str | None,
    adapter: str | None,
    trained: str | None,
    label: str | None,
    out: Path | None,
    fresh: bool,
    console: Any,
) -> None:
    kind = ecfg.backend
    if kind == "transformers" and not (model or trained):
        raise BbjtuneError(
            "no model to evaluate", "pass --model SOURCE (and --adapter DIR), --trained RUN_DIR, or a CONFIG"
        )
    info = None
    if trained:
        info = read_trained(trained)  # a training run directory or its trained.json
    model_kind = cfg.model.kind if cfg else "instruct"
    system = (
        ecfg.system_prompt
        or (info.raw.get("system_prompt") if info else None)
        or (cfg.data.system_prompt if cfg else None)
        or (common_system_prompt(cfg.data_dir / "train.jsonl") if cfg else None)
    )
    _check_inputs(kind, model, adapter, ecfg)
    spec: dict[str, Any] = {"backend": kind}
    if kind == "transformers":
        dtype = cfg.model.dtype if cfg else "auto"
        spec.update(
            {"trained": str(info.path), "fingerprint": trained_fingerprint(info)}
            if info
            else {"source": model, "adapter": adapter, "dtype": dtype}
        )
        factory = (
            (
                lambda: make_backend(
                    "transformers",
                    trained=str(info.path),
                    dtype=dtype,
                    batch_size=ecfg.batch_size,
                    refill_segment=ecfg.refill_segment,
                )
            )
            if info
            else (
                lambda: make_backend(
                    "transformers",
                    model=model,
                    adapter=adapter,
                    dtype=dtype,
                    batch_size=ecfg.batch_size,
                    refill_segment=ecfg.refill_segment,
                )
            )
        )
    elif kind == "http":
        spec.update(base_url=ecfg.base_url, model=ecfg.api_model)
        factory = lambda: http_backend(ecfg, ecfg.api_model)  # noqa: E731
    else:
        spec.update(gguf=ecfg.gguf_file)
        factory = lambda: make_backend("gguf", model=ecfg.gguf_file, threads=ecfg.threads)  # noqa: E731
    label = label or default_label(model or ecfg.api_model or ecfg.gguf_file, adapter, bool(info))
    root = out or (cfg.eval_dir if cfg else Path("runs") / "eval")
    suites = load_suites(ecfg.suites)
    style = humaneval_style(ecfg.humaneval.prompt_style, model_kind)
    console.print(f"[bold]Evaluating {label}[/] → {root / label}")
    fim_cases = (
        load_fim_cases(cfg, ecfg) if cfg else []
    )  # the held-out files come from the config's data stage
    results = evaluate_model(
        label,
        root / label,
        factory,
        spec,
        suites,
        ecfg,
        system_prompt=system,
        humaneval_style=style,
        fresh=fresh,
        fim_cases=fim_cases,
    )
    print_summary({label: results}, None)
    console.print(f"[green]✓[/] report: {root / label / 'report.html'}")


def _check_inputs(kind: str, model: str | None, adapter: str | None, ecfg: Any) -> None:
    """Fail before any directory is written when a model path is wrong."""

    if kind == "transformers" and model:
        resolve_source(model)
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise BbjtuneError(
            f"'{adapter}' is not a LoRA adapter directory (no adapter_config.json)",
            "pass the adapter directory a training run wrote, e.g. runs/<name>/sft/adapter",
        )
    if kind == "gguf" and not Path(ecfg.gguf_file or "").is_file():
        raise BbjtuneError(f"GGUF file {ecfg.gguf_file} does not exist", "pass --model path/to/model.gguf")


def default_label(model: str | None, adapter: str | None, trained: bool) -> str:
    """A directory name from the model: `Qwen/Qwen2.5-Coder-7B` → qwen2.5-coder-7b."""
    if trained:
        return "tuned"
    name = Path((model or "model").rstrip("/")).name.replace(":", "-")
    name = re.sub(r"\.gguf$", "", name, flags=re.I)
    if adapter:
        name += "+" + Path(adapter.rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-").lower() or "model"


@eval_app.command("compare")
def eval_compare(
    a: Annotated[
        Path, typer.Argument(help="The reference: an eval/<label>/ directory (usually the base model).")
    ],
    b: Annotated[
        Path, typer.Argument(help="The candidate: another eval/<label>/ directory (usually the tuned model).")
    ],
    out: Annotated[
        Path | None,
        Opt(help="Where to write (default: compare/ next to A for base vs tuned, else compare-A-vs-B/)."),
    ] = None,
    max_drop: Annotated[
        float, Opt(help="HumanEval gate: B may lose at most this many points of pass@1.")
    ] = 5.0,
) -> None:
    """Put two evaluated models side by side: deltas, regressions, the HumanEval gate, example pairs.

    Exits with status 1 when the HumanEval gate fails (B forgot too much Python), so scripts can stop there.
    """
    if out is None:
        same_run = a.resolve().parent == b.resolve().parent and {a.name, b.name} == {"base", "tuned"}
        out = a.parent / ("compare" if same_run else f"compare-{a.name}-vs-{b.name}")
    cmp = compare_dirs(a, b, out, max_drop)
    results = {p.name: json.loads((p / "results.json").read_text(encoding="utf-8")) for p in (a, b)}
    print_summary(results, cmp)
    Console(stderr=True).print(f"[green]✓[/] report: {out / 'report.html'}")
    if cmp["humaneval_gate"]["status"] == "fail":
        raise typer.Exit(1)


@eval_app.command("score")
def eval_score(
    directory: Annotated[Path, typer.Argument(help="An eval/<label>/ directory holding generations.jsonl.")],
    compiler: Annotated[
        str | None, Opt(help="auto, builtin or bbjcpl (default: as when it was generated).")
    ] = None,
) -> None:
    """Score saved answers again (e.g. with the real bbjcpl), without loading the model."""
    results = score_dir(directory, compiler=compiler)
    print_summary({results["model"]: results}, None)
    Console(stderr=True).print(f"[green]✓[/] report: {directory / 'report.html'}")
