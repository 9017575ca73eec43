"""Writing one section of bench/RESULTS.md (each benchmark owns its own ``## <title>`` section)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import charts

PATH = Path(__file__).with_name("RESULTS.md")


def write_section(title: str, command: str, note: str, table: str) -> None:
    """Replace (or append) the section ``## title`` with the command, the date, a note and the table;
    keep the table's figures as JSON beside it and draw their chart (``charts.py``)."""
    old = PATH.read_text(encoding="utf-8") if PATH.exists() else "# Benchmark results\n"
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = f"## {title}\n\nCommand: `{command}` — {date}. {note}\n\n{table}\n"
    marker = f"## {title}\n"
    if marker in old:
        head, _, rest = old.partition(marker)
        nxt = rest.find("\n## ")
        new = head + section + (rest[nxt:] if nxt >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    PATH.write_text(new, encoding="utf-8")
    charts.save(title, command, date, note, table)


def timed(op: Callable[[], object], seconds: float) -> float:
    """Calls of ``op`` per second, run back to back for ``seconds``."""
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        op()
        n += 1
    return n / (time.perf_counter() - start)


def interleaved(ops: Mapping[str, Callable[[], object]], rounds: int, seconds: float) -> dict[str, float]:
    """The median calls/s of each op over ``rounds`` rounds, the ops interleaved within each round
    (a noisy machine's load then falls on all of them alike)."""
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            rates[name].append(timed(op, seconds))
    return {name: statistics.median(r) for name, r in rates.items()}
