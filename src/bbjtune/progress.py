"""The progress bar every long step shows (data scan, training, generation, scoring, GGUF writing).

One look everywhere: what is being done, a bar, done/total (or a percentage), the elapsed time,
and on request the time left and a status text (training's losses). Bars go to stderr, so the
results a command prints stay clean on stdout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def new_progress(
    console: Console | None = None,
    *,
    unit: str = "",
    eta: bool = False,
    status: bool = False,
    transient: bool = True,
) -> Progress:
    """A rich Progress with bbjtune's columns; tasks added to it may carry a `status` field."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("eta"), TimeRemainingColumn()]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=console or Console(stderr=True), transient=transient)


@contextlib.contextmanager
def progress_bar(
    label: str,
    total: int | None,
    console: Console | None = None,
    *,
    transient: bool = True,
    eta: bool = False,
) -> Iterator[Callable[[int], None]]:
    """One bar for one step; yields `done(n)`, which sets how many of `total` are finished."""
    with new_progress(console, eta=eta, transient=transient) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, completed=n)
