"""What a running flusher tells its operator through ``logging`` (logger ``ducto_redis.flusher``):
where it copies from and to when it starts, what it is waiting for, and its throughput at an
interval. The flusher calls these; it decides nothing here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("ducto_redis.flusher")


def database_label(database_url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL or conninfo string, without user or password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(database_url)
    except Exception:
        return "PostgreSQL (unparsable URL)"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def waiting_for(exc: BaseException) -> str:
    """What a failed batch waits for, in words: PostgreSQL, Redis, or a retry."""
    module = type(exc).__module__
    if module.startswith("psycopg"):
        return "PostgreSQL"
    if module.startswith("redis"):
        return "Redis"
    return "a retry"


class ThroughputLog:
    """Logs the entries moved every ``interval`` seconds (and the backlog, when it can read it): at
    INFO level when entries moved, at DEBUG level when the flusher was idle."""

    def __init__(self, interval: float, backlog: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.backlog = backlog
        self.clock = clock
        self.started = self.last = clock()
        self.at_last = 0

    def tick(self, total: int) -> None:
        """Called often with the entries moved so far; logs once per ``interval``."""
        now = self.clock()
        if self.interval <= 0 or now - self.last < self.interval:
            return
        moved, seconds = total - self.at_last, now - self.last
        backlog = ""
        if self.backlog is not None:
            try:
                backlog = f"; backlog {self.backlog():,}"
            except Exception:  # Redis away: the next tick says so through the flusher's own warning
                backlog = "; backlog unknown"
        log.log(logging.INFO if moved else logging.DEBUG,  # an idle flusher says so only at debug level
                "flushed %s entries in the last %.0f s (%s/s), %s in all%s", f"{moved:,}", seconds,
                f"{moved / seconds:,.0f}", f"{total:,}", backlog)
        self.last, self.at_last = now, total

    def summary(self, total: int) -> str:
        """``N entries in T s (R/s)`` since the start."""
        seconds = max(self.clock() - self.started, 1e-9)
        return f"{total:,} entries in {seconds:.1f} s ({total / seconds:,.0f}/s)"
