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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.data.chatml import Example, Rejection, iter_chatml
from bbjtune.data.clean import (ExampleInfo, char_shingles, fix_literal_escapes, has_literal_escapes, minhash,
                                text_key, truncation_reason, word_shingles)
from bbjtune.data.scrub import scrub_text
from bbjtune.data.tokens import TokenCounter
from bbjtune.errors import BbjtuneError

TOKEN_BATCH = 256
MAX_SHOWN = 20  # examples kept per finding for the report


@dataclass
class CodeFindings:
    """What the BBj checker says about the code in the answers."""

    examples_with_code: int = 0
    blocks: int = 0
    blocks_failed: int = 0
    examples_failed: int = 0
    unfenced_code: int = 0        # answers that are bare code, or code mixed into prose without a fence
    failures: list[dict[str, Any]] = field(default_factory=list)


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
    system_prompts: Counter = field(default_factory=Counter)    # key -> count
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
    from bbjtune.bbj import extract_code_blocks
    from bbjtune.bbj.extract import BBJ_LANGUAGES, LOOSE_LANGUAGES, looks_like_bbj

    blocks = extract_code_blocks(answer)
    fenced = [b for b in blocks if b.fenced]
    if not fenced:
        bare = [b.code for b in blocks if looks_like_bbj(b.code)]
        return bare, bool(bare)
    codes = [b.code for b in fenced if b.code.strip() and (
        b.language in BBJ_LANGUAGES or ((b.language or "") in LOOSE_LANGUAGES and looks_like_bbj(b.code)))]
    return codes, False


class CodeChecker:
    """The BBj checker over answer code, remembering verdicts of blocks seen before."""

    def __init__(self) -> None:
        self._verdicts: dict[bytes, tuple[str, int] | None] = {}

    def first_error(self, code: str) -> tuple[str, int] | None:
        """(message, line) of the first error in a block, or None when it passes."""
        from bbjtune.bbj import check_source

        key = text_key(code) + len(code).to_bytes(4, "little")
        if key not in self._verdicts:
            errors = [d for d in check_source(code, "answer.bbj") if d.is_error]
            self._verdicts[key] = (f"{errors[0].message}: {errors[0].source_line.strip()[:120]}", errors[0].line) \
                if errors else None
        return self._verdicts[key]


def scan_chatml(files: list[Path], *, spool: Any | None, tokens: TokenCounter, fix_escapes: bool, scrub: bool,
                check_code: bool, strict: bool, min_hash: bool = True,
                progress: Callable[[int], None] | None = None) -> ScanResult:
    """Read every line of every file once. `spool` (an open text file or None) receives the usable
    conversations as JSON lines; `progress(bytes read so far)` drives a progress bar."""
    result = ScanResult(files=[str(f) for f in files])
    checker = CodeChecker() if check_code else None
    pending: list[tuple[ExampleInfo, str]] = []

    def flush_tokens() -> None:
        counts = tokens.count([text for _, text in pending])
        for (info, _), n in zip(pending, counts):
            info.n_tokens = n
        pending.clear()

    done_bytes = 0
    for path in files:
        for item in iter_chatml(path, str(path)):
            result.lines += 1
            if item is None:
                result.blank_lines += 1
                continue
            if progress and result.lines % 64 == 0:
                progress(done_bytes + (item.offset or 0))
            if isinstance(item, Rejection):
                if strict:
                    raise BbjtuneError(f"{item.where}: {item.detail}",
                                       "fix this line, or run without --strict to set bad lines aside in rejected.jsonl")
                result.rejections.append(item)
                continue
            info, rendered = _summarise(item, len(result.infos), result, fix_escapes, scrub, checker, min_hash)
            result.infos.append(info)
            if spool is not None:
                spool.write(json.dumps({"messages": item.messages, **item.extra}, ensure_ascii=False) + "\n")
            pending.append((info, rendered))
            if len(pending) >= TOKEN_BATCH:
                flush_tokens()
        done_bytes += path.stat().st_size
    flush_tokens()
    if progress:
        progress(done_bytes)
    return result


def _summarise(ex: Example, index: int, result: ScanResult, fix_escapes: bool, scrub: bool,
               checker: CodeChecker | None, min_hash: bool) -> tuple[ExampleInfo, str]:
    """Repair and scrub `ex` in place, and summarise it; returns the info and its ChatML text."""
    from bbjtune.models.chat_template import render_chatml

    escapes_fixed = False
    if any(has_literal_escapes(m["content"]) for m in ex.messages if m["role"] != "system"):
        result.escapes_found += 1
        if fix_escapes:
            escapes_fixed = True
            result.escapes_fixed += 1
            for m in ex.messages:
                if m["role"] != "system" and has_literal_escapes(m["content"]):
                    m["content"] = fix_literal_escapes(m["content"])
    scrubbed: Counter = Counter()
    if scrub:
        for m in ex.messages:
            m["content"], found = (_scrub_system if m["role"] == "system" else scrub_text)(m["content"])
            scrubbed.update(found)
        if scrubbed:
            result.scrubbed.update(scrubbed)
            result.scrubbed_count += 1
            if len(result.scrubbed_examples) < MAX_SHOWN:
                result.scrubbed_examples.append(f"{ex.where} ({', '.join(sorted(scrubbed))})")
    system, prompt, answer = ex.system, ex.prompt, ex.answer
    if system is None:
        result.missing_system += 1
        system_key = None
    else:
        system_key = text_key(system)
        result.system_prompts[system_key] += 1
        if system_key not in result.system_texts and len(result.system_texts) < 1000:
            result.system_texts[system_key] = system
    prompt_key, answer_key = text_key(prompt), text_key(answer)
    info = ExampleInfo(
        index=index, file=ex.file, line=ex.line, offset=ex.offset, prompt_key=prompt_key, answer_key=answer_key,
        example_key=hashlib.blake2b(prompt_key + answer_key, digest_size=12).digest(), system_key=system_key,
        answer_chars=len(answer.strip()),
        category=_label(ex.extra.get("category")), generation=_label(ex.extra.get("generation")),
        task=_label(ex.extra.get("task")),
        truncated=truncation_reason(answer), escapes_fixed=escapes_fixed,
        scrubbed=dict(scrubbed),
    )
    if min_hash:
        info.example_sig = minhash(word_shingles(f"{prompt}\n{answer}"))
        info.prompt_sig = minhash(char_shingles(prompt))
    if checker is not None:
        _check_answer_code(info, answer, checker, result.code)
    return info, render_chatml(ex.messages)


_scrub_system = functools.lru_cache(maxsize=64)(scrub_text)  # the same system prompt on every line


def _check_answer_code(info: ExampleInfo, answer: str, checker: CodeChecker, findings: CodeFindings) -> None:
    codes, bare = answer_bbj_blocks(answer)
    findings.unfenced_code += bare
    if not codes:
        return
    findings.examples_with_code += 1
    findings.blocks += len(codes)
    info.code_blocks = len(codes)
    failing = []
    for n, code in enumerate(codes, 1):
        error = checker.first_error(code)
        if error is None:
            continue
        failing.append(n - 1)
        info.failing_blocks = tuple(failing)
        findings.blocks_failed += 1
        if info.code_error is None:
            message, line = error
            info.code_error = f"BBj block {n}, line {line}: {message}"
            findings.examples_failed += 1
            if len(findings.failures) < MAX_SHOWN:
                findings.failures.append({"where": info.where, "block": n, "line": line, "message": message})


def _label(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int)) and str(value).strip() else None
