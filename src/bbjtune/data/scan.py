"""The first pass over ChatML files: check, repair and summarise every line, one at a time.

Each usable conversation is repaired (literal `\\n` escapes), scrubbed of secrets, written to a
spool file (one JSON line, in input order) and summarised in a small `ExampleInfo`: hashes for
duplicate detection, MinHash signatures, its token count, whether its answer looks cut off, and
what the BBj checker says about the code in the answer. Bad lines become `Rejection`s. Later steps
decide from the summaries and read the conversations back from the spool, so memory holds
summaries, never the data set.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.bbj import check_source, extract_code_blocks
from bbjtune.bbj.extract import BBJ_LANGUAGES, LOOSE_LANGUAGES, looks_like_bbj
from bbjtune.bbj.quality import quality_errors
from bbjtune.data.chatml import Example, LineProblem, Rejection, decode_raw, parse_line, read_lines
from bbjtune.data.clean import (
    ExampleInfo,
    char_shingles,
    fix_literal_escapes,
    has_literal_escapes,
    minhash,
    text_key,
    truncation_reason,
    word_shingles,
)
from bbjtune.data.scrub import scrub_text
from bbjtune.data.tokens import TokenCounter
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import render_chatml

TOKEN_BATCH = 256
LINES_PER_BLOCK = 128
MAX_SHOWN = 20  # examples kept per finding for the report


@dataclass
class CodeFindings:
    """What the BBj checker says about the code in the answers."""

    examples_with_code: int = 0
    blocks: int = 0
    blocks_failed: int = 0
    examples_failed: int = 0
    unfenced_code: int = 0  # answers that are bare code, or code mixed into prose without a fence
    failures: list[dict[str, Any]] = field(default_factory=list)
    examples_flagged: int = 0  # answers whose checker-clean BBj breaks a tier 2 check
    flagged_by_rule: Counter = field(default_factory=Counter)  # rule -> answers
    flags: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_SHOWN, for the report


@dataclass
class ScanResult:
    infos: list[ExampleInfo] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    escapes_found: int = 0
    escapes_fixed: int = 0
    scrubbed: Counter = field(default_factory=Counter)
    scrubbed_examples: list[str] = field(default_factory=list)  # where, for the first MAX_SHOWN
    scrubbed_count: int = 0
    system_prompts: Counter = field(default_factory=Counter)  # key -> count
    system_texts: dict[bytes, str] = field(default_factory=dict)
    missing_system: int = 0
    code: CodeFindings = field(default_factory=CodeFindings)

    def system_prompt(self, configured: str | None) -> str | None:
        """The configured system prompt, else the most common one in the data (None: there is none)."""
        if configured:
            return configured
        if not self.system_prompts:
            return None
        key, _ = max(self.system_prompts.items(), key=lambda kv: (kv[1], kv[0]))
        return self.system_texts[key]


def answer_bbj_blocks(answer: str) -> tuple[list[str], bool]:
    """The BBj code blocks of an answer, and whether the code is bare (not in a ``` fence).

    Fences labelled bbj (bbx, bbjt, ...) count; unlabeled or loosely labelled fences (```basic,
    ```text) count when their lines read as BBj; an answer without fences counts when it is code.
    """

    blocks = extract_code_blocks(answer)
    fenced = [b for b in blocks if b.fenced]
    if not fenced:
        bare = [b.code for b in blocks if looks_like_bbj(b.code)]
        return bare, bool(bare)
    codes = [
        b.code
        for b in fenced
        if b.code.strip()
        and (
            b.language in BBJ_LANGUAGES or ((b.language or "") in LOOSE_LANGUAGES and looks_like_bbj(b.code))
        )
    ]
    return codes, False


class CodeChecker:
    """The BBj checker over answer code, remembering verdicts of blocks seen before."""

    def __init__(self) -> None:
        self._verdicts: dict[bytes, tuple[str, int] | None] = {}
        self._tier2: dict[bytes, list[tuple[str, int, str]]] = {}

    @staticmethod
    def _key(code: str) -> bytes:
        return text_key(code) + len(code).to_bytes(4, "little")

    def first_error(self, code: str) -> tuple[str, int] | None:
        """(message, line) of the first error in a block, or None when it passes."""

        key = self._key(code)
        if key not in self._verdicts:
            errors = [d for d in check_source(code, "answer.bbj") if d.is_error]
            self._verdicts[key] = (
                (f"{errors[0].message}: {errors[0].source_line.strip()[:120]}", errors[0].line)
                if errors
                else None
            )
        return self._verdicts[key]

    def tier2_errors(self, code: str) -> list[tuple[str, int, str]]:
        """(rule, line, message) of the tier 2 errors in a block (warnings left out)."""
        key = self._key(code)
        if key not in self._tier2:
            self._tier2[key] = [(f.rule, f.line, f.message) for f in quality_errors(code)]
        return self._tier2[key]


@dataclass(frozen=True)
class ScanOptions:
    fix_escapes: bool
    scrub: bool
    check_code: bool
    min_hash: bool = True
    check_quality: bool = False  # tier 2 on the blocks that pass the checker


def scan_chatml(
    files: list[Path],
    *,
    spool: Any | None,
    tokens: TokenCounter,
    options: ScanOptions,
    strict: bool,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Read every line of every file once. `spool` (an open text file or None) receives the usable
    conversations as JSON lines; `progress(bytes read so far)` drives a progress bar. With
    `workers` > 1, blocks of lines are summarised in that many processes (results stay in order)."""
    result = ScanResult(files=[str(f) for f in files])
    pending: list[tuple[ExampleInfo, str]] = []

    def flush_tokens() -> None:
        counts = tokens.count([text for _, text in pending])
        for (info, _), n in zip(pending, counts):
            info.n_tokens = n
        pending.clear()

    done_bytes = 0
    with BlockMapper(workers) as mapper:
        for path in files:
            blocks = _blocks(read_lines(path), LINES_PER_BLOCK)
            for block in mapper.map(summarise_block, blocks, str(path), options):
                for item in block:
                    result.lines += 1
                    if item is None:
                        result.blank_lines += 1
                        continue
                    if isinstance(item, Rejection):
                        if strict:
                            raise BbjtuneError(
                                f"{item.where}: {item.detail}",
                                "fix this line, or run without "
                                "--strict to set bad lines aside in rejected.jsonl",
                            )
                        result.rejections.append(item)
                        continue
                    example, info, rendered = item
                    info.index = len(result.infos)
                    _tally(result, example, info)
                    result.infos.append(info)
                    if spool is not None:
                        spool.write(
                            json.dumps({"messages": example.messages, **example.extra}, ensure_ascii=False)
                            + "\n"
                        )
                    pending.append((info, rendered))
                    if len(pending) >= TOKEN_BATCH:
                        flush_tokens()
                if progress:
                    progress(done_bytes + max((_offset(item) for item in block), default=0))
            done_bytes += path.stat().st_size
    flush_tokens()
    if progress:
        progress(done_bytes)
    return result


# ----------------------------------------------------------------------------- one block, one example


def summarise_block(lines: list[tuple[int, int, bytes]], label: str, options: ScanOptions) -> list[Any]:
    """Each line as None (blank), a Rejection, or (Example repaired and scrubbed, its info, its
    ChatML text). A pure function of its input: it runs in worker processes."""
    out: list[Any] = []
    for number, offset, raw in lines:
        if not raw.strip():
            out.append(None)
            continue
        try:
            messages, extra = parse_line(raw)
        except LineProblem as problem:
            out.append(Rejection(label, number, problem.reason, problem.detail, offset, decode_raw(raw)))
            continue
        example = Example(label, number, offset, messages, extra)
        out.append((example, *summarise(example, options)))
    return out


def repair_messages(
    messages: list[dict[str, str]], *, fix_escapes: bool, scrub: bool
) -> tuple[bool, Counter]:
    """Repair literal `\\n` escapes (outside system prompts) and scrub secrets, in place.

    Returns whether escapes were found and what was scrubbed. Shared by the BBj data and replay.
    """
    escapes_found = any(has_literal_escapes(m["content"]) for m in messages if m["role"] != "system")
    if escapes_found and fix_escapes:
        for m in messages:
            if m["role"] != "system" and has_literal_escapes(m["content"]):
                m["content"] = fix_literal_escapes(m["content"])
    scrubbed: Counter = Counter()
    if scrub:
        for m in messages:
            m["content"], found = (_scrub_system if m["role"] == "system" else scrub_text)(m["content"])
            scrubbed.update(found)
    return escapes_found, scrubbed


def summarise(ex: Example, options: ScanOptions) -> tuple[ExampleInfo, str]:
    """Repair and scrub `ex` in place and describe it; returns its info and its ChatML text."""

    escapes_found, scrubbed = repair_messages(
        ex.messages, fix_escapes=options.fix_escapes, scrub=options.scrub
    )
    system, prompt, answer = ex.system, ex.prompt, ex.answer
    prompt_key, answer_key = text_key(prompt), text_key(answer)
    info = ExampleInfo(
        index=-1,
        file=ex.file,
        line=ex.line,
        offset=ex.offset,
        prompt_key=prompt_key,
        answer_key=answer_key,
        example_key=hashlib.blake2b(prompt_key + answer_key, digest_size=12).digest(),
        system_key=None if system is None else text_key(system),
        answer_chars=len(answer.strip()),
        category=_label(ex.extra.get("category")),
        generation=_label(ex.extra.get("generation")),
        task=_label(ex.extra.get("task")),
        truncated=truncation_reason(answer),
        escapes_found=escapes_found,
        escapes_fixed=escapes_found and options.fix_escapes,
        scrubbed=dict(scrubbed),
    )
    if options.min_hash:
        info.example_sig = minhash(word_shingles(f"{prompt}\n{answer}"))
        info.prompt_sig = minhash(char_shingles(prompt))
    if options.check_code or options.check_quality:
        _check_answer_code(info, answer, tier1=options.check_code, tier2=options.check_quality)
    return info, render_chatml(ex.messages)


_scrub_system = functools.lru_cache(maxsize=64)(scrub_text)  # the same system prompt on every line
_CHECKER: CodeChecker | None = None  # one per process


def _check_answer_code(info: ExampleInfo, answer: str, *, tier1: bool = True, tier2: bool = False) -> None:
    """The checker's verdict on each BBj block of the answer (tier1), and the tier 2 checks on the blocks
    that pass it (tier2: their findings on code that does not parse would be noise)."""
    global _CHECKER
    _CHECKER = _CHECKER or CodeChecker()
    codes, info.bare_code = answer_bbj_blocks(answer)
    info.code_blocks = len(codes)
    failing, rules = [], []
    for n, code in enumerate(codes):
        error = _CHECKER.first_error(code)
        if error is None:
            if tier2:
                for rule, line, message in _CHECKER.tier2_errors(code):
                    if rule not in rules:
                        rules.append(rule)
                    if info.quality_error is None:
                        info.quality_error = f"BBj block {n + 1}, line {line}: {rule}: {message}"
            continue
        if not tier1:
            continue
        failing.append(n)
        if info.code_error is None:
            message, line = error
            info.code_error = f"BBj block {n + 1}, line {line}: {message}"
            info.code_failure = (n + 1, line, message)
    info.failing_blocks = tuple(failing)
    info.quality_rules = tuple(rules)


def _tally(result: ScanResult, ex: Example, info: ExampleInfo) -> None:
    """Add one example's findings to the totals."""
    result.escapes_found += info.escapes_found
    result.escapes_fixed += info.escapes_fixed
    if info.scrubbed:
        result.scrubbed.update(info.scrubbed)
        result.scrubbed_count += 1
        if len(result.scrubbed_examples) < MAX_SHOWN:
            result.scrubbed_examples.append(f"{info.where} ({', '.join(sorted(info.scrubbed))})")
    if info.system_key is None:
        result.missing_system += 1
    else:
        result.system_prompts[info.system_key] += 1
        if info.system_key not in result.system_texts and len(result.system_texts) < 1000:
            result.system_texts[info.system_key] = ex.system
    code = result.code
    code.unfenced_code += info.bare_code
    if info.code_blocks:
        code.examples_with_code += 1
        code.blocks += info.code_blocks
        code.blocks_failed += len(info.failing_blocks)
    if info.code_failure is not None:
        code.examples_failed += 1
        if len(code.failures) < MAX_SHOWN:
            block, line, message = info.code_failure
            code.failures.append({"where": info.where, "block": block, "line": line, "message": message})
    if info.quality_error is not None:
        code.examples_flagged += 1
        code.flagged_by_rule.update(info.quality_rules)
        if len(code.flags) < MAX_SHOWN:
            code.flags.append({"where": info.where, "finding": info.quality_error})


def _offset(item: Any) -> int:
    if item is None:
        return 0
    return item.offset if isinstance(item, Rejection) else item[0].offset


def _label(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int)) and str(value).strip() else None


# ----------------------------------------------------------------------------- worker processes


def _blocks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    block: list[Any] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


class BlockMapper:
    """`map(fn, blocks, *args)` in order, in this process or in `workers` spawned processes.

    At most two blocks per worker are in flight, so memory stays bounded whatever the input size.
    Workers are started fresh (spawn): they import only this package's light modules.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def __enter__(self) -> BlockMapper:
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable[..., Any], blocks: Iterator[Any], *args: Any) -> Iterator[Any]:
        if self._pool is None:
            for block in blocks:
                yield fn(block, *args)
            return
        window: deque = deque()
        for block in blocks:
            window.append(self._pool.submit(fn, block, *args))
            if len(window) >= 2 * self.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
