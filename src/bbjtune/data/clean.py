"""Repairs, filters and duplicate detection for instruction examples.

Everything here works on one text or on small per-example summaries (`ExampleInfo`), never on the
whole data set in memory, so the data stage can stream files of any size.

- Repairs change an example and are counted: literal `\\n` escapes turned back into line breaks.
- Filters reject an example with a reason: answers of at most `min_answer_chars` characters,
  answers that look cut off, answers whose BBj does not pass the checker or its tier 2 checks (when
  configured), and conversations longer than the token limit.
- Duplicates: exact copies of an example, repeated prompts (the first one is kept unless
  `duplicate_prompts: keep-all`), and near copies found with MinHash/LSH (datasketch).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Reasons the filters and the deduplication give (chatml.py has the schema reasons).
TOO_SHORT = "too-short"
TRUNCATED = "truncated"
CODE_ERROR = "code-error"
CODE_QUALITY = "code-quality"
TOO_LONG = "too-long"
DUPLICATE = "duplicate"
DUPLICATE_PROMPT = "duplicate-prompt"
NEAR_DUPLICATE = "near-duplicate"
FILTER_REASONS = (TOO_SHORT, TRUNCATED, CODE_ERROR, CODE_QUALITY, TOO_LONG)
DEDUPE_REASONS = (DUPLICATE, DUPLICATE_PROMPT, NEAR_DUPLICATE)

NUM_PERM = 128  # MinHash permutations: 512 bytes per example; Jaccard estimates within ~±0.03 near 0.9
MINHASH_SCHEME = "affine32"  # datasketch >= 2.0: 32-bit hash values, fixed so signatures are comparable


@dataclass(slots=True)
class ExampleInfo:
    """What the decisions need to know about one example; its text stays on disk (the spool)."""

    index: int  # position in the spool (valid examples, in input order)
    file: str
    line: int
    offset: int
    prompt_key: bytes  # hash of the normalised prompt
    answer_key: bytes  # hash of the normalised answer
    example_key: bytes  # hash of the normalised prompt + answer (the system prompt aside)
    system_key: bytes | None  # hash of the system prompt (None: no system message)
    answer_chars: int
    category: str | None = None
    generation: str | None = None
    task: str | None = None
    n_tokens: int = 0
    truncated: str | None = None  # why the answer looks cut off
    code_blocks: int = 0
    bare_code: bool = False  # the answer is BBj code without a ``` fence
    code_error: str | None = None  # first checker error in the answer's BBj, if any
    code_failure: tuple[int, int, str] | None = None  # (block, line, message) of that error
    failing_blocks: tuple[int, ...] = ()  # positions of the answer's BBj blocks that fail the checker
    quality_error: str | None = None  # first tier 2 error in the answer's (checker-clean) BBj, if any
    quality_rules: tuple[str, ...] = ()  # the tier 2 rules its blocks break, one each
    escapes_found: bool = False
    escapes_fixed: bool = False
    scrubbed: dict[str, int] = field(default_factory=dict)
    example_sig: np.ndarray | None = None  # MinHash of the whole example (near duplicates)
    prompt_sig: np.ndarray | None = None  # MinHash of the prompt (grouping for the split)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


# ----------------------------------------------------------------------------- repairs

_LITERAL_ESCAPES = (("\\r\\n", "\n"), ("\\n", "\n"), ("\\t", "\t"), ('\\"', '"'))


def has_literal_escapes(text: str) -> bool:
    """True when the text carries `\\n` written out as two characters instead of line breaks.

    That happens when JSON is escaped twice on its way into a data set. One `\\n` in a text
    without any real line break, or more literal than real ones, is taken as that artefact.
    """
    literal = text.count("\\n")
    if not literal:
        return False
    real = text.count("\n")
    return real == 0 or (literal >= 2 and literal > real)


def fix_literal_escapes(text: str) -> str:
    for old, new in _LITERAL_ESCAPES:
        text = text.replace(old, new)
    return text


# ----------------------------------------------------------------------------- filters

_FENCE_RE = re.compile(r"^[ \t]*```", re.MULTILINE)
_PROSE_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z'’-]*[,;]?$")
_DANGLING_END = tuple(",;([{=+-*/&|<")


def truncation_reason(answer: str) -> str | None:
    """Why an answer looks cut off, or None. A heuristic, tuned to be quiet on complete answers:

    - a ``` code block that is opened and never closed, or a fence cut to one or two backticks;
    - the answer ends in '...' or on a character that needs a continuation (`,` `(` `=` ...)
      outside a code block;
    - the last line is a sentence (at least four plain words) without its final punctuation.
    """
    text = answer.rstrip()
    fences = _FENCE_RE.findall(text)
    if len(fences) % 2 == 1:
        return "a ``` code block is opened and never closed"
    tail = text.rsplit("```", 1)[-1] if fences else text
    last_line = tail.strip().rsplit("\n", 1)[-1].strip()
    if not last_line:
        return None
    if last_line.endswith(("...", "…")):
        return "ends with '...'"
    if last_line in ("`", "``"):
        return "ends in a partial ``` fence"
    words = last_line.split()
    looks_like_prose = len(words) >= 4 and sum(bool(_PROSE_WORD_RE.match(w)) for w in words) >= 0.8 * len(
        words
    )
    if looks_like_prose and (last_line[-1].isalnum() or last_line.endswith(_DANGLING_END)):
        return f"ends mid-sentence: '…{last_line[-40:]}'"
    return None


# ----------------------------------------------------------------------------- hashing

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_ROLL_MULTIPLIER = np.uint64(1_000_003)
_MASK32 = np.uint64(0xFFFFFFFF)


def normalise(text: str) -> str:
    """Case and spacing do not make two texts different."""
    return " ".join(text.casefold().split())


def text_key(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=12).digest()


def shingle_hashes(hashes: np.ndarray, size: int) -> np.ndarray:
    """32-bit hashes of every run of `size` consecutive items (one run when there are fewer items),
    from per-item hashes; a polynomial rolling hash, computed with numpy."""
    if len(hashes) == 0:
        return np.zeros(1, dtype=np.uint64)
    size = min(size, len(hashes))
    n = len(hashes) - size + 1
    out = np.zeros(n, dtype=np.uint64)
    for k in range(size):
        out = (out * _ROLL_MULTIPLIER + hashes[k : k + n]) & _MASK32
    return np.unique(out)


def word_shingles(text: str, size: int = 5) -> np.ndarray:
    """Hashes of the text's runs of `size` words (punctuation marks count as words), case-folded."""
    words = _WORD_RE.findall(text.casefold())
    hashes = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    return shingle_hashes(hashes, size)


def char_shingles(text: str, size: int = 5) -> np.ndarray:
    """Hashes of the normalised text's runs of `size` characters."""
    codepoints = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return shingle_hashes(codepoints, size)


_PERMUTATIONS = None


def minhash(shingles: np.ndarray) -> np.ndarray:
    """A MinHash signature (datasketch, fixed seed) of shingle hashes, as NUM_PERM uint32 values.
    The permutations are drawn once and reused."""
    global _PERMUTATIONS
    from datasketch import MinHash

    if _PERMUTATIONS is None:
        _PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=1, scheme=MINHASH_SCHEME).permutations
    m = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=int, permutations=_PERMUTATIONS, scheme=MINHASH_SCHEME)
    m.update_batch(shingles.tolist())
    return m.hashvalues.astype(np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


class SimilarityIndex:
    """MinHash LSH: which added items are at least `threshold` similar to a signature.

    Banding as in datasketch's MinHashLSH (whose choice of bands and rows for the threshold is used),
    stored compactly: one dict per band from the band's hash to the slot(s) in that bucket, ~100
    bytes per band and item instead of ~400. Candidates are confirmed with the signatures' Jaccard
    estimate. Signatures are referenced, not copied.
    """

    def __init__(self, threshold: float):
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.threshold = threshold
        self.bands, self.rows = lsh.b, lsh.r
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._keys: list[Any] = []
        self._sigs: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._keys)

    def _band_hashes(self, sig: np.ndarray) -> list[int]:
        # Python's hash of bytes: consistent within the process, which is all the index needs
        return [hash(row.tobytes()) for row in sig[: self.bands * self.rows].reshape(self.bands, self.rows)]

    def matches(self, sig: np.ndarray) -> list[tuple[float, Any]]:
        """(estimated Jaccard, key) of the added items at least `threshold` similar, best (then earliest) first."""
        slots: set[int] = set()
        for bucket, h in zip(self._buckets, self._band_hashes(sig)):
            hit = bucket.get(h)
            if hit is not None:
                slots.update((hit,) if isinstance(hit, int) else hit)
        scored = sorted((-jaccard(sig, self._sigs[s]), s) for s in slots)
        return [(-neg, self._keys[s]) for neg, s in scored if -neg >= self.threshold]

    def add(self, key: Any, sig: np.ndarray) -> None:
        slot = len(self._keys)
        self._keys.append(key)
        self._sigs.append(sig)
        for bucket, h in zip(self._buckets, self._band_hashes(sig)):
            hit = bucket.get(h)
            if hit is None:
                bucket[h] = slot
            elif isinstance(hit, int):
                bucket[h] = [hit, slot]
            else:
                hit.append(slot)


# ----------------------------------------------------------------------------- decisions


@dataclass
class Decision:
    """Why one example is left out (`index` is its spool position)."""

    index: int
    reason: str
    detail: str
    duplicate_of: str | None = None


def filter_and_dedupe(
    infos: list[ExampleInfo],
    *,
    min_answer_chars: int,
    drop_truncated: bool,
    code_check: str,
    max_length: int,
    quality_check: str = "off",
    drop_too_long: bool,
    duplicate_prompts: str,
    near_duplicate_threshold: float,
) -> list[Decision]:
    """Decide which examples to leave out; the first applicable reason wins, in pipeline order:
    too short, truncated, code error, tier 2 finding, too long, duplicate, duplicate prompt, near
    duplicate.
    The first of each duplicate set is kept (files and lines are read in the given order)."""
    out: list[Decision] = []
    seen_examples: dict[bytes, ExampleInfo] = {}
    seen_prompts: dict[bytes, ExampleInfo] = {}
    near = SimilarityIndex(near_duplicate_threshold)
    for info in infos:
        if info.answer_chars <= min_answer_chars:  # a fragment, not an answer
            out.append(
                Decision(
                    info.index,
                    TOO_SHORT,
                    f"the answer has {info.answer_chars} characters (the minimum is {min_answer_chars + 1})",
                )
            )
        elif drop_truncated and info.truncated:
            out.append(Decision(info.index, TRUNCATED, f"the answer looks cut off: {info.truncated}"))
        elif code_check == "reject" and info.code_error:
            out.append(Decision(info.index, CODE_ERROR, info.code_error))
        elif quality_check == "reject" and info.quality_error:
            out.append(Decision(info.index, CODE_QUALITY, info.quality_error))
        elif drop_too_long and info.n_tokens > max_length:
            out.append(
                Decision(
                    info.index,
                    TOO_LONG,
                    f"{info.n_tokens} tokens; training truncates at {max_length}, "
                    "cutting off the end of the answer",
                )
            )
        elif info.example_key in seen_examples:
            first = seen_examples[info.example_key]
            out.append(Decision(info.index, DUPLICATE, f"same conversation as {first.where}", first.where))
        elif duplicate_prompts == "keep-first" and info.prompt_key in seen_prompts:
            first = seen_prompts[info.prompt_key]
            out.append(
                Decision(
                    info.index,
                    DUPLICATE_PROMPT,
                    f"same prompt as {first.where} (a different answer; the first is kept)",
                    first.where,
                )
            )
        else:
            hits = near.matches(info.example_sig) if info.example_sig is not None else []
            if hits:
                score, first = hits[0]
                out.append(
                    Decision(
                        info.index,
                        NEAR_DUPLICATE,
                        f"{score:.0%} similar to {first} (threshold {near_duplicate_threshold:.0%})",
                        first,
                    )
                )
                continue
            seen_examples[info.example_key] = info
            seen_prompts.setdefault(info.prompt_key, info)
            if info.example_sig is not None:
                near.add(info.where, info.example_sig)
    return out
