"""report.html: the audit as one self-contained page (plots embedded as PNG, no external files).

Every piece of text that comes from the data (prompts, file names, lines, diagnostics) is
HTML-escaped: a training file can hold `<script>` as easily as BBj code.
"""

from __future__ import annotations

from typing import Any

from bbjtune.data.audit import flagged_summary
from bbjtune.html_report import clip, figure, img, page
from bbjtune.html_report import esc as e


def write_report(audit: dict[str, Any], title: str) -> str:
    parts = [f"<h1>{e(title)}</h1><p class='muted'>token counts: {e(audit['tokenizer'])}</p>"]
    parts.append(_summary(audit))
    parts.append(_steps(audit))
    parts.append(_plots(audit))
    parts.append(_system(audit))
    parts.append(_quality(audit))
    parts.append(_balance(audit))
    if "split" in audit:
        parts.append(_split(audit))
    if "cpt" in audit:
        parts.append(_cpt(audit))
    if "replay" in audit:
        parts.append(_replay(audit))
    parts.append(_findings(audit))
    return page(f"{title} — bbjtune", "\n".join(parts), written_by="bbjtune data")


# ----------------------------------------------------------------------------- sections


def _summary(a: dict[str, Any]) -> str:
    rows = [
        ("lines read", a["lines"]),
        ("usable conversations", a["examples"]),
        ("set aside (rejected.jsonl)", a["rejected"]["total"]),
    ]
    if "split" in a:
        rows += [("train.jsonl", a["split"]["train"]), ("heldout.jsonl", a["split"]["heldout"])]
    if "cpt" in a:
        rows += [("cpt.jsonl chunks", a["cpt"]["chunks"]), ("cpt.jsonl tokens", a["cpt"]["tokens"])]
    if "replay" in a:
        rows += [("replay.jsonl (general conversations for stage 2)", a["replay"]["kept"])]
    if "selftrain_prompts" in a:
        fresh = a["selftrain_prompts"]
        left_out = ", ".join(f"{n} {reason}" for reason, n in fresh["skipped"].items())
        rows += [
            (
                f"selftrain-prompts.jsonl (derived from the sources, not trained on; "
                f"of {fresh['derived']}{'; left out: ' + left_out if left_out else ''})",
                fresh["kept"],
            )
        ]
    body = "".join(f"<tr><th>{e(k)}</th><td class='num'>{e(v)}</td></tr>" for k, v in rows)
    reasons = "".join(
        f"<tr><td><code>{e(r)}</code></td><td class='num'>{e(n)}</td></tr>"
        for r, n in a["rejected"]["by_reason"].items()
    )
    out = f"<h2>Summary</h2><table>{body}</table>"
    if reasons:
        out += f"<h3>Set aside, by reason</h3><table><tr><th>reason</th><th>count</th></tr>{reasons}</table>"
    return out


def _steps(a: dict[str, Any]) -> str:
    rows = []
    for s in a["steps"]:
        removed = ", ".join(f"{k} {v}" for k, v in s["removed"].items()) or "—"
        rows.append(
            f"<tr><td>{e(s['step'])}</td><td class='num'>{e(s['in'])}</td><td>{e(removed)}</td>"
            f"<td class='num'>{e(s['out'])}</td><td class='muted'>{e(s.get('note', ''))}</td></tr>"
        )
    return (
        "<h2>Steps</h2><table><tr><th>step</th><th>in</th><th>removed</th><th>out</th><th>note</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _plots(a: dict[str, Any]) -> str:
    images = []
    tokens = a["tokens"]
    if tokens.get("count"):
        images.append(
            _histogram(
                tokens,
                f"tokens per conversation (limit {a['max_length']}: {tokens['over_limit']} over)",
                limit=a["max_length"],
            )
        )
    if a["answer_chars"].get("count"):
        images.append(_histogram(a["answer_chars"], "characters per answer"))
    for key in ("category", "generation"):
        counts = a["balance"][key]
        if len(counts) > 1 or "(none)" not in counts:
            images.append(_bars(counts, f"examples per {key}"))
    if a["rejected"]["by_reason"]:
        images.append(_bars(a["rejected"]["by_reason"], "set aside, by reason"))
    if not images:
        return ""
    return "<h2>Plots</h2><div class='plots'>" + "".join(images) + "</div>"


def _system(a: dict[str, Any]) -> str:
    s = a["system_prompts"]
    rows = "".join(
        f"<tr><td class='num'>{e(p['count'])}</td><td><pre>{e(clip(p['text']))}</pre></td></tr>"
        for p in s["most_common"]
    )
    return (
        f"<h2>System prompt</h2><p>{e(s['distinct'])} distinct system prompt(s); {e(s['missing'])} "
        f"conversation(s) without one ({e(s['added'])} given the chosen prompt); {e(s['different'])} use "
        f"a different one than the chosen prompt.</p>"
        f"<table><tr><th>count</th><th>text</th></tr>{rows}</table>"
    )


def _quality(a: dict[str, Any]) -> str:
    ans, dup, code, scrub, tok = a["answers"], a["duplicates"], a["code"], a["scrubbed"], a["tokens"]
    rows = [
        (
            "token length (median / p95 / max)",
            f"{tok.get('median', 0):.0f} / {tok.get('p95', 0):.0f} / {tok.get('max', 0)}",
        ),
        (f"over the {a['max_length']}-token limit", tok.get("over_limit", 0)),
        ("answers of ≤ the minimum length (fragments)", ans["too_short"]),
        ("answers that look cut off", ans["truncated"]),
        ("literal \\n escapes (found / fixed)", f"{ans['escapes_found']} / {ans['escapes_fixed']}"),
        ("exact duplicate conversations", dup["exact_examples"]),
        ("repeated prompts", dup["repeated_prompts"]),
        ("repeated answers (other prompts)", dup["repeated_answers"]),
        (f"near duplicates (≥ {dup['near_duplicate_threshold']:.0%} similar)", dup["near_duplicates"]),
        ("answers with BBj code", code["examples_with_code"]),
        ("BBj blocks (checked / failing the checker)", f"{code['blocks']} / {code['blocks_failed']}"),
        ("answers whose BBj fails the checker", code["examples_failed"]),
        (
            "answers whose BBj passes it but breaks a tier 2 check",
            code.get("examples_flagged", 0) if code.get("quality_check", "off") != "off" else "not checked",
        ),
        ("answers with bare code (no ``` fence)", code["unfenced_code"]),
        ("conversations scrubbed of secrets/PII", scrub["examples"]),
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td class='num'>{e(v)}</td></tr>" for k, v in rows)
    kinds = ", ".join(f"{k}: {v}" for k, v in scrub["by_kind"].items()) or "none"
    out = f"<h2>Quality</h2><table>{body}</table><p>Scrubbed values by kind: {e(kinds)}.</p>"
    if code["failures"]:
        out += "<h3>BBj that fails the checker (first examples)</h3><table><tr><th>where</th><th>problem</th></tr>"
        out += "".join(
            f"<tr><td>{e(f['where'])} block {e(f['block'])}</td><td>line {e(f['line'])}: "
            f"<code>{e(f['message'])}</code></td></tr>"
            for f in code["failures"]
        )
        out += "</table>"
    if code.get("flags"):
        rules, fate = flagged_summary(code)
        out += (
            f"<h3>Tier 2 findings in answers that pass the checker (first examples)</h3><p>By rule: {e(rules)}. "
            f"These answers are {e(fate)}: a model trained on an invented method or a jump to a missing "
            "label learns to write them.</p><table><tr><th>where</th><th>finding</th></tr>"
        )
        out += "".join(
            f"<tr><td>{e(f['where'])}</td><td><code>{e(f['finding'])}</code></td></tr>" for f in code["flags"]
        )
        out += "</table>"
    return out


def _balance(a: dict[str, Any]) -> str:
    out = ["<h2>Balance</h2>"]
    for key, counts in a["balance"].items():
        cells = "".join(f"<tr><td>{e(k)}</td><td class='num'>{e(v)}</td></tr>" for k, v in counts.items())
        out.append(
            f"<table style='display:inline-table;margin-right:1rem'><tr><th>{e(key)}</th><th>examples</th>"
            f"</tr>{cells}</table>"
        )
    return "".join(out)


def _split(a: dict[str, Any]) -> str:
    s, dc = a["split"], a["decontamination"]
    rows = "".join(
        f"<tr><td>{e(c)}</td><td class='num'>{e(v['train'])}</td><td class='num'>{e(v['heldout'])}</td></tr>"
        for c, v in sorted(s["by_category"].items())
    )
    straddle = s["prompts_on_both_sides"]
    removed = ", ".join(f"{k} {v}" for k, v in dc["removed"].items()) or "none"
    return (
        f"<h2>Split and decontamination</h2><p>Held-out ratio {e(s['ratio'])}, seed {e(s['seed'])}; "
        f"prompts on both sides: <b class='{'neg' if straddle else 'pos'}'>{e(straddle)}</b>. Training prompts "
        f"checked against {e(dc['eval_prompts'])} evaluation prompts and the held-out prompts "
        f"({e(dc['ngram'])}-word sequences, threshold {e(dc['threshold'])}); removed: {e(removed)}.</p>"
        f"<table><tr><th>category</th><th>train</th><th>held-out</th></tr>{rows}</table>"
    )


def _replay(a: dict[str, Any]) -> str:
    r = a["replay"]
    removed = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "—"
    scrubbed = ", ".join(f"{k} {v}" for k, v in r["scrubbed"].items()) or "—"
    rows = [
        ("kept", r["kept"]),
        ("set aside", removed),
        ("literal \\n escapes repaired", r["escapes_fixed"]),
        ("secrets scrubbed", scrubbed),
        ("checked against evaluation prompts (HumanEval, BBj suites)", r["checked_against_prompts"]),
    ]
    if sd := r.get("self_distilled"):
        rows.insert(
            0,
            (
                "made by data.self_replay",
                f"{sd['model']} answered {sd['prompts_asked']} of {sd['prompts']} prompts "
                f"({sd['samples']} samples each): {sd['answers']} answers, {sd['cut_off']} cut off; "
                f"{sd['kept']} kept",
            ),
        )
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return (
        f"<h2>Replay (replay.jsonl)</h2><p>General coding conversations that stage 2 mixes in "
        f"(train.sft.replay_ratio) so the model keeps its general skills.</p><table>{body}</table>"
    )


def _cpt(a: dict[str, Any]) -> str:
    c = a["cpt"]
    enc = ", ".join(f"{k} {v}" for k, v in c["encodings"].items()) or "—"
    rows = [
        ("source files read / written", f"{c['files']} / {c['files_written']}"),
        ("encodings", enc),
        ("chunks (limit per chunk)", f"{c['chunks']} ({c['chunk_token_limit']} tokens)"),
        ("chunks over the limit (one very long line)", c["oversized_chunks"]),
        ("tokens / characters", f"{c['tokens']} / {c['characters']}"),
        (
            "answer code blocks (used / duplicate / failing the checker)",
            f"{c['answer_blocks_written']} / {c['answer_blocks_duplicate']} / {c['answer_blocks_failing_check']}",
        ),
        ("files matched but not BBj sources (skipped)", len(c["skipped_files"])),
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f"<h2>Stage 1 corpus (cpt.jsonl)</h2><table>{body}</table>"


def _findings(a: dict[str, Any]) -> str:
    if not a["findings"]:
        return "<h2>Findings</h2><p class='pos'>Nothing was set aside.</p>"
    out = ["<h2>Findings (first examples per reason)</h2>"]
    for reason, items in a["findings"].items():
        out.append(f"<h3><code>{e(reason)}</code></h3><table><tr><th>where</th><th>why</th></tr>")
        for item in items:
            raw = f"<pre>{e(item['raw'])}</pre>" if item.get("raw") else ""
            out.append(f"<tr><td>{e(item['where'])}</td><td>{e(item['detail'])}{raw}</td></tr>")
        out.append("</table>")
    return "".join(out)


# ----------------------------------------------------------------------------- plots


def _histogram(dist: dict[str, Any], title: str, limit: int | None = None) -> str:
    _, (fig, ax) = figure()
    edges, counts = dist["histogram"]["edges"], dist["histogram"]["counts"]
    ax.stairs(counts, edges, fill=True, color="#4878a8")
    if limit is not None and limit <= edges[-1] * 1.5:
        ax.axvline(limit, color="#b00", linestyle="--", label=f"limit {limit}")
        ax.legend()
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("examples")
    return img(fig, title)


def _bars(counts: dict[str, int], title: str) -> str:
    _, (fig, ax) = figure()
    labels = [str(k)[:24].replace("$", r"\$") for k in counts][:20]  # '$' would start mathtext
    ax.barh(labels[::-1], list(counts.values())[:20][::-1], color="#4878a8")
    ax.set_title(title, fontsize=10)
    return img(fig, title)
