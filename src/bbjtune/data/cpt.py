"""The stage 1 corpus (`cpt.jsonl`): plain BBj text for continued pretraining.

Text comes from raw source files (.bbj .src .bbjt .bbl .txt, found through globs or directories)
and from the BBj code blocks of the training answers. Each file is decoded as UTF-8, or Latin-1
when it is not UTF-8 (old BBx files are), its line endings become LF, and secrets are scrubbed.
Exact duplicate texts are dropped, near duplicates too when asked (`cpt_near_dedupe`).

Long texts are cut into chunks of at most `chunk_tokens` tokens on statement boundaries: never
inside a line, and never between a line and its column-0 `:` continuation lines. Within the last
half of a chunk, the cut prefers a blank line, the end of a method/class/function or a line
before a label. The chunks of a text, joined, give back exactly that text.

Each line of cpt.jsonl is {"text", "source" (the file path, or chatml:<example id>), "chunk",
"n_chunks"}.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bbjtune.bbj.extract import looks_like_bbj
from bbjtune.data.chatml import Rejection
from bbjtune.data.clean import SimilarityIndex, minhash, word_shingles
from bbjtune.data.scrub import scrub_text
from bbjtune.data.tokens import TokenCounter
from bbjtune.errors import BbjtuneError

SOURCE_EXTENSIONS = (".bbj", ".src", ".bbjt", ".bbl", ".txt")
BINARY_SNIFF_BYTES = 8192
# a .txt file counts as a BBj source when at least this share of its lines reads as BBj
TXT_BBJ_SHARE = 0.5
# BBj code averages 3-4 characters per token: a text over 8 x budget characters is counted line by
# line at once (the chunks are the same either way; this saves counting it whole first)
MAX_CHARS_PER_TOKEN = 8

DUPLICATE_FILE = "duplicate-file"
NEAR_DUPLICATE_FILE = "near-duplicate-file"
BINARY_FILE = "binary-file"
EMPTY_FILE = "empty-file"
UNREADABLE_FILE = "unreadable-file"

_GOOD_END_RE = re.compile(
    r"^\s*(?:\d+\s+)?(?:methodend|classend|interfaceend|fnend|return|end|stop|bye|swend)\b", re.IGNORECASE
)
_LABEL_RE = re.compile(r"^\s*(?:\d+\s+)?[A-Za-z_][\w.]*:\s*$")


# ----------------------------------------------------------------------------- finding files


def find_sources(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Source files matched by globs or directories (walked recursively), sorted, without repeats;
    and the files the patterns matched that are not BBj sources (skipped). A pattern that yields
    no source file is an error: the user pointed at the wrong place."""
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.isdir(expanded):
            candidates = sorted(p for p in Path(expanded).rglob("*") if p.is_file())
        else:
            candidates = [Path(p) for p in sorted(glob.glob(expanded, recursive=True)) if os.path.isfile(p)]
        sources = [p for p in candidates if p.suffix.lower() in SOURCE_EXTENSIONS and not _prose_txt(p)]
        skipped.extend(str(p) for p in candidates if p not in sources)
        if not sources:
            what = (
                "matches no file"
                if not candidates
                else f"matches {len(candidates)} file(s) but none is a BBj source ({' '.join(SOURCE_EXTENSIONS)})"
            )
            raise BbjtuneError(
                f"data.sources: '{pattern}' {what}",
                "point it at BBj source files or a folder holding them, or remove it",
            )
        for p in sources:
            found.setdefault(os.path.realpath(p), p)
    return list(found.values()), sorted(set(skipped))


def _prose_txt(path: Path) -> bool:
    """A .txt file that is not BBj code (a licence, a compiler log): some BBj sources are saved as
    .txt, but most .txt files beside them are not code, and training on them as BBj teaches prose."""
    if path.suffix.lower() != ".txt":
        return False
    try:
        text, _ = decode_source(path.read_bytes())
    except (OSError, SourceProblem):
        return False  # kept, so that reading it later reports the problem
    return not looks_like_bbj(text, threshold=TXT_BBJ_SHARE)


# ----------------------------------------------------------------------------- reading


class SourceProblem(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode_source(data: bytes) -> tuple[str, str]:
    """(text with LF line ends, encoding): UTF-8 (a BOM is dropped), else Latin-1."""
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise SourceProblem(BINARY_FILE, "binary data (NUL bytes), not source text")
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
        text = text.removeprefix("\ufeff")
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise SourceProblem(EMPTY_FILE, "the file is empty")
    if not text.endswith("\n"):
        text += "\n"
    return text, encoding


# ----------------------------------------------------------------------------- chunking


def statement_units(text: str) -> list[str]:
    """The text as a list of statement lines: each physical line with its `:` continuation lines
    attached (a line starting with ':' in column 0 continues the line before it). Lossless."""
    parts = text.split("\n")  # not splitlines(): it also breaks at U+0085 and friends inside Latin-1 text
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    units: list[str] = []
    for line in lines:
        if line.startswith(":") and units:
            units[-1] += line
        else:
            units.append(line)
    return units


def chunk_text(text: str, budget: int, tokens: TokenCounter) -> tuple[list[tuple[str, int]], int]:
    """The text cut into (chunk, tokens) of at most `budget` tokens on statement boundaries; and how
    many chunks are over budget (a single statement line longer than the budget stays whole).
    Chunk token counts are sums over their lines (line ends separate tokens, so this is exact up to
    a token or so at the joins)."""
    if len(text) <= MAX_CHARS_PER_TOKEN * budget:
        whole = tokens.count([text])[0]
        if whole <= budget:
            return [(text, whole)], 0
    units = statement_units(text)
    counts = tokens.count(units)
    chunks: list[tuple[str, int]] = []
    oversized = 0
    current: list[int] = []  # unit indexes
    used = 0
    for i, n in enumerate(counts):
        if current and used + n > budget:
            cut = _best_cut(units, current)
            head, current = current[:cut], current[cut:]
            size = sum(counts[j] for j in head)
            chunks.append(("".join(units[j] for j in head), size))
            oversized += size > budget
            used = sum(counts[j] for j in current)
        current.append(i)
        used += n
    if current:
        chunks.append(("".join(units[j] for j in current), used))
        oversized += used > budget
    return chunks, oversized


def _best_cut(units: list[str], current: list[int]) -> int:
    """How many units of `current` to emit: the last good boundary in its second half, else all."""
    for k in range(len(current) - 1, len(current) // 2 - 1, -1):
        unit = units[current[k]]
        nxt = units[current[k] + 1] if current[k] + 1 < len(units) else ""
        if not unit.strip() or _GOOD_END_RE.match(unit) or _LABEL_RE.match(nxt):
            return k + 1
    return len(current)


# ----------------------------------------------------------------------------- the corpus


@dataclass
class CptStats:
    files: int = 0
    files_written: int = 0
    heldout_files: int = 0
    encodings: Counter = field(default_factory=Counter)
    chunks: int = 0
    oversized_chunks: int = 0
    tokens: int = 0
    characters: int = 0
    answer_blocks: int = 0
    answer_blocks_written: int = 0
    answer_blocks_duplicate: int = 0
    answer_blocks_failing_check: int = 0
    scrubbed: Counter = field(default_factory=Counter)
    skipped_files: list[str] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "chunk_tokens"}
        d["encodings"] = dict(self.encodings)
        d["scrubbed"] = dict(self.scrubbed)
        return d


class CptCorpus:
    """Writes cpt.jsonl records to `out`, dropping duplicates and recording what it dropped."""

    def __init__(
        self,
        out: IO[str],
        tokens: TokenCounter,
        chunk_tokens: int,
        scrub: bool,
        near_dedupe: bool,
        near_threshold: float,
    ):
        self.out = out
        self.tokens = tokens
        self.chunk_tokens = chunk_tokens
        self.scrub = scrub
        self.near = SimilarityIndex(near_threshold) if near_dedupe else None
        self.seen: dict[bytes, str] = {}
        self.stats = CptStats()
        self.rejections: list[Rejection] = []
        self._uncounted: list[str] = []

    def add_file(self, path: Path) -> None:
        self.stats.files += 1
        try:
            text, encoding = decode_source(path.read_bytes())
        except OSError as exc:
            self._reject(path, UNREADABLE_FILE, f"cannot read the file: {exc.strerror}")
            return
        except SourceProblem as problem:
            self._reject(path, problem.reason, problem.detail)
            return
        self.stats.encodings[encoding] += 1
        text = self._prepare(text)
        if self._is_duplicate(str(path), text, path):
            return
        self.stats.files_written += 1
        chunks = self._chunks(text)
        for i, (chunk, n_tokens) in enumerate(chunks):
            self._write(chunk, n_tokens, str(path), i, len(chunks))

    def hold_out(self, path: Path) -> str | None:
        """A held-out source file's text (for the FIM evaluation), never written to the corpus; it
        enters the duplicate index first, so a training file with the same text is set aside as its
        duplicate. None when the file is unusable or repeats an earlier held-out file."""
        self.stats.files += 1
        try:
            text, _ = decode_source(path.read_bytes())
        except OSError as exc:
            self._reject(path, UNREADABLE_FILE, f"cannot read the file: {exc.strerror}")
            return None
        except SourceProblem as problem:
            self._reject(path, problem.reason, problem.detail)
            return None
        text = self._prepare(text)
        if self._is_duplicate(str(path), text, path):
            return None
        self.stats.heldout_files += 1
        return text

    def add_answer(self, example_id: str, blocks: list[tuple[str, bool]], fits: bool = False) -> None:
        """The BBj blocks of one training answer as (code, passes the checker); source `chatml:<id>`,
        chunks numbered across the blocks. Blocks with checker errors are not used. `fits`: the whole
        conversation is within the chunk limit, so no block needs cutting (and counting can wait)."""
        pieces: list[tuple[str, int | None]] = []
        for code, passes_check in blocks:
            self.stats.answer_blocks += 1
            if not passes_check:
                self.stats.answer_blocks_failing_check += 1
                continue
            text = code.replace("\r\n", "\n").strip("\n") + "\n"  # already scrubbed with its example
            if self._is_duplicate(f"chatml:{example_id}", text, None):
                self.stats.answer_blocks_duplicate += 1
                continue
            self.stats.answer_blocks_written += 1
            if fits or len(text.encode("utf-8")) <= self.chunk_tokens:  # a token is at least one byte
                pieces.append((text, None))
            else:
                pieces.extend(self._chunks(text))
        for i, (piece, n_tokens) in enumerate(pieces):
            self._write(piece, n_tokens, f"chatml:{example_id}", i, len(pieces))

    def _prepare(self, text: str) -> str:
        if self.scrub:
            text, found = scrub_text(text)
            self.stats.scrubbed.update(found)
        return text

    def _is_duplicate(self, source: str, text: str, file: Path | None) -> bool:
        """True for a text seen before (exactly, or nearly when asked); remembers new texts."""
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if key in self.seen:
            if file is not None:
                self._reject(
                    file, DUPLICATE_FILE, f"same text as {self.seen[key]}", duplicate_of=self.seen[key]
                )
            return True
        sig = None
        if self.near is not None:
            sig = minhash(word_shingles(text))
            hits = self.near.matches(sig)
            if hits:
                score, first = hits[0]
                if file is not None:
                    self._reject(
                        file, NEAR_DUPLICATE_FILE, f"{score:.0%} similar to {first}", duplicate_of=first
                    )
                return True
            self.near.add(source, sig)
        self.seen[key] = source
        return False

    def _chunks(self, text: str) -> list[tuple[str, int]]:
        chunks, oversized = chunk_text(text, self.chunk_tokens, self.tokens)
        self.stats.oversized_chunks += oversized
        return chunks

    def _write(self, text: str, n: int | None, source: str, chunk: int, n_chunks: int) -> None:
        self.out.write(
            json.dumps(
                {"text": text, "source": source, "chunk": chunk, "n_chunks": n_chunks}, ensure_ascii=False
            )
            + "\n"
        )
        self.stats.chunks += 1
        self.stats.characters += len(text)
        if n is None:  # counted later, many at a time (the tokenizer is much faster on batches)
            self._uncounted.append(text)
            if len(self._uncounted) >= 256:
                self._count_pending()
        else:
            self._counted(n)

    def finish(self) -> CptStats:
        """Count what is still uncounted; call once after the last text."""
        self._count_pending()
        return self.stats

    def _count_pending(self) -> None:
        for n in self.tokens.count(self._uncounted):
            self._counted(n)
        self._uncounted.clear()

    def _counted(self, n: int) -> None:
        self.stats.tokens += n
        self.stats.chunk_tokens.append(n)

    def _reject(self, path: Path, reason: str, detail: str, duplicate_of: str | None = None) -> None:
        extra = {"duplicate_of": duplicate_of} if duplicate_of else {}
        self.rejections.append(Rejection(str(path), None, reason, detail, extra=extra))
