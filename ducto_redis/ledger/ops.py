"""What the ledger's operator commands do (``flush``, ``status``), as library functions: the command
line only parses its options and prints what these return."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..models import LedgerLag
from .flusher import LedgerFlusher, check_flusher_options
from .quarantine import QuarantineSummary, quarantine_summary


@dataclass
class FlushReport:
    """What a flush did, and what it left (entries other consumers still hold)."""

    flushed: int
    quarantined: int = 0
    left_pending: int = 0
    claim_idle_ms: int = 30_000

    @property
    def complete(self) -> bool:
        """Nothing was left behind."""
        return self.left_pending == 0

    def lines(self) -> list[str]:
        out = [f"flushed {self.flushed} entries"]
        if self.quarantined:
            out.append(f"quarantined {self.quarantined} entries PostgreSQL refused (see `ducto-redis status`)")
        if self.left_pending:
            out.append(
                f"{self.left_pending} entries still pending on other consumers: delivered less than "
                f"{self.claim_idle_ms} ms ago, or to a flusher still running; run again later, or with "
                "--claim-idle-ms 0 when no other flusher runs")
        return out


def flush(store: Any, database_url: str, *, once: bool = False, batch: int = 20_000, claim_idle_ms: int = 30_000,
          processes: int = 1, stop: threading.Event | None = None, log_interval: float = 10.0,
          log_level: int | None = None, on_batch: Callable[[int, float], None] | None = None) -> FlushReport:
    """Copy the namespace's ledger into PostgreSQL: drain it (``once``: entries a dead flusher left
    pending for ``claim_idle_ms`` included) or run until ``stop`` is set; ``processes`` > 1 runs
    that many flusher processes (each logging at ``log_level``). The schema is created first,
    waiting for PostgreSQL with backoff (a flusher starts while PostgreSQL is away). ``on_batch``
    (one process) is told each committed batch: (entries, seconds)."""
    check_flusher_options(batch=batch, claim_idle_ms=claim_idle_ms, processes=processes)
    if processes > 1:
        from .processes import run_flusher_processes

        s = store.settings
        kwargs = {"url": s.redis_url, "namespace": s.namespace, "database_url": database_url,
                  "ledger_schema": s.ledger_schema}
        moved = run_flusher_processes(processes, kwargs, database_url, batch=batch, once=once, log_level=log_level,
                                      log_interval=log_interval, claim_idle_ms=claim_idle_ms)
        probe = LedgerFlusher(store, database_url, batch=batch, claim_idle_ms=claim_idle_ms)
        return FlushReport(moved, left_pending=probe.pending_elsewhere() if once else 0, claim_idle_ms=claim_idle_ms)
    flusher = LedgerFlusher(store, database_url, batch=batch, claim_idle_ms=claim_idle_ms, log_interval=log_interval,
                            on_batch=on_batch)
    flusher.serve(once, stop)
    return FlushReport(flusher.flushed, flusher.quarantined, flusher.left_pending if once else 0, claim_idle_ms)


@dataclass
class LedgerStatus:
    """The ledger as an operator sees it: the Redis backlog and the PostgreSQL quarantine."""

    lag: LedgerLag
    quarantine: QuarantineSummary | None = None  # None: no database to ask, or it did not answer
    quarantine_error: str | None = None  # why the quarantine could not be read

    def lines(self) -> list[str]:
        lag = self.lag
        out = [f"backlog {lag.backlog} entries, pending {lag.pending}, "
               f"oldest unflushed {lag.oldest_unflushed_age_ms} ms"]
        if self.quarantine_error:
            out.append(f"quarantined entries unknown: {self.quarantine_error}")
        if self.quarantine is not None:
            q = self.quarantine
            line = f"quarantined {q.count} entries"
            if q.count:
                line += f" (PostgreSQL refused them; the latest: {q.latest_reason})"
            out.append(line)
        return out


def status(store: Any, database_url: str | None = None) -> LedgerStatus:
    """Backlog, pending entries, the oldest unflushed entry's age, and (with a database) the
    number of quarantined entries."""
    lag = store.ledger_lag()  # Redis first: status is about the backlog, PostgreSQL may well be away
    if not database_url:
        return LedgerStatus(lag)
    try:
        q = quarantine_summary(database_url, store.settings.ledger_schema, store.settings.namespace)
    except Exception as exc:  # a status that fails when PostgreSQL is down would hide the backlog
        return LedgerStatus(lag, None, " ".join(str(exc).split()) or type(exc).__name__)
    return LedgerStatus(lag, q)
