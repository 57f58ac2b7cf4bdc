"""Evaluate one model: generate every answer (resumable), then score them, then write the report.

    eval/<label>/
      settings.json      what was evaluated and how (model, sampling, suites, prompt style)
      cases.jsonl        the suite cases used (so scoring never needs the suite files again)
      fim_cases.jsonl    the fill-in-the-middle cases, when the FIM suite runs (fim.py)
      generations.jsonl  every sample, written before scoring (see generations.py)
      scores.jsonl       one score per sample, with compiler diagnostics and failed patterns
      results.json       the numbers; report.html; manifest.json

`score_dir` re-scores a directory from its files alone (another compiler, a fixed checker).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from bbjtune.artifacts import (
    StageRun,
    atomic_write_json,
    atomic_write_jsonl,
    read_complete_jsonl,
    sha256_file,
)
from bbjtune.bbj import extract_bbj
from bbjtune.config import EvalConfig
from bbjtune.errors import BbjtuneError
from bbjtune.evaluate import fim, humaneval, report
from bbjtune.bbj.compile import resolve_compiler
from bbjtune.evaluate.metrics import METRICS
from bbjtune.evaluate.sandbox import Limits, detect_isolation
from bbjtune.evaluate.scoring import build_results, score_bbj_samples
from bbjtune.evaluate.suite import EvalCase, Suite, SuiteProblem, limit_cases
from bbjtune.models.generate import Backend, Request, Sampling
from bbjtune.progress import progress_bar
from bbjtune.models.generations import GENERATIONS_FILE, generate_to_file

SETTINGS_FILE = "settings.json"
CASES_FILE = "cases.jsonl"
SCORES_FILE = "scores.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
# Settings that change what a sample is; a resumed run must match them.
FINGERPRINT_KEYS = ("model", "sampling", "system_prompt", "humaneval_style", "humaneval_max_new_tokens")


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr that stays when done; yields `advance(n)`."""
    finished = 0
    with progress_bar(description, total, transient=False) as done:

        def advance(n: int = 1) -> None:
            nonlocal finished
            finished += n
            done(finished)

        yield advance


def bbj_requests(cases: Sequence[EvalCase], system_prompt: str | None) -> list[Request]:
    requests = []
    for c in cases:
        system = c.system or system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": c.prompt}
        ]
        requests.append(
            Request(
                messages=messages,
                meta={
                    "suite": c.suite,
                    "id": c.id,
                    "prompt": c.prompt,
                    "category": c.category,
                    "generation": c.generation,
                    "task": c.task,
                },
            )
        )
    return requests


def sampling_of(ecfg: EvalConfig) -> Sampling:
    return Sampling(
        temperature=ecfg.temperature,
        top_p=ecfg.top_p,
        max_new_tokens=ecfg.max_new_tokens,
        n=ecfg.n_samples,
        seed=ecfg.seed,
        repeat_penalty=ecfg.repeat_penalty,
        repeat_last_n=ecfg.repeat_last_n,
    )


def evaluate_model(
    label: str,
    out_dir: str | Path,
    backend_factory: Callable[[], Backend],
    model_spec: dict[str, Any],
    suites: Sequence[Suite],
    ecfg: EvalConfig,
    system_prompt: str | None = None,
    humaneval_style: str = "chat",
    fresh: bool = False,
    restart_on_change: bool = False,
    fim_cases: Sequence[Any] = (),
) -> dict[str, Any]:
    """Generate (or resume) and score one model; returns its results.json content.

    Saved answers made with other settings (another model, temperature, ...) are an error, unless
    `restart_on_change` (the pipeline: the config is the truth) or `fresh` start over.
    """

    out = Path(out_dir)
    cases = [c for s in suites for c in limit_cases(s.cases, ecfg.limit)]
    problems = [p for s in suites for p in s.problems]
    if not cases and not ecfg.humaneval.enabled and not fim_cases:
        raise BbjtuneError(
            "nothing to evaluate: the suites hold no valid case and HumanEval is off",
            "fix the suite files (problems: " + "; ".join(map(str, problems[:3])) + ")",
        )
    sampling = sampling_of(ecfg)
    settings = {
        "label": label,
        "model": model_spec,
        "sampling": asdict(sampling),
        "k": sorted(set(ecfg.k)),
        "compiler": ecfg.compiler,
        "system_prompt": system_prompt,
        "suites": [
            {
                "name": s.name,
                "path": str(s.path),
                "sha256": sha256_file(s.path),
                "cases": len(s.cases),
                "problems": [p.to_dict() for p in s.problems],
            }
            for s in suites
        ],
        "limit": ecfg.limit,
        "humaneval": ecfg.humaneval.enabled,
        "humaneval_style": humaneval_style if ecfg.humaneval.enabled else None,
        "humaneval_max_new_tokens": ecfg.humaneval.max_new_tokens,
        "humaneval_limit": ecfg.humaneval.limit,
        "humaneval_limits": {"wall_s": ecfg.humaneval.timeout_s, "memory_mb": ecfg.humaneval.memory_mb},
        "humaneval_sandbox": ecfg.humaneval.sandbox,
        "fim": _fim_settings(fim_cases, ecfg),
    }
    if ecfg.humaneval.enabled:  # refuse before generating, not after, when nothing can run the answers safely
        detect_isolation(ecfg.humaneval.sandbox)
    _prepare_dir(out, settings, fresh, restart_on_change)
    with StageRun(out, stage="eval", config={"label": label, **ecfg.model_dump(mode="json")}) as run:
        run.add_inputs([s.path for s in suites])
        run.extra["model"] = model_spec
        atomic_write_json(out / SETTINGS_FILE, settings)
        atomic_write_jsonl(out / CASES_FILE, [c.to_dict() for c in cases])
        requests = bbj_requests(cases, system_prompt)
        if fim_cases:
            fim.write_cases(out / fim.CASES_FILE, fim_cases)
            requests += fim.fim_requests(fim_cases, ecfg.fim.max_new_tokens)
        else:
            (out / fim.CASES_FILE).unlink(missing_ok=True)
        problems_by_id: dict[str, dict[str, Any]] = {}
        if ecfg.humaneval.enabled:
            he_problems = humaneval.load_problems(ecfg.humaneval.limit)
            problems_by_id = {p["task_id"]: p for p in he_problems}
            # No BBj system prompt here: the question is whether plain Python still works.
            requests += humaneval.humaneval_requests(
                he_problems, humaneval_style, ecfg.humaneval.max_new_tokens
            )

        def extract(request: Request, output: str) -> str:
            if request.meta["suite"] == humaneval.SUITE_NAME:
                return humaneval.extract_solution(output, problems_by_id[request.meta["id"]], humaneval_style)
            if request.meta["suite"] == fim.SUITE_NAME:
                return output  # the completion goes into the hole as it is
            return extract_bbj(output)

        with run.timed("generate"), progress(f"[{label}] generating", len(requests)) as advance:
            stats = generate_to_file(
                backend_factory, requests, sampling, out / GENERATIONS_FILE, label, extract, advance
            )
        if stats.failed_samples:
            Console(stderr=True).print(
                f"[yellow]{label}: {stats.failed_samples} sample(s) got no answer[/] "
                f"(first: {stats.first_error}); they count as failed and are listed in "
                "results.json. Running the same command again retries the failed requests "
                "(not empty answers).",
                highlight=False,
            )
        run.metrics["generation"] = vars(stats)
        if stats.generated and stats.seconds:
            run.metrics["generation"]["prompts_per_s"] = round(stats.generated / stats.seconds, 3)
        with run.timed("score"):
            results = score_dir(out, extra_problems=problems)
        run.metrics.update({k: results[k] for k in (*(m.key for m in METRICS), "n_prompts", "n_samples")})
        run.metrics["humaneval"] = results.get("humaneval")
        run.metrics["fim"] = results.get("fim")
        run.outputs += [GENERATIONS_FILE, SCORES_FILE, RESULTS_FILE, REPORT_FILE, CASES_FILE, SETTINGS_FILE]
        if fim_cases:
            run.outputs.append(fim.CASES_FILE)
    return results


def _fim_settings(fim_cases: Sequence[Any], ecfg: EvalConfig) -> dict[str, Any] | None:
    """What decides the FIM samples: the cases themselves (by hash) and the token limit."""
    if not fim_cases:
        return None
    digest = hashlib.sha256(
        json.dumps([c.to_dict() for c in fim_cases], sort_keys=True).encode()
    ).hexdigest()[:16]
    return {"cases": len(fim_cases), "cases_sha256": digest, "max_new_tokens": ecfg.fim.max_new_tokens}


def _prepare_dir(out: Path, settings: dict[str, Any], fresh: bool, restart_on_change: bool) -> None:
    """Start over when asked; never mix samples made with other settings into a resumed run."""
    out.mkdir(parents=True, exist_ok=True)
    changed = _changed_settings(out, settings)
    if changed and not fresh:
        if not restart_on_change:
            raise BbjtuneError(
                f"{out} already holds generations made with different {', '.join(changed)}",
                "add --fresh to start over there, or use another --label / output directory",
            )
        Console(stderr=True).print(
            f"[yellow]{out.name}:[/] {', '.join(changed)} changed since the saved answers "
            "were made: generating them again",
            highlight=False,
        )
    if fresh or changed:
        for name in (GENERATIONS_FILE, SCORES_FILE, RESULTS_FILE, REPORT_FILE):
            (out / name).unlink(missing_ok=True)
    elif _old_settings(out).get("fim") != settings.get("fim") and (out / GENERATIONS_FILE).exists():
        # other FIM cases (or none before): only the FIM samples are made again, the rest stay valid
        kept = [r for r in read_complete_jsonl(out / GENERATIONS_FILE) if r.get("suite") != fim.SUITE_NAME]
        atomic_write_jsonl(out / GENERATIONS_FILE, kept)


def _old_settings(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _changed_settings(out: Path, settings: dict[str, Any]) -> list[str]:
    if not (out / GENERATIONS_FILE).exists() or not (out / SETTINGS_FILE).exists():
        return []
    try:
        old = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return ["settings"]
    return [k for k in FINGERPRINT_KEYS if old.get(k) != settings.get(k)]


def score_dir(
    out_dir: str | Path,
    compiler: str | None = None,
    workers: int | None = None,
    extra_problems: Sequence[SuiteProblem] = (),
) -> dict[str, Any]:
    """Score a directory's generations from its files alone; writes scores.jsonl, results.json, report.html."""

    out = Path(out_dir)
    for name in (SETTINGS_FILE, CASES_FILE, GENERATIONS_FILE):
        if not (out / name).exists():
            raise BbjtuneError(
                f"{out} has no {name}", "point at an eval/<label>/ directory written by `bbjtune eval`"
            )
    settings = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    cases = [
        EvalCase.from_dict(json.loads(line))
        for line in (out / CASES_FILE).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = read_complete_jsonl(out / GENERATIONS_FILE)
    n = settings["sampling"]["n"]
    k_list = [k for k in settings["k"] if k <= n] or [1]
    compiler = compiler or settings.get("compiler") or "auto"
    bbj_rows = [r for r in rows if r["suite"] not in (humaneval.SUITE_NAME, fim.SUITE_NAME)]
    he_rows = [r for r in rows if r["suite"] == humaneval.SUITE_NAME]
    with progress(f"[{settings['label']}] scoring BBj", len(cases)) as advance:
        scores = score_bbj_samples(bbj_rows, cases, n, compiler, advance)
    used = sorted({s["compiler"] for s in scores if s["compiler"]}) or [resolve_compiler(compiler)]
    he_summary = None
    if settings.get("humaneval") and he_rows:
        limits = Limits(
            wall_s=settings["humaneval_limits"]["wall_s"],
            cpu_s=int(max(1, settings["humaneval_limits"]["wall_s"])),
            memory_mb=settings["humaneval_limits"]["memory_mb"],
        )
        with progress(f"[{settings['label']}] running HumanEval", len(he_rows)) as advance:
            he_scores, he_summary = humaneval.score_humaneval(
                he_rows,
                settings["humaneval_style"],
                limits,
                k_list,
                workers,
                advance,
                settings.get("humaneval_sandbox", "auto"),
            )
        scores_all = scores + he_scores
    else:
        scores_all = list(scores)
    fim_cases = fim.read_cases(out / fim.CASES_FILE)
    fim_scores = fim.score_fim(rows, fim_cases, n, compiler) if fim_cases else []
    scores_all += fim_scores
    errors = [
        {"suite": r["suite"], "id": r["id"], "sample": r["sample"], "error": r["error"]}
        for r in rows
        if r.get("error")
    ]
    errors += [
        {"suite": s["suite"], "id": s["id"], "sample": s["sample"], "error": s["error"]}
        for s in scores
        if s["error"] and s["error"].startswith("no generation")
    ]
    problems = [p for suite in settings.get("suites", []) for p in suite.get("problems", [])]
    problems += [p.to_dict() for p in extra_problems if p.to_dict() not in problems]
    errors += [
        {"suite": Path(p["file"]).stem, "file": p["file"], "line": p["line"], "error": p["reason"]}
        for p in problems
    ]
    results = build_results(
        settings["label"],
        scores,
        k_list,
        "+".join(used),
        he_summary,
        errors,
        extra={
            "model_spec": settings.get("model"),
            "sampling": settings["sampling"],
            "suites": [s["name"] for s in settings.get("suites", [])],
            "fim": fim.summarize_fim(fim_scores),
            **({"gateway": summary} if (summary := gateway_summary(rows)) else {}),
        },
    )
    atomic_write_jsonl(out / SCORES_FILE, scores_all)
    atomic_write_json(out / RESULTS_FILE, results)
    report.write_model_report(out / REPORT_FILE, results, scores_all, rows)
    return results


def gateway_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How the checking gateway got the answers, when it gave them (`eval --backend http` through
    `bbjtune serve gateway`): answers drawn in all and per request, repaired and loop-cut answers."""
    seen = [r["gateway"] for r in rows if isinstance(r.get("gateway"), dict)]
    if not seen:
        return None
    attempts = [int(g.get("attempts") or 1) for g in seen]
    return {
        "requests": len(seen),
        "answers_drawn": sum(attempts),
        "requests_by_answers_drawn": {str(k): attempts.count(k) for k in sorted(set(attempts))},
        "repaired": sum(bool(g.get("repaired")) for g in seen),
        "loop_cut": sum(bool(g.get("loop_cut")) for g in seen),
        "verdicts": {
            v: sum(g.get("verdict") == v for g in seen) for v in sorted({str(g.get("verdict")) for g in seen})
        },
    }
