"""Mutation suite: break valid real BBj in ways that are certainly invalid; the checker must notice.

Mutants are generated from the real programs in ../shared/bbj-corpus that the checker accepts.
Every mutation class is one that bbjcpl rejects by construction (an unbalanced parenthesis, a
METHOD left without METHODEND, FOR without TO, ...). The suite is deterministic (fixed seed).

Run `python tests/test_bbj_mutations.py` to print the detection rate per class.
"""

from __future__ import annotations

import random
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from bbjtune.bbj.checker import check_source, decode_source
from bbjtune.bbj.lexer import token_starts, tokenize

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bbj-corpus"
SEED = 20240611
PER_CLASS = 90  # mutants per class (fewer when the corpus has fewer sites)
OPTION_NAMES = {"ERR", "KEY", "DOM", "END", "MODE", "TIM", "IND", "SIZ", "ISZ", "KNUM", "DIR"}
OPTION_VERBS = {
    "OPEN",
    "READ",
    "WRITE",
    "PRINT",
    "INPUT",
    "EXTRACT",
    "FIND",
    "CLOSE",
    "REMOVE",
    "CALL",
    "RUN",
    "LOCK",
    "UNLOCK",
    "SQLOPEN",
    "SQLPREP",
    "SQLEXEC",
    "ENTER",
    "EXECUTE",
    "ERASE",
}
ARG_VERBS = {
    "PRINT",
    "GOTO",
    "GOSUB",
    "DECLARE",
    "USE",
    "THROW",
    "CALL",
    "RELEASE",
    "SWITCH",
    "FIELD",
    "WHILE",
    "METHODRET",
    "DIM",
    "EXITTO",
    "SETERR",
}


@dataclass(frozen=True)
class Mutant:
    kind: str
    source: str  # corpus-relative path of the original file
    line: int  # 1-based line that was changed
    text: str


def corpus_files() -> list[Path]:
    files = sorted((CORPUS / "real").glob("*/*")) + sorted(
        (CORPUS / "language-server" / "examples").glob("*.bbj")
    )
    return [f for f in files if f.suffix.lower() in (".bbj", ".bbjt", ".src")]


def _is_code(line: str) -> bool:
    s = line.strip().lower()
    return bool(s) and not (s.startswith("rem") and (len(s) == 3 or not (s[3].isalnum() or s[3] in "_$%!")))


def _tokens(line: str):
    kinds, texts = tokenize(line)
    return list(zip(kinds, texts, token_starts(line)))


def _sites(lines: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Every place each mutation can be applied: kind -> [(line index, mutated line or marker)]."""
    sites: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for n, line in enumerate(lines):
        if (
            not _is_code(line)
            or line.startswith(":")
            or (n + 1 < len(lines) and lines[n + 1].startswith(":"))
        ):
            continue
        s = line.strip().lower()
        toks = _tokens(line)
        words = [t[1].upper() if t[0] == "id" else t[0] for t in toks]
        if s == "methodend":
            sites["delete-methodend"].append((n, ""))
        if s == "classend":
            sites["delete-classend"].append((n, ""))
        sites["stray-methodend"].append(
            (n, line + "\n" + " " * (len(line) - len(line.lstrip())) + "methodend")
        )
        for k, (kind, text, start) in enumerate(toks):
            if kind == ")":
                sites["unbalance-paren"].append((n, line[:start] + line[start + 1 :]))
            elif kind == "(" and k % 3 == 0:
                sites["unbalance-paren"].append((n, line[:start] + "(" + line[start:]))
            elif kind == "str":
                cut = start if k % 2 else start + len(text) - 1
                sites["unbalance-quote"].append((n, line[:cut] + line[cut + 1 :]))
            elif kind == "," and toks[k + 1][0] == "id" and toks[k + 2][0] == "=":
                # NAME=value option of an I/O or program verb: drop '=' or drop the value
                if words and words[0] in OPTION_VERBS and toks[k + 1][1].upper() in OPTION_NAMES:
                    eq = toks[k + 2][2]
                    if toks[k + 3][0] in ("*", "eol", ",", ")", ";") or k % 2:
                        value = toks[k + 4] if toks[k + 3][0] == "*" else toks[k + 3]  # *NEXT: two tokens
                        end = value[2] + len(value[1])
                        if toks[k + 3][0] in ("id", "num", "str", "*"):
                            sites["break-option-list"].append((n, line[: eq + 1] + line[end:]))
                    else:
                        sites["break-option-list"].append((n, line[:eq] + " " + line[eq + 1 :]))
            elif (
                kind == ","
                and k > 0
                and toks[k - 1][0] in ("id", "num", "str")
                and toks[k + 1][0] in ("id", "num", "str")
            ):
                if any(t[0] == "(" for t in toks[:k]) and words[0] not in ("CLASS", "METHOD", "INTERFACE"):
                    # inside a call's argument list: f(a, b) -> f(a b)
                    depth = sum(1 for t in toks[:k] if t[0] == "(") - sum(1 for t in toks[:k] if t[0] == ")")
                    if depth > 0:
                        sites["missing-comma"].append((n, line[:start] + " " + line[start + 1 :]))
        if words and words[0] == "FOR":
            to = next((t for t in toks if t[0] == "id" and t[1].upper() == "TO"), None)
            if to is not None:
                sites["drop-to"].append((n, line[: to[2]] + line[to[2] + 2 :]))
        # a simple assignment `name = value` at the start of the line: put a call on the left
        if len(toks) > 3 and toks[0][0] == "id" and toks[1][0] == "=" and words[0] not in ("FOR",):
            start, name = toks[0][2], toks[0][1]
            rest = line[toks[1][2] :]
            if name[-1] in "$%!":
                sites["call-on-left"].append((n, line[:start] + name + ".toString() " + rest))
            else:
                sites["call-on-left"].append((n, line[:start] + f"ctrl(sysgui,105,{name}) " + rest))
        # a verb with an argument, misspelled by swapping two letters: PRINT x -> PIRNT x
        if (
            len(toks) > 2
            and toks[0][0] == "id"
            and words[0] in ARG_VERBS
            and toks[1][0] not in ("(", "=", ".", "[")
        ):
            verb = toks[0][1]
            if verb[1] != verb[2]:
                typo = verb[0] + verb[2] + verb[1] + verb[3:]
                sites["misspelled-verb"].append(
                    (n, line[: toks[0][2]] + typo + line[toks[0][2] + len(verb) :])
                )
    return sites


def generate_mutants(per_class: int = PER_CLASS, seed: int = SEED) -> list[Mutant]:
    """Mutants from every corpus file the checker accepts, `per_class` of each class at most."""
    rng = random.Random(seed)
    pool: dict[str, list[tuple[str, list[str], int, str]]] = defaultdict(list)
    for path in corpus_files():
        text = decode_source(path.read_bytes())
        if any(d.severity == "error" for d in check_source(text)):
            continue  # only valid programs are mutated
        lines = re.split(r"\r\n|\r|\n", text)
        rel = str(path.relative_to(CORPUS))
        for kind, found in _sites(lines).items():
            for n, new in found:
                pool[kind].append((rel, lines, n, new))
    mutants = []
    for kind in sorted(pool):
        chosen = rng.sample(pool[kind], min(per_class, len(pool[kind])))
        for rel, lines, n, new in chosen:
            changed = lines[:n] + ([new] if new else []) + lines[n + 1 :]
            mutants.append(Mutant(kind, rel, n + 1, "\n".join(changed)))
    return mutants


def detection_report(mutants: list[Mutant]) -> dict[str, tuple[int, int, list[Mutant]]]:
    """kind -> (flagged, total, missed mutants)."""
    out: dict[str, list] = defaultdict(lambda: [0, 0, []])
    for m in mutants:
        flagged = any(d.severity == "error" for d in check_source(m.text))
        row = out[m.kind]
        row[0] += flagged
        row[1] += 1
        if not flagged:
            row[2].append(m)
    return {k: (v[0], v[1], v[2]) for k, v in sorted(out.items())}


def format_report(report) -> str:
    lines = [f"{'class':20s} {'flagged':>8s} {'total':>6s} {'rate':>7s}"]
    flagged = total = 0
    for kind, (f, t, _) in report.items():
        lines.append(f"{kind:20s} {f:8d} {t:6d} {f / t:7.1%}")
        flagged += f
        total += t
    lines.append(f"{'all':20s} {flagged:8d} {total:6d} {flagged / max(total, 1):7.1%}")
    return "\n".join(lines)


needs_corpus = pytest.mark.skipif(
    not (CORPUS / "real").is_dir(), reason="../shared/bbj-corpus is not present"
)


@needs_corpus
def test_mutation_suite_is_flagged_per_class():
    mutants = generate_mutants()
    report = detection_report(mutants)
    table = format_report(report)
    print("\n" + table)
    flagged = sum(f for f, _, _ in report.values())
    assert len(mutants) >= 500, table
    assert flagged / len(mutants) >= 0.95, table
    for kind, (f, t, missed) in report.items():
        assert t >= 20, f"too few {kind} mutants\n{table}"
        assert f / t >= 0.85, f"{kind}: missed e.g. {missed[0].source}:{missed[0].line}\n{table}"


@needs_corpus
def test_mutants_really_change_the_source():
    for m in generate_mutants(per_class=5):
        original = decode_source((CORPUS / m.source).read_bytes())
        assert m.text != "\n".join(re.split(r"\r\n|\r|\n", original)), m


if __name__ == "__main__":
    result = detection_report(generate_mutants())
    print(format_report(result))
    if "-v" in sys.argv:
        for kind, (_, _, missed) in result.items():
            for m in missed:
                print(f"missed {kind}: {m.source}:{m.line}: {m.text.splitlines()[m.line - 1].strip()[:100]}")
