"""The one HTML page builder behind every report (data audit, evaluation, comparison).

A report is one self-contained file: styles inline, plots embedded as PNG data URIs, so it opens
from disk, offline, mailed as an attachment, with nothing else next to it. Every piece of text
that comes from data or from a model goes through `esc`: a training file or an answer can hold
`<script>` as easily as BBj code.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0} th,td{border:1px solid #ddd;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,Menlo,Consolas,monospace}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.6em;overflow:auto;max-height:22em;white-space:pre-wrap;
word-break:break-all;margin:.3em 0}
.muted{color:#777} .neg{color:#b00020;font-weight:600} .pos{color:#1b7f1b} .bad{background:#fde2e1} .good{background:#e3f6e3}
.badge{display:inline-block;padding:.35em .9em;border-radius:4px;font-weight:700;color:#fff}
.pass{background:#1b7f1b} .fail{background:#b00020} .na{background:#888}
details{margin:.5em 0} summary{cursor:pointer} .pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
img{max-width:100%} .plots{display:flex;flex-wrap:wrap;gap:1em} .plots img{width:520px}
"""


def esc(value: Any) -> str:
    """Escape anything for HTML (quotes too: values also land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def clip(text: str | None, limit: int = 2500) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, body: str, *, written_by: str) -> str:
    """A whole page: head, styles, the body, and a footer saying which command wrote it and when."""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body>{body}<p class='muted'>Written by {esc(written_by)}, {now()}.</p>"
        "</body></html>\n"
    )


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] | None = None
) -> str:
    """Headers are escaped here; cells come ready-made from `td`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{row_classes[i]}'" if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def td(value: Any, num: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    return f"<td class='{classes}'>{value}</td>" if classes else f"<td>{value}</td>"


def figure(width: float = 6.4, height: float = 3.4):
    """(pyplot, (figure, axes)) drawing off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height))


def img(fig: Any, alt: str = "plot") -> str:
    """The figure as an embedded PNG <img>; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='{esc(alt)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}'>"
