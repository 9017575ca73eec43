"""What the commands print: JSON with ``--json``, rich tables and lines otherwise, progress bars on
a terminal (stderr) and nothing when stderr is not one."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..progress import ProgressFn, no_progress
from .app import CliState


def stdout() -> Console:
    """A console on the current stdout (plain text when it is not a terminal; lines never wrapped)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def emit(state: CliState, data: Any, human: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else let ``human`` print it for a person."""
    if state.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human(stdout())


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
          numeric: Sequence[str] = ()) -> Table:
    """A rich table; the ``numeric`` columns are right-aligned."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c in numeric else "left")
    for row in rows:
        t.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row))
    return t


class RateColumn(ProgressColumn):
    """Units per second, e.g. ``1,234 accounts/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(label: str, unit: str) -> Iterator[ProgressFn]:
    """A :data:`~ducto_redis.progress.ProgressFn` drawing a bar with rate and ETA on stderr when it
    is a terminal; one that shows nothing when it is not (logs and pipes stay clean)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield no_progress
        return
    columns = (TextColumn(f"{label:<8}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), RateColumn(unit),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("elapsed"), TimeElapsedColumn())
    bar = Progress(*columns, console=console, refresh_per_second=8)
    task: TaskID | None = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # drawn from the first figures on: a command that fails before shows no bar
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


@contextmanager
def polled_progress(label: str, unit: str, poll: Callable[[], tuple[int, int]],
                    every: float = 0.25) -> Iterator[None]:
    """A progress bar fed by calling ``poll() -> (done, total)`` from a thread every ``every`` s
    while the block runs (for work that reports nothing itself, e.g. flusher processes)."""
    import threading

    stop = threading.Event()
    with progress_bar(label, unit) as update:
        if update is no_progress:
            yield
            return

        def frame() -> None:
            with contextlib.suppress(Exception):  # a failed poll only skips a frame
                update(*poll())

        def watch() -> None:
            while not stop.wait(every):
                frame()

        thread = threading.Thread(target=watch, name="ducto-cli-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            frame()  # the last figures, once the work is done
