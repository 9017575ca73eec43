"""How long operations (restore, reconcile, sweeps) report their progress: a plain callable.

The library never draws anything: it calls ``progress(done, total)`` as the work advances, and
the caller decides what to show (the ``ducto-redis`` command draws a rich progress bar when
stderr is a terminal, and nothing otherwise). ``total`` may grow while the work runs (entries
keep arriving during a flush).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int], None]
"""Called with (units done, units in all) each time a long operation advances."""


def no_progress(done: int, total: int) -> None:
    """The progress callback that shows nothing."""
