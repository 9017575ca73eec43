"""Ledger-facing store methods, mixed into RedisStore: flusher control, lag, analytics, restore."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..methods import StoreBase
from ..models import (
    AggregateStatsRow,
    DailySpendRow,
    LedgerLag,
    SpendByMemberRow,
    SpendByModelRow,
    SpendByTeamRow,
    SpendByUserRow,
    TopUserRow,
)
from ..progress import ProgressFn, no_progress

log = logging.getLogger("ducto_redis.ledger")

if TYPE_CHECKING:
    from .database import LedgerDatabase, LedgerReader
    from .flusher import LedgerFlusher
    from .queries import LedgerQueries
    from .recovery import ReconcileReport, RestoreReport

CATCH_UP_SECONDS = 5.0
"""How long analytics on a RedisStore spend copying unflushed entries into PostgreSQL first, at most."""


class LedgerStoreMixin(StoreBase):
    """Methods of the sync store that reach the ledger database: PostgreSQL (``DUCTO_DATABASE_URL``)
    for a RedisStore; MemoryStore answers from its embedded SQLite ledger instead (``memory.py``)."""

    _flusher: LedgerFlusher | None = None
    _catch_up_flusher: LedgerFlusher | None = None
    _catch_up_lock = threading.Lock()

    def _database_url(self, database_url: str | None = None) -> str:
        url = database_url or self.settings.database_url
        if not url:
            raise ValueError("database_url: pass one or set DUCTO_DATABASE_URL")
        return str(url)

    def start_flusher(self, database_url: str | None = None, **options: Any) -> LedgerFlusher:
        """Start a background thread copying this namespace's ledger into Postgres (it creates the
        schema first, waiting with backoff while Postgres is away; see ``LedgerFlusher``)."""
        from .flusher import LedgerFlusher

        url = self._database_url(database_url)
        self.stop_flusher()
        self._flusher = LedgerFlusher(self, url, **options).start()
        return self._flusher

    def stop_flusher(self) -> None:
        """Stop the background flusher, if one runs (its current batch completes first)."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None

    def ledger_lag(self) -> LedgerLag:
        """Entries not yet stored in Postgres (per shard and in all), pending ones, oldest age.

        One pipelined round trip (per node on a cluster) for every shard.
        """
        from .flusher import GROUP

        streams = self.core.keys.all_ledger_streams()
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
            pipe.xpending(stream, GROUP)
        replies = pipe.execute(raise_on_error=False)
        now_ms = int(time.time() * 1000)
        lag = LedgerLag()
        oldest: int | None = None
        for shard in range(len(streams)):
            n, first, pending = replies[3 * shard: 3 * shard + 3]
            if isinstance(n, Exception):
                raise n
            if not n:
                continue
            lag.per_shard[shard] = int(n)
            lag.backlog += int(n)
            if first and not isinstance(first, Exception):
                ms = int(str(first[0][0]).split("-")[0])
                oldest = ms if oldest is None else min(oldest, ms)
            if pending and not isinstance(pending, Exception):  # no group yet: nothing delivered
                lag.pending += int(pending.get("pending", 0))
        lag.oldest_unflushed_age_ms = max(0, now_ms - oldest) if oldest is not None else 0
        return lag

    def _unflushed_start(self, stream: str) -> str | None:
        """Where the entries of a ledger stream not yet in the ledger database begin (an XRANGE
        start), or None when there are none: the flusher's trim point (its group's oldest pending
        entry, else just past the last delivered one; every entry when no flusher ever ran)."""
        from redis.exceptions import ResponseError

        from .groups import GROUP, trim_point

        if not self.client.exists(stream):
            return None
        try:
            group = next((g for g in self.client.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())), None)
        except ResponseError:
            group = None
        if group is None:
            return "-"
        return trim_point(group["last-delivered-id"], self.client.xpending(stream, GROUP))

    def _in_namespace(self, namespace: str) -> Any:
        """A store like this one (same Redis, same settings) for another namespace (a restore drill)."""
        cls: Any = type(self)
        return cls(self.client, self.settings, namespace=namespace)

    def _ledger_database(self, database_url: str | None = None) -> LedgerDatabase:
        """The database holding this store's ledger rows: PostgreSQL at ``database_url`` (default
        ``DUCTO_DATABASE_URL``), schema ``DUCTO_LEDGER_SCHEMA``."""
        from .database import PostgresLedger

        return PostgresLedger(self._database_url(database_url), self.settings.ledger_schema)

    def ledger_reader(self) -> LedgerReader | None:
        """Finds one ledger entry by id (``.entry(namespace, entry_id)``) once it has left the Redis
        stream: the PostgreSQL ledger, or None without a database URL; a MemoryStore's embedded
        SQLite ledger, brought up to date first."""
        return self._ledger_reader()

    def _catch_up(self) -> None:
        """Copy what the ledger streams hold into PostgreSQL first (as ``ducto-redis flush --once``,
        idempotently, for up to :data:`CATCH_UP_SECONDS`), so analytics count every decision made
        before the call; entries another flusher is writing at that moment arrive with its commit."""
        from .flusher import LedgerFlusher

        with self._catch_up_lock:
            if self._catch_up_flusher is None:
                consumer = f"{socket.gethostname()}-{os.getpid()}-analytics"
                self._catch_up_flusher = LedgerFlusher(self, self._database_url(), consumer=consumer)
            self._catch_up_flusher.drain(timeout=CATCH_UP_SECONDS)

    def _queries(self) -> LedgerQueries:
        from .queries import LedgerQueries

        self._catch_up()
        return LedgerQueries(self._ledger_database(), self.settings.namespace)

    def spend_by_user(self, start: datetime, end: datetime) -> list[SpendByUserRow]:
        """Spend per user in ``[start, end)``, from the ledger (the rule: ``ledger/queries.py``)."""
        return self._queries().spend_by_user(start, end)

    def spend_by_model(self, start: datetime, end: datetime) -> list[SpendByModelRow]:
        """Spend per model in ``[start, end)``."""
        return self._queries().spend_by_model(start, end)

    def top_users(self, limit: int, start: datetime, end: datetime) -> list[TopUserRow]:
        """The ``limit`` users who spent most in ``[start, end)``."""
        return self._queries().top_users(limit, start, end)

    def daily_spend(self, start: datetime, end: datetime) -> list[DailySpendRow]:
        """Spend per UTC day in ``[start, end)``."""
        return self._queries().daily_spend(start, end)

    def aggregate_stats(self, start: datetime, end: datetime) -> AggregateStatsRow:
        """Credits consumed, active users, average daily spend, top model and user."""
        return self._queries().aggregate_stats(start, end)

    def spend_by_member(self, team_id: str, start: datetime, end: datetime) -> list[SpendByMemberRow]:
        """A team's spend per member in ``[start, end)``."""
        return self._queries().spend_by_member(team_id, start, end)

    def spend_by_team(self, limit: int, start: datetime, end: datetime) -> list[SpendByTeamRow]:
        """The ``limit`` team pools that spent most in ``[start, end)`` (with the methods above, the
        store is a source of :func:`ducto_redis.report.gather`)."""
        return self._queries().spend_by_team(limit, start, end)

    def restore_ledger(
        self, database_url: str | None = None, *, dry_run: bool = False, force: bool = False,
        target_namespace: str | None = None, progress: ProgressFn = no_progress,
    ) -> RestoreReport:
        """Rebuild the namespace's Redis keys (or ``target_namespace``'s, for a drill) from the ledger.

        Refuses (:class:`~ducto_redis.ledger.recovery.RestoreRefused`, nothing written) while the
        namespace written has ledger entries not yet in the ledger database or live keys, unless
        ``force``; ``dry_run`` writes nothing and reports what it would write (``docs/ledger.md``).
        ``progress(done, total)`` is called after each account written.
        """
        from .recovery import restore

        source = self._ledger_database(database_url)
        started = time.monotonic()
        report = restore(self, source, dry_run=dry_run, force=force, target_namespace=target_namespace,
                         progress=progress)
        log.info("%s %d accounts of namespace %r from the ledger (%s) in %.1f s",
                 "restored" if report.written else "would restore", report.total_accounts, report.namespace,
                 source.label, time.monotonic() - started)
        return report

    def restore_from_ledger(self, database_url: str | None = None, progress: ProgressFn = no_progress, *,
                            force: bool = False) -> int:
        """:meth:`restore_ledger`, returning the number of accounts restored."""
        return self.restore_ledger(database_url, force=force, progress=progress).total_accounts

    def reconcile_ledger(self, database_url: str | None = None, *, ledger_namespace: str | None = None,
                         progress: ProgressFn = no_progress) -> ReconcileReport:
        """Every account on both sides, Redis against the ledger (of ``ledger_namespace`` after a
        drill): drift, and apart from it the accounts whose entries are not flushed yet.
        ``progress(done, total)`` is called after each account of the ledger."""
        from .recovery import reconcile

        report = reconcile(self, self._ledger_database(database_url), ledger_namespace=ledger_namespace,
                           progress=progress)
        log.log(logging.WARNING if report.drift else logging.INFO,
                "reconcile of namespace %r: %d accounts drift, %d not yet flushed", self.settings.namespace,
                len(report.drift), len(report.not_yet_flushed))
        return report

    def reconcile_with_ledger(self, database_url: str | None = None,
                              progress: ProgressFn = no_progress) -> dict[str, list[str]]:
        """Drift per account between Redis and the ledger (empty when they agree); accounts whose
        entries are not flushed yet are not drift (:meth:`reconcile_ledger` lists them)."""
        return self.reconcile_ledger(database_url, progress=progress).drift
