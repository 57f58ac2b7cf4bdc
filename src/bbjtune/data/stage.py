"""The data stage: audit, clean and split the instruction data, and build the stage 1 corpus.

`run_stage(cfg)` (called by `bbjtune run`) and `bbjtune data prepare` do, in order:

1. read every ChatML line once (scan.py): bad lines are set aside with file, line and reason;
   literal `\\n` escapes are repaired, secrets scrubbed, token lengths counted with the run's
   tokenizer, BBj code in the answers checked; conversations go to a spool file on disk;
2. filter and deduplicate (clean.py): fragments, cut-off answers, failing code (if configured),
   over-long conversations, exact copies, repeated prompts, near copies;
3. drop examples that overlap an evaluation prompt (before the split), and training examples that
   overlap a held-out prompt (after it) (split.py);
4. split off the held-out set, with similar prompts kept together (split.py);
5. write train.jsonl, heldout.jsonl, cpt.jsonl (cpt.py), rejected.jsonl, audit.json,
   report.html (report.py) and manifest.json with input sha256s and the counts of every step;
   `data.heldout_sources_ratio` of the source files stay out of cpt.jsonl, in
   heldout_sources.jsonl (the fill-in-the-middle evaluation's files; the manifest lists them), and
   conversations derived from them (their "source") stay out of train.jsonl;
6. with `data.replay`: check and clean the general conversations stage 2 mixes in (replay.py)
   into replay.jsonl; with `data.self_replay`, first have the Instruct model answer the general
   prompts into <run>/replay/self-distilled.jsonl (self_replay.py; loads a model, needs the GPU,
   skipped when the file is complete) and read it as one more replay file.

Nothing is lost silently: every line that does not reach train.jsonl or heldout.jsonl is in
rejected.jsonl with its reason, and every repair is counted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.artifacts import StageRun, atomic_open, atomic_write_json, atomic_write_text
from bbjtune.config import SELFTRAIN_PROMPTS_FILE, RunConfig, expand_globs
from bbjtune.data import replay, self_replay
from bbjtune.data.audit import build_audit
from bbjtune.data.chatml import Rejection, read_raw_line
from bbjtune.data.clean import Decision, ExampleInfo, filter_and_dedupe
from bbjtune.data.cpt import CptCorpus, find_sources
from bbjtune.data.outcome import Analysis, Outcome, Written
from bbjtune.data.report import write_report
from bbjtune.data.scan import ScanOptions, answer_bbj_blocks, scan_chatml
from bbjtune.data.derive import default_system_prompt
from bbjtune.data.selftrain_prompts import prompt_text_key, write_selftrain_prompts
from bbjtune.data.split import file_digest, split_heldout, split_sources
from bbjtune.data.tokens import TokenCounter
from bbjtune.decontamination import ContaminationIndex, eval_prompts, example_id, prompt_of
from bbjtune.errors import BbjtuneError
from bbjtune.progress import progress_bar
from bbjtune.models.chat_template import QWEN_DEFAULT_SYSTEM

OVERLAPS_HELDOUT = "overlaps-heldout"
OVERLAPS_EVAL = "overlaps-eval"
FROM_HELDOUT_SOURCE = "from-heldout-source"
HELDOUT_SOURCES_FILE = "heldout_sources.jsonl"
# Stage 1 chunks leave room for the FIM tokens (3, and a token or two where the cut splits a word),
# so a FIM sample still fits one training row (train/fim.py keeps samples that do not fit plain).
FIM_RESERVED_TOKENS = 8
PARALLEL_FROM_BYTES = 4 << 20  # below this, starting worker processes costs more than it saves
OUTPUTS = (
    "train.jsonl",
    "heldout.jsonl",
    "cpt.jsonl",
    HELDOUT_SOURCES_FILE,
    SELFTRAIN_PROMPTS_FILE,
    "rejected.jsonl",
    "audit.json",
    "report.html",
)


def run_stage(cfg: RunConfig) -> Path:
    """`bbjtune run`'s data step: prepare into cfg.data_dir (bad lines are set aside, not fatal)."""
    console = Console(stderr=True)
    outcome = prepare(cfg, cfg.data_dir, strict=cfg.data.strict, console=console)
    c = outcome.counts
    aside = (
        f"[yellow]{outcome.rejected} set aside[/] (rejected.jsonl)"
        if outcome.rejected
        else "nothing set aside"
    )
    held = (
        f", {c['heldout_sources']} source files held out for the completion test"
        if c.get("heldout_sources")
        else ""
    )
    fresh = (
        f", {c['selftrain_prompts']} fresh prompts for self-training" if c.get("selftrain_prompts") else ""
    )
    console.print(
        f"data: {c['train']} training and {c['heldout']} held-out conversations, {c['cpt_chunks']} "
        f"stage 1 chunks{held}{fresh}; {aside}; report: {outcome.out_dir / 'report.html'}",
        highlight=False,
    )
    return outcome.out_dir


# ----------------------------------------------------------------------------- inputs


def chatml_files(cfg: RunConfig) -> list[Path]:
    return _matched(cfg.data.chatml, "data.chatml")


def _matched(patterns: list[str], key: str) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matched = expand_globs([pattern])
        if not matched:
            raise BbjtuneError(
                f"{key}: '{pattern}' matches no file",
                f"check the path (relative paths start from the current directory, {Path.cwd()})",
            )
        files.extend(f for f in matched if f not in files)
    return files


# ----------------------------------------------------------------------------- analysis


def analyse(
    cfg: RunConfig,
    files: list[Path],
    *,
    strict: bool,
    spool: Any | None,
    console: Console,
    tokens: TokenCounter | None = None,
) -> Analysis:
    """Scan the ChatML files and decide which examples stay (no outputs written)."""
    d = cfg.data
    tokens = tokens or TokenCounter.for_model(cfg.model.source, warn=_warner(console))
    max_length = d.max_length or cfg.train.sft.max_length
    total = sum(f.stat().st_size for f in files)
    with _progress(console, "Reading ChatML", total) as advance:
        options = ScanOptions(
            fix_escapes=d.fix_escapes,
            scrub=d.scrub_secrets,
            check_code=d.code_check != "off",
            check_quality=d.quality_check != "off",
        )
        scan = scan_chatml(
            files,
            spool=spool,
            tokens=tokens,
            options=options,
            strict=strict,
            workers=d.workers or _auto_workers(total),
            progress=advance,
        )
    system_prompt = scan.system_prompt(d.system_prompt)
    added = 0
    if d.add_system_prompt and system_prompt and scan.missing_system:
        # counted with Qwen's default system prompt (what the template inserts); correct for ours
        delta = tokens.count([system_prompt])[0] - tokens.count([QWEN_DEFAULT_SYSTEM])[0]
        for info in scan.infos:
            if info.system_key is None:
                info.n_tokens += delta
                added += 1
    decisions = filter_and_dedupe(
        scan.infos,
        min_answer_chars=d.min_answer_chars,
        drop_truncated=d.drop_truncated,
        code_check=d.code_check,
        quality_check=d.quality_check,
        max_length=max_length,
        drop_too_long=d.drop_too_long,
        duplicate_prompts=d.duplicate_prompts,
        near_duplicate_threshold=d.near_duplicate_threshold,
    )
    return Analysis(cfg, files, tokens, max_length, scan, decisions, system_prompt, added)


def audit(cfg: RunConfig, out_dir: Path, *, strict: bool = False, console: Console | None = None) -> Outcome:
    """`bbjtune data audit`: the findings and the report, without changing or writing any data."""

    console = console or Console(stderr=True)
    files = chatml_files(cfg)
    if not files:
        raise BbjtuneError(
            "no ChatML files to audit", "pass JSONL files, or a config whose data.chatml lists some"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BbjtuneError(
            f"cannot create output directory {out_dir}: {exc.strerror}",
            "choose a writable location with --out",
        ) from exc
    analysis = analyse(cfg, files, strict=strict, spool=None, console=console)
    report = build_audit(analysis)
    atomic_write_json(out_dir / "audit.json", report)
    atomic_write_text(out_dir / "report.html", write_report(report, title="Data audit"))
    return Outcome(out_dir, report, report["rejected"]["total"])


# ----------------------------------------------------------------------------- prepare


def prepare(
    cfg: RunConfig, out_dir: Path, *, strict: bool = False, console: Console | None = None
) -> Outcome:
    """`bbjtune data prepare`: everything in the module docstring; returns the output directory."""

    console = console or Console(stderr=True)
    d = cfg.data
    files = chatml_files(cfg)
    sources, skipped = find_sources(d.sources) if d.sources else ([], [])
    if not files and not sources:
        raise BbjtuneError(
            "there is no data to prepare: data.chatml and data.sources are both empty",
            "list ChatML JSONL files under data.chatml and/or BBj sources under data.sources",
        )
    warn = _warner(console)
    eval_files, eval_items = eval_prompts(d.decontaminate_against)
    tokens = TokenCounter.for_model(cfg.model.source, warn=warn)
    replay_files = _matched(d.replay, "data.replay")
    distilled = self_replay.ensure(cfg, console)  # before any output: the answers survive a failure below
    if distilled and not any(_same_file(f, distilled.path) for f in replay_files):
        replay_files.append(distilled.path)

    with StageRun(out_dir, "data", config=cfg.model_dump(mode="json")) as run:
        run.add_inputs([*files, *sources, *eval_files, *replay_files])
        spool_path = out_dir / ".spool.jsonl"
        try:
            with run.timed("scan"), open(spool_path, "w", encoding="utf-8") as spool:
                analysis = analyse(cfg, files, strict=strict, spool=spool, console=console, tokens=tokens)
            replayed = None
            if replay_files:
                with run.timed("replay"):
                    replayed = replay.prepare(
                        replay_files,
                        out_dir / replay.REPLAY_FILE,
                        d,
                        eval_items=eval_items,
                        warn=warn,
                        count_tokens=tokens.count,
                        max_length=analysis.max_length if d.drop_too_long else None,
                    )
                if distilled:
                    replayed.self_distilled = distilled.record(
                        sum(n for f, n in replayed.kept_by_file.items() if _same_file(f, distilled.path))
                    )
            else:  # a replay.jsonl left from an earlier preparation must not be trained on
                (out_dir / replay.REPLAY_FILE).unlink(missing_ok=True)
            with run.timed("write"):
                written = _write_outputs(
                    analysis, spool_path, out_dir, eval_items, sources, skipped, console, replayed
                )
        finally:
            spool_path.unlink(missing_ok=True)
        report = build_audit(analysis, written)
        atomic_write_json(out_dir / "audit.json", report)
        atomic_write_text(out_dir / "report.html", write_report(report, title="Data preparation"))
        run.outputs.extend([*OUTPUTS, *([replay.REPLAY_FILE] if replayed else [])])
        run.metrics.update(
            {
                "steps": report["steps"],
                "rejected": report["rejected"],
                "train": written.train,
                "heldout": written.heldout,
                "cpt_chunks": written.cpt.stats.chunks,
                "heldout_sources": written.heldout_sources,
                "selftrain_prompts": written.selftrain_prompts,
                "cpt_tokens": written.cpt.stats.tokens,
                "tokenizer": tokens.describe(),
                "replay": replayed.kept if replayed else 0,
                **({"self_replay": replayed.self_distilled} if replayed and replayed.self_distilled else {}),
                "system_prompt_added": analysis.system_prompt_added,
                "escapes_fixed": analysis.scan.escapes_fixed,
                "scrubbed": dict(analysis.scan.scrubbed + written.cpt.stats.scrubbed),
            }
        )
    return Outcome(
        out_dir,
        report,
        report["rejected"]["total"],
        {
            "train": written.train,
            "heldout": written.heldout,
            "cpt_chunks": written.cpt.stats.chunks,
            "replay": replayed.kept if replayed else 0,
            "heldout_sources": len(written.heldout_sources),
            "selftrain_prompts": written.selftrain_prompts["kept"],
        },
    )


def _write_outputs(
    a: Analysis,
    spool_path: Path,
    out_dir: Path,
    eval_items: list[tuple[str, str]],
    sources: list[Path],
    skipped: list[str],
    console: Console,
    replayed: replay.ReplayResult | None = None,
) -> Written:
    d, cfg = a.cfg.data, a.cfg
    by_index = {info.index: info for info in a.scan.infos}
    dropped = a.rejected_indexes
    contaminated: list[Decision] = []
    if eval_items:  # prompts of the evaluation suite may not be trained on, nor held out (pointless there)
        evals = ContaminationIndex(d.decontaminate_ngram, d.decontaminate_threshold)
        for label, prompt in eval_items:
            evals.add(label, prompt)
        for i, row in _read_spool(spool_path):
            if i not in dropped and (match := evals.match(prompt_of(row["messages"]))) is not None:
                contaminated.append(_overlap(i, OVERLAPS_EVAL, match, d.decontaminate_ngram))
        dropped = dropped | {dec.index for dec in contaminated}
    kept = [info for info in a.scan.infos if info.index not in dropped]
    heldout = split_heldout(kept, d.heldout_ratio, d.seed, d.split_group_threshold)
    index = ContaminationIndex(d.decontaminate_ngram, d.decontaminate_threshold)
    for i, row in _read_spool(spool_path):
        if i in heldout:
            index.add(f"held-out {by_index[i].where}", prompt_of(row["messages"]))

    split_counts: dict[str, dict[str, int]] = {}
    prompt_sides: dict[bytes, set[str]] = {}
    chunk_tokens = d.cpt_chunk_tokens or (
        cfg.train.cpt.max_length - (FIM_RESERVED_TOKENS if cfg.train.cpt.fim_rate > 0 else 0)
    )
    held_files = _heldout_sources(sources, d.heldout_sources_ratio, d.seed)
    held_paths: list[str] = []
    held_real: set[str] = set()
    train_prompts: set[str] = set()  # what self-training's fresh prompts must not repeat
    n_train = n_heldout = 0
    with (
        atomic_open(out_dir / "train.jsonl") as train_fh,
        atomic_open(out_dir / "heldout.jsonl") as heldout_fh,
        atomic_open(out_dir / "cpt.jsonl") as cpt_fh,
        atomic_open(out_dir / HELDOUT_SOURCES_FILE) as held_fh,
    ):
        cpt = CptCorpus(
            cpt_fh, a.tokens, chunk_tokens, d.scrub_secrets, d.cpt_near_dedupe, d.near_duplicate_threshold
        )
        cpt.stats.skipped_files = skipped
        for path in held_files:  # first: a training file repeating one of them is then set aside as its copy
            text = cpt.hold_out(path)
            held_real.add(os.path.realpath(path))
            if text is not None:
                held_fh.write(json.dumps({"source": str(path), "text": text}, ensure_ascii=False) + "\n")
                held_paths.append(str(path))
        with _progress(console, "Building the stage 1 corpus", len(sources)) as advance:
            for n, path in enumerate(sources, 1):
                if os.path.realpath(path) not in held_real:
                    cpt.add_file(path)
                advance(n)
        with _progress(console, "Writing train/held-out", len(a.scan.infos)) as advance:
            for i, row in _read_spool(spool_path):
                advance(i + 1)
                if i in dropped:
                    continue
                info = by_index[i]
                messages = row.pop("messages")
                side = "heldout" if i in heldout else "train"
                if side == "train" and len(index) and (match := index.match(prompt_of(messages))) is not None:
                    contaminated.append(_overlap(i, OVERLAPS_HELDOUT, match, d.decontaminate_ngram))
                    continue
                source = row.get("source")
                if side == "train" and isinstance(source, str) and os.path.realpath(source) in held_real:
                    contaminated.append(
                        Decision(
                            i,
                            FROM_HELDOUT_SOURCE,
                            f"derived from {source}, a source file held "
                            "out for the fill-in-the-middle evaluation",
                        )
                    )
                    continue
                if d.add_system_prompt and a.system_prompt and messages[0]["role"] != "system":
                    messages.insert(0, {"role": "system", "content": a.system_prompt})
                record = _output_record(messages, row)
                (heldout_fh if side == "heldout" else train_fh).write(
                    json.dumps(record, ensure_ascii=False) + "\n"
                )
                counts = split_counts.setdefault(info.category or "(none)", {"train": 0, "heldout": 0})
                counts[side] += 1
                prompt_sides.setdefault(info.prompt_key, set()).add(side)
                if side == "train":
                    n_train += 1
                    train_prompts.add(prompt_text_key(messages))
                    if d.cpt_from_answers:
                        answer = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
                        codes, _ = answer_bbj_blocks(answer)  # the same blocks the scan checked
                        if codes:
                            cpt.add_answer(
                                record["id"],
                                [(c, n not in info.failing_blocks) for n, c in enumerate(codes)],
                                fits=0 < info.n_tokens <= chunk_tokens,
                            )
                else:
                    n_heldout += 1
        cpt.finish()
    # the held-out index is done with train.jsonl: now it checks fresh prompts
    for label, prompt in eval_items:
        index.add(label, prompt)
    fresh = write_selftrain_prompts(
        out_dir,
        sources,
        held_real,
        train_prompts,
        index,
        system=a.system_prompt or default_system_prompt(),
        check_code=d.code_check == "reject",
    )
    rejections = _rejections(a, contaminated, [*cpt.rejections, *(replayed.rejections if replayed else [])])
    with atomic_open(out_dir / "rejected.jsonl") as fh:
        for r in rejections:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return Written(
        n_train,
        n_heldout,
        heldout,
        contaminated,
        cpt,
        rejections,
        split_counts,
        len(eval_items),
        sum(len(s) > 1 for s in prompt_sides.values()),
        replayed,
        held_paths,
        fresh,
    )


def _same_file(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _heldout_sources(sources: list[Path], ratio: float, seed: int) -> list[Path]:
    """The source files kept out of stage 1 (split.split_sources decides; unreadable files count as empty)."""
    digests = []  # one file in memory at a time: a corpus can be far larger than the memory
    for path in sources:
        try:
            digests.append(file_digest(path.read_bytes()))
        except OSError:
            digests.append(file_digest(b""))
    chosen = split_sources(digests, ratio, seed)
    return [p for i, p in enumerate(sources) if i in chosen]


def _overlap(index: int, reason: str, match: Any, n: int) -> Decision:
    return Decision(
        index, reason, f"the prompt shares {match.overlap:.0%} of the {n}-word sequences of {match.label}"
    )


def _output_record(messages: list[dict[str, str]], extra: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"messages": messages, "id": example_id(messages)}
    for key, value in extra.items():
        record["source_id" if key == "id" else key] = value
    return record


def _read_spool(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            yield i, json.loads(line)


def _rejections(a: Analysis, contaminated: list[Decision], sources: list[Rejection]) -> list[Rejection]:
    """Every rejection, with the original line text, in file and line order."""
    by_index = {info.index: info for info in a.scan.infos}
    out = list(a.scan.rejections)
    for dec in [*a.decisions, *contaminated]:
        info: ExampleInfo = by_index[dec.index]
        extra = {"duplicate_of": dec.duplicate_of} if dec.duplicate_of else {}
        out.append(
            Rejection(
                info.file,
                info.line,
                dec.reason,
                dec.detail,
                info.offset,
                read_raw_line(info.file, info.offset),
                extra,
            )
        )
    order = {str(f): n for n, f in enumerate(a.chatml_files)}
    out.sort(key=lambda r: (order.get(r.file, len(order)), r.line or 0))
    return out + sources


def _auto_workers(total_bytes: int) -> int:
    if total_bytes < PARALLEL_FROM_BYTES:
        return 1
    return max(
        1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


# ----------------------------------------------------------------------------- console helpers


def _warner(console: Console) -> Callable[[str], None]:
    return lambda message: console.print(f"[yellow]warning:[/] {message}", highlight=False)


@contextlib.contextmanager
def _progress(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long steps; silent when stderr is not a terminal."""
    if not console.is_terminal or total == 0 or os.environ.get("BBJTUNE_NO_PROGRESS"):
        yield lambda done: None
        return
    with progress_bar(label, total, console, eta=True) as done:
        yield done
