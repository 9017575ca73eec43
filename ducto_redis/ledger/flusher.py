"""LedgerFlusher: copies ledger entries from the shards' Redis Streams into PostgreSQL.

Crash-safe and idempotent:
- entries are read with a consumer group (``ducto-flusher``), so each is delivered to one flusher
  and stays *pending* until acknowledged; several flushers (threads or processes) share the work;
- a batch of entries delivered for the first time is COPYed straight into the ledger table, whose
  primary key is the entry id: if any id is already there (a group recreated, a duplicated id), the
  COPY fails as a whole, is rolled back, and the batch takes the idempotent path. Entries claimed
  from a dead flusher, and a batch retried after an error (its commit may have happened), always
  take the idempotent path: COPY into a temporary table, ``INSERT ... ON CONFLICT (namespace, entry_id) DO
  NOTHING``. Either way a replayed entry is never stored twice;
- entries are acknowledged (XACK) only after the commit, then the stream is trimmed below the
  oldest entry not yet safely stored (XTRIM MINID): below the oldest pending entry, or when none
  is pending, just past the last delivered one (read *before* the pending summary, so an entry
  another flusher read in between is never trimmed);
- entries left pending by a flusher that died are claimed by another after ``claim_idle_ms``
  (XAUTOCLAIM), and a consumer that holds nothing and was idle that long is removed from the group
  (atomically, so a live one is never removed with entries in hand); when Postgres is unreachable
  the batch is kept and retried with backoff — also at start: ``run`` creates the schema itself,
  waiting for Postgres, and says what it waits for;
- a consumer group that vanished (Redis restarted without persistence, the namespace's keys
  deleted or restored) is re-created; whatever it delivers again is stored once;
- a row Postgres refuses (a data error) never holds back the others: the batch is halved until the
  refused row(s) are found, every other row is stored, and each refused one goes to the quarantine
  table (``quarantine.py``), counted and acknowledged.

Speed: replies are read as bytes on a private connection whose stream replies skip redis-py's
per-entry parsing; COPY text is built from the bytes (``copy_text``); ack and trim of every
stream of a batch take two pipelined round trips; ``run`` and ``drain`` overlap the next batch's
Redis read with the current batch's Postgres write (a writer thread), so Python and Postgres
work at the same time. Acks still follow commits, batch by batch.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from ..validation import check_amount, check_schema_name
from .copy_text import COLUMNS, Entry, copy_payload
from .groups import GROUP, ConsumerGroups, group_gone, trim_point
from .postgres_writer import PostgresWriter, migrate, schema_sql
from .quarantine import TooManyRefused
from .watch import ThroughputLog, database_label, log, waiting_for

__all__ = ["COLUMNS", "GROUP", "Batch", "LedgerFlusher", "check_flusher_options", "migrate", "schema_sql",
           "trim_point"]

MAX_BATCH = 1_000_000
MAX_CLAIM_IDLE_MS = 86_400_000
MAX_PROCESSES = 64


def check_flusher_options(*, batch: int = 20_000, claim_idle_ms: int = 30_000, block_ms: int = 200,
                          processes: int = 1) -> None:
    """A flusher's options within their bounds, else :class:`InvalidInputError` naming the option."""
    check_amount(batch, "batch", 1, MAX_BATCH, unit="entries")
    check_amount(claim_idle_ms, "claim_idle_ms", 0, MAX_CLAIM_IDLE_MS, unit="milliseconds")
    check_amount(block_ms, "block_ms", 0, 60_000, unit="milliseconds")
    check_amount(processes, "processes", 1, MAX_PROCESSES, unit="processes")


@dataclass
class Batch:
    """Entries moved together in one Postgres transaction.

    ``fresh``: every entry was delivered for the first time (XREADGROUP ``>``), so it may be
    COPYed straight into the ledger (a duplicate id still falls back to the idempotent path).
    :meth:`prepare` turns the entries into the COPY payload and the ids to acknowledge per shard,
    and lets the entries go (a retry writes the same payload).
    """

    entries: list[Entry]
    fresh: bool = False
    payload: bytes | None = None
    ids: dict[int, list[bytes]] = field(default_factory=dict)
    count: int = 0

    def prepare(self, namespace: str) -> Batch:
        if self.payload is None:
            self.payload = copy_payload(self.entries, namespace)
            for shard, mid, _ in self.entries:
                self.ids.setdefault(shard, []).append(mid)
            self.count = len(self.entries)
            self.entries = []
        return self

    def __len__(self) -> int:
        return self.count if self.payload is not None else len(self.entries)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a reply of ~100 000 objects is parsed and formatted.

    Every container in the reply survives until the batch is formatted, so the collector would
    otherwise run (and walk every live object) several times per batch. Reference counting still
    frees everything; the collector's previous state is restored (only a pause that disabled it
    enables it again).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _raw(response: Any, **_: Any) -> Any:
    return response


_CLUSTER_KWARGS = ("username", "password", "client_name", "protocol", "socket_timeout", "socket_connect_timeout",
                   "ssl", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")


def bytes_client(client: Any) -> Any:
    """A client to the same Redis (or cluster) as ``client`` that returns bytes, and whose
    XREADGROUP / XAUTOCLAIM replies are left as the server sent them (no per-entry parsing)."""
    if isinstance(client, RedisCluster):
        cluster: Any = client
        kwargs = {k: v for k, v in cluster.get_connection_kwargs().items() if k in _CLUSTER_KWARGS}
        node: Any = ClusterNode
        return RedisCluster(startup_nodes=[node(n.host, n.port) for n in cluster.get_nodes()], **kwargs)
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    raw = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
    raw.set_response_callback("XREADGROUP", _raw)
    raw.set_response_callback("XAUTOCLAIM", _raw)
    return raw


def _stream_items(reply: Any) -> list[tuple[Any, Any]]:
    """(stream, messages) pairs of an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(r[0], r[1]) for r in reply]


def _fields(fields: Any) -> list[bytes] | None:
    """A stream entry's fields as the flat [k, v, ...] list of a raw reply (a parsed dict is flattened)."""
    if not fields:
        return None
    if isinstance(fields, dict):
        return [x for kv in fields.items() for x in kv]
    return list(fields)


class LedgerFlusher(ConsumerGroups, PostgresWriter):
    """Moves one namespace's ledger entries from Redis into Postgres (see the module docstring)."""

    def __init__(
        self,
        store: Any,
        database_url: str,
        *,
        consumer: str | None = None,
        batch: int = 20_000,
        block_ms: int = 200,
        claim_idle_ms: int = 30_000,
        schema: str | None = None,
        create_schema: bool = True,
        log_interval: float = 10.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        check_flusher_options(batch=batch, claim_idle_ms=claim_idle_ms, block_ms=block_ms)
        self.store = store
        self.on_batch = on_batch  # called with (entries, seconds) after each committed batch (metrics)
        self.client = bytes_client(store.client)
        self.cluster = isinstance(self.client, RedisCluster)
        self.database_url = database_url
        self.schema = check_schema_name(schema or store.settings.ledger_schema)
        self.namespace = store.settings.namespace
        self.stream_names = store.core.keys.all_ledger_streams()
        self.streams = [s.encode() for s in self.stream_names]
        self.shard_of = {s: i for i, s in enumerate(self.streams)}
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.flushed = 0
        self.failures = 0
        self.fallbacks = 0  # fresh batches that met an id already stored and took the idempotent path
        self.quarantined = 0  # entries Postgres refused, kept in the quarantine table
        self.regrouped = 0  # times the consumer group was found missing and re-created
        self.reaped = 0  # dead consumers removed from the group
        self.left_pending = 0  # after drain(): entries other consumers hold, not idle long enough to claim
        self._schema_ready = not create_schema
        self._conn: Any = None
        self._staged = False
        self.unwritten: list[Batch] = []  # read but not yet committed: written first, idempotently
        self._last_claim = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._groups_ready = False
        self.log_interval = log_interval  # seconds between throughput lines in the log (0: none)

    # ── Redis side ────────────────────────────────────────────────────

    def _collect(self, stream: Any, msgs: Any, out: list[Entry]) -> None:
        shard = self.shard_of[stream if isinstance(stream, bytes) else str(stream).encode()]
        for mid, raw in msgs:
            if raw and type(raw) is list:  # the raw reply: taken as it is
                out.append((shard, mid, raw))
                continue
            fields = _fields(raw)
            if fields:  # an entry deleted while pending comes back without fields
                out.append((shard, mid if isinstance(mid, bytes) else str(mid).encode(), fields))

    def _claim(self) -> list[Entry]:
        """Entries another consumer left pending for longer than ``claim_idle_ms`` (XAUTOCLAIM)."""
        out: list[Entry] = []
        pipe = self.client.pipeline(transaction=False)
        for s in self.streams:
            pipe.xautoclaim(s, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch)
        for s, (_next, msgs, *_) in zip(self.streams, pipe.execute(), strict=True):
            self._collect(s, msgs, out)
        return out

    def _read(self, block: bool) -> Batch:
        """Entries a dead consumer left pending (every ``claim_idle_ms / 2``), else new entries."""
        now = time.monotonic()
        if now - self._last_claim >= self.claim_idle_ms / 2000:
            self._last_claim = now
            claimed = self._claim()
            if claimed:
                return Batch(claimed, fresh=False)
            self.reap_consumers()
        out: list[Entry] = []
        # COUNT applies per stream: split the batch over the shards so a read stays near `batch`
        per_stream = max(1, -(-self.batch // len(self.streams)))
        if self.cluster:  # one slot per stream: no multi-stream read; a pipeline per node instead
            pipe = self.client.pipeline(transaction=False)
            for s in self.streams:
                pipe.xreadgroup(GROUP, self.consumer, {s: ">"}, count=per_stream)
            for reply in pipe.execute():
                for stream, msgs in _stream_items(reply):
                    self._collect(stream, msgs, out)
            if not out and block and self.block_ms:
                time.sleep(self.block_ms / 1000)
        else:
            reply = self.client.xreadgroup(GROUP, self.consumer, dict.fromkeys(self.streams, ">"),
                                           count=per_stream, block=self.block_ms if block and self.block_ms else None)
            for stream, msgs in _stream_items(reply):
                self._collect(stream, msgs, out)
        return Batch(out, fresh=True)

    # ── Postgres side ─────────────────────────────────────────────────

    def _write_or_keep(self, batch: Batch) -> None:
        """Write; on failure keep the batch (first in line) for an idempotent retry and re-raise."""
        try:
            self._write(batch)
        except Exception:
            batch.fresh = False  # the commit may have happened: replay idempotently
            self.unwritten.insert(0, batch)
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
            raise

    # ── the loop ──────────────────────────────────────────────────────

    def _next_batch(self, block: bool) -> Batch:
        """The next batch, prepared: one kept from a failed write, else what Redis has now; if
        that is nothing and ``block``, what arrives within ``block_ms`` (read with the GC on)."""
        if not self._groups_ready:
            self.ensure_groups()
        if self.unwritten:
            return self.unwritten.pop(0)
        try:
            return self._fresh_batch(block)
        except ResponseError as exc:
            if not group_gone(exc):
                raise
            self._regroup(exc)
            return self._fresh_batch(block)

    def _fresh_batch(self, block: bool) -> Batch:
        with _gc_paused():
            batch = self._read(block=False).prepare(self.namespace)
        if not batch and block:
            batch = self._read(block=True).prepare(self.namespace)
        return batch

    def describe(self, exc: BaseException) -> str:
        """What a failure means for the flusher, for its log line: ``ledger flush failed (...);
        waiting for PostgreSQL`` (or Redis, or a retry)."""
        what = "a retry" if isinstance(exc, TooManyRefused) else waiting_for(exc)
        return f"ledger flush failed ({' '.join(str(exc).split()) or type(exc).__name__}); waiting for {what}"

    def flush_once(self, block: bool = False) -> int:
        """Move one batch: read, write (COPY), commit, then ack and trim. Returns entries moved.

        A batch that failed to reach Postgres is kept and written again first; nothing is
        acknowledged before its commit.
        """
        batch = self._next_batch(block)
        if not batch:
            return 0
        self._store_batch(batch)
        return len(batch)

    def _store_batch(self, batch: Batch) -> None:
        """Write, commit, ack and trim one batch; count it (and tell ``on_batch``)."""
        start = time.perf_counter()
        self._write_or_keep(batch)
        self._ack_and_trim(batch.ids)
        self.flushed += len(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - start)

    def _pipelined(self, keep_going: Callable[[int], bool], block: bool) -> int:
        """Read and format batch k+1 while a writer thread stores batch k, acks and trims it.

        The next batch is read only once the writer has taken the last one (double buffering: one
        batch written, one read), so batches grow with the write time instead of queueing up. A
        batch is acknowledged only after its own commit.
        A failure on either side stops both and is re-raised; every batch read but not committed
        is kept in ``unwritten`` (and stays pending in Redis), to be written first next time.
        """
        handoff: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        taken = threading.Event()
        errors: list[BaseException] = []
        moved = [0]

        def writer() -> None:
            while True:
                batch = handoff.get()
                taken.set()
                if batch is None:
                    return
                try:
                    self._store_batch(batch)
                except BaseException as exc:
                    errors.append(exc)
                    return
                moved[0] += len(batch)

        thread = threading.Thread(target=writer, name="ducto-ledger-writer", daemon=True)
        thread.start()
        held: Batch | None = None  # read by this thread, not yet handed to the writer
        try:
            while not errors and keep_going(moved[0]):
                held = self._next_batch(block)
                if not held:
                    held = None
                    if not block:
                        break
                    continue
                taken.clear()
                while not errors:
                    try:
                        handoff.put(held, timeout=0.1)
                        held = None
                        break
                    except queue.Full:
                        continue
                while not errors and not taken.wait(0.1):  # read on only while the writer writes
                    pass
        finally:
            while thread.is_alive():
                try:
                    handoff.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            thread.join()
            with contextlib.suppress(queue.Empty):
                while (left := handoff.get_nowait()) is not None:  # handed over, never taken
                    self.unwritten.append(left)
            if held is not None:
                self.unwritten.append(held)
        if errors:
            raise errors[0]
        return moved[0]

    def _claim_all(self) -> int:
        """Write every entry other consumers left pending for ``claim_idle_ms``; returns how many."""
        moved = 0
        while claimed := self._claim():
            batch = Batch(claimed, fresh=False).prepare(self.namespace)
            self._store_batch(batch)
            moved += len(batch)
        return moved

    def _drain_once(self, deadline: float, keep_going: Callable[[int], bool]) -> int:
        self.prepare_schema()
        if not self._groups_ready:
            self.ensure_groups()
        moved = 0
        while self.unwritten and time.monotonic() < deadline:
            moved += self.flush_once()
        moved += self._claim_all()
        self._last_claim = time.monotonic()
        return moved + self._pipelined(keep_going, block=False)

    def _starting(self, how: str) -> ThroughputLog:
        log.info("flusher %s %s: namespace %r, %d streams -> PostgreSQL %s schema %r, batches of up to %s",
                 self.consumer, how, self.namespace, len(self.streams), database_label(self.database_url),
                 self.schema, f"{self.batch:,}")
        return ThroughputLog(self.log_interval, lambda: int(self.store.ledger_lag().backlog))

    def drain(self, timeout: float = 60.0) -> int:
        """Flush until nothing is left to read (or ``timeout``), entries a dead flusher left pending
        for ``claim_idle_ms`` included; returns entries moved. Failures are retried with backoff
        until ``timeout`` (then raised). Afterwards ``left_pending`` says how many entries other
        consumers still hold (delivered less than ``claim_idle_ms`` ago, or to a live flusher) and
        idle consumers holding nothing are removed from the group."""
        watch = self._starting("draining")
        deadline = time.monotonic() + timeout
        moved, delay = 0, 0.05

        done = [0]  # entries moved by the attempts before this one

        def keep_going(n: int) -> bool:
            watch.tick(done[0] + n)
            return time.monotonic() < deadline

        while True:
            try:
                moved += self._drain_once(deadline, keep_going)
                break
            except Exception as exc:
                if group_gone(exc):  # the group vanished between two steps: re-create it, go on
                    self._regroup(exc)
                    continue
                self.failures += 1
                done[0] = self.flushed
                if time.monotonic() + delay >= deadline:
                    raise
                log.warning("%s, retrying in %.2fs", self.describe(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.reap_consumers()
        self.left_pending = self.pending_elsewhere()
        log.info("flusher %s drained %s%s", self.consumer, watch.summary(moved),
                 f"; {self.left_pending:,} entries left pending on other consumers" if self.left_pending else "")
        return moved

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush until ``stop`` is set, retrying with exponential backoff when anything fails (saying
        what it waits for: PostgreSQL, Redis); creates the schema first, waiting for Postgres."""
        stop = stop or self._stop
        watch = self._starting("started")
        log.info("waiting for ledger entries (reads block %d ms; a dead flusher's entries are claimed after %d s)",
                 self.block_ms, self.claim_idle_ms // 1000)

        failing = [False]  # since the last failure, nothing has been flushed yet

        def flushed_again() -> None:
            if failing[0]:
                log.info("flushing again after %d failed attempts in all", self.failures)
                failing[0] = False

        def keep_going(n: int) -> bool:
            if n:
                flushed_again()
            watch.tick(self.flushed)
            return not stop.is_set()

        delay = 0.05
        while not stop.is_set():
            try:
                self.prepare_schema()
                while self.unwritten and not stop.is_set():
                    self.flush_once()
                    flushed_again()
                self._pipelined(keep_going, block=True)
                delay = 0.05
            except Exception as exc:
                if group_gone(exc):
                    self._regroup(exc)
                    continue
                self.failures += 1
                failing[0] = True
                log.warning("%s, retrying in %.2fs", self.describe(exc), delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        log.info("flusher %s stopped after %s", self.consumer, watch.summary(self.flushed))

    def serve(self, once: bool = False, stop: threading.Event | None = None) -> None:
        """Drain (``once``) or run until ``stop`` is set, then stop cleanly (see :meth:`stop`)."""
        try:
            if once:
                self.drain(timeout=3600)
            else:
                self.run(stop)
        finally:
            self.stop()

    def start(self) -> LedgerFlusher:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="ducto-ledger-flusher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after its current batch), leave the group if nothing is pending on this
        flusher (a clean stop leaves no dead consumer behind), close the Postgres connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._groups_ready and not self.unwritten:
            with contextlib.suppress(Exception):
                self.reap_consumers(only_self=True)
        if self._conn is not None:
            self._conn.close()
