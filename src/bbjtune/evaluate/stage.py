"""The eval stage of `bbjtune run`: evaluate the base model and the tuned one, then compare them.

    eval/base/     the model the run started from (model.source), no adapter
    eval/tuned/    the fine-tuned model, from the train stage's trained.json
    eval/compare/  tuned vs base: deltas per tier and category, the HumanEval gate, example pairs

With `eval.fim.enabled` both models also fill holes in the data stage's held-out source files
(fim.py): the same cases for both, built once here.

With the http backend the tuned model is `eval.api_model` on `eval.base_url` (and the base model
`eval.base_api_model` when set); with the gguf backend `eval.gguf_file` (and `eval.base_gguf_file`).
Each model directory resumes where a killed run stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.artifacts import common_system_prompt, sha256_file
from bbjtune.config import REPO_ROOT, EvalConfig, RunConfig, expand_globs
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate import fim
from bbjtune.evaluate.metrics import PRIMARY, flat, percent
from bbjtune.evaluate.paired import describe
from bbjtune.evaluate.report import words
from bbjtune.evaluate.compare import compare_dirs
from bbjtune.evaluate.run import evaluate_model
from bbjtune.evaluate.suite import load_suite
from bbjtune.models.backend import make_backend
from bbjtune.models.trained import TRAINED_NAME, Trained, read_trained

console = Console(stderr=True)


@dataclass
class ModelPlan:
    label: str
    spec: dict[str, Any]
    factory: Callable[[], Any]


def run_stage(cfg: RunConfig, fresh: bool = False) -> Path:
    ecfg = cfg.eval
    out = cfg.eval_dir
    suites = load_suites(ecfg.suites)
    has_trained = ecfg.backend == "transformers" and (cfg.train_dir / TRAINED_NAME).exists()
    trained = read_trained(cfg.train_dir) if has_trained else None
    system_prompt = (
        ecfg.system_prompt
        or (trained.raw.get("system_prompt") if trained else None)
        or cfg.data.system_prompt
        or common_system_prompt(cfg.data_dir / "train.jsonl")
    )
    style = humaneval_style(ecfg.humaneval.prompt_style, cfg.model.kind)
    fim_cases = load_fim_cases(cfg)
    results = {}
    for plan in plan_models(cfg, trained):
        console.print(f"[bold]Evaluating {plan.label}[/] ({words(plan.spec)})")
        results[plan.label] = evaluate_model(
            plan.label,
            out / plan.label,
            plan.factory,
            plan.spec,
            suites,
            ecfg,
            system_prompt=system_prompt,
            humaneval_style=style,
            fresh=fresh,
            restart_on_change=True,
            fim_cases=fim_cases,
        )
    if "base" in results and "tuned" in results:
        cmp = compare_dirs(out / "base", out / "tuned", out / "compare", ecfg.humaneval.max_drop_points)
        print_summary(results, cmp)
    else:
        print_summary(results, None)
    return out


def load_fim_cases(cfg: RunConfig, ecfg: Any = None) -> list:
    """The FIM suite's cases from the data stage's held-out source files ([] when off or there are none);
    `ecfg` (default cfg.eval) gives the settings."""
    ecfg = ecfg or cfg.eval
    f = ecfg.fim
    if not f.enabled:
        return []
    path = cfg.data_dir / "heldout_sources.jsonl"
    if not path.exists():
        console.print(
            f"[yellow]note:[/] no fill-in-the-middle suite: {path} does not exist (run `bbjtune data "
            "prepare` with data.sources; set eval.fim.enabled: false to silence this)",
            highlight=False,
        )
        return []
    cases, info = fim.build_cases(
        fim.read_heldout_sources(path),
        f.samples,
        f.seed,
        f.kinds,
        f.max_block_lines,
        f.context_lines_before,
        f.context_lines_after,
        ecfg.compiler,
    )
    if not cases:
        console.print(
            f"[yellow]note:[/] no fill-in-the-middle suite: of {info['files']} held-out source file(s), "
            f"{info['files_used']} compile as they are (the suite needs files that do; from 10 source "
            "files on, data.heldout_sources_ratio of them are held out)",
            highlight=False,
        )
    return cases


def load_suites(patterns: list[str]) -> list:
    paths = expand_globs(patterns)
    if not paths:  # run from another directory: the project's own suites
        paths = expand_globs([str(REPO_ROOT / p) for p in patterns if not Path(p).is_absolute()])
    if not paths:
        raise BbjtuneError(
            f"no eval suite matches {', '.join(patterns)}",
            "check eval.suites (or --suite); the project's suites are evals/bbj-core.jsonl and "
            "evals/bbj-challenge.jsonl",
        )
    suites = [load_suite(p) for p in paths]
    for s in suites:
        for problem in s.problems[:5]:
            console.print(f"[yellow]skipped[/] {problem}", highlight=False)
        if len(s.problems) > 5:
            console.print(f"[yellow]skipped[/] … and {len(s.problems) - 5} more bad case(s) in {s.path}")
    return suites


def humaneval_style(setting: str, model_kind: str) -> str:
    """Base models continue code (their chat tokens are untrained); Instruct models are asked in chat."""
    if setting != "auto":
        return setting
    return "completion" if model_kind == "base" else "chat"


def http_backend(e: EvalConfig, model: str | None) -> Any:
    """The http backend for `model` at eval.base_url, with the config's timeout, retries and concurrency."""
    return make_backend(
        "http",
        base_url=e.base_url,
        api_model=model,
        timeout_s=e.http_wait_s,
        retries=e.retries,
        concurrency=e.concurrency,
    )


def plan_models(cfg: RunConfig, trained: Trained | None) -> list[ModelPlan]:
    e = cfg.eval
    plans: list[ModelPlan] = []
    if e.backend == "transformers":
        if trained is None:
            raise BbjtuneError(
                f"no trained model: {Path(cfg.train_dir) / 'trained.json'} does not exist",
                "run the train stage first (bbjtune run CONFIG --stages train), or evaluate a "
                "model directly: bbjtune eval --model SOURCE",
            )
        if e.compare_with_base:
            plans.append(
                ModelPlan(
                    "base",
                    {"backend": "transformers", "source": cfg.model.source, "dtype": cfg.model.dtype},
                    lambda: make_backend(
                        "transformers",
                        model=cfg.model.source,
                        dtype=cfg.model.dtype,
                        batch_size=e.batch_size,
                        refill_segment=e.refill_segment,
                    ),
                )
            )
        trained_path = str(trained.path)
        plans.append(
            ModelPlan(
                "tuned",
                {
                    "backend": "transformers",
                    "trained": trained_path,
                    "fingerprint": trained_fingerprint(trained),
                },
                lambda: make_backend(
                    "transformers",
                    trained=trained_path,
                    dtype=cfg.model.dtype,
                    batch_size=e.batch_size,
                    refill_segment=e.refill_segment,
                ),
            )
        )
    elif e.backend == "http":

        def http(model: str | None) -> Callable[[], Any]:
            return lambda: http_backend(e, model)

        if e.compare_with_base and e.base_api_model:
            plans.append(
                ModelPlan(
                    "base",
                    {"backend": "http", "base_url": e.base_url, "model": e.base_api_model},
                    http(e.base_api_model),
                )
            )
        plans.append(
            ModelPlan(
                "tuned", {"backend": "http", "base_url": e.base_url, "model": e.api_model}, http(e.api_model)
            )
        )
    else:
        if e.compare_with_base and e.base_gguf_file:
            plans.append(
                ModelPlan(
                    "base",
                    {"backend": "gguf", "gguf": e.base_gguf_file},
                    lambda: make_backend("gguf", model=e.base_gguf_file, threads=e.threads),
                )
            )
        plans.append(
            ModelPlan(
                "tuned",
                {"backend": "gguf", "gguf": e.gguf_file},
                lambda: make_backend("gguf", model=e.gguf_file, threads=e.threads),
            )
        )
    return plans


def trained_fingerprint(trained: Trained) -> str:
    """Changes when the model is retrained: trained.json and the adapter's weights."""
    parts = [sha256_file(trained.path)]
    if trained.adapter is not None:
        parts += [sha256_file(f) for f in sorted(trained.adapter.glob("*.safetensors"))]
    return ":".join(p[:16] for p in parts)


def print_summary(results: dict[str, dict[str, Any]], cmp: dict[str, Any] | None) -> None:
    for label, r in results.items():
        first_k = next(iter(r[PRIMARY.key]), "1")
        he = (r.get("humaneval") or {}).get("pass_at_1")
        figures = "   ".join(
            f"{name} {percent(value):>6s}" for name, value in flat(r, [first_k], short=True).items()
        )
        console.print(
            f"  {label:8s} {figures}   HumanEval pass@1 {percent(he):>6s}   errors {len(r['errors'])}",
            highlight=False,
        )
        if r.get("fim"):
            f = r["fim"]
            console.print(
                f"  {'':8s} FIM ({f['n_cases']} holes): exact {percent(f['exact_match'])}   edit similarity "
                f"{percent(f['edit_similarity'])}   compile@1 {percent(f['compile_at_1'])}   "
                f"stops {percent(f['stop_rate'])}   as shown: exact {percent(f.get('shown_exact_match'))}   "
                f"compile@1 {percent(f.get('shown_compile_at_1'))}",
                highlight=False,
            )
    if cmp:
        gate = cmp["humaneval_gate"]
        colour = {"pass": "green", "fail": "red"}.get(gate["status"], "yellow")
        console.print(
            f"  HumanEval gate: [{colour}]{gate['status'].upper().replace('_', ' ')}[/] — {gate['message']}",
            highlight=False,
        )
        for note in cmp.get("no_signal") or []:
            console.print(f"  [yellow]{note}[/]", highlight=False)
        if gate["status"] == "fail":
            console.print(
                "  To keep more general skill, mix general conversations into stage 2: bbjtune data replay "
                "(README, 'Keeping general coding skills')",
                highlight=False,
            )
        for name, change in (cmp.get("paired") or {}).items():
            if change["verdict"] != "no change":
                colour = {"a real gain": "green", "a real loss": "red"}.get(change["verdict"], "yellow")
                console.print(f"  [{colour}]{describe(name, change)}[/]", highlight=False)
        if cmp["regressions"]:
            console.print(f"  {len(cmp['regressions'])} regression(s); see the compare report")
