"""LedgerFlusher: copies ledger entries from the shards' Redis Streams into PostgreSQL.

Crash-safe and idempotent:
- entries are read with a consumer group (``ducto-flusher``), so each is delivered to one flusher
  and stays *pending* until acknowledged; several flushers (threads or processes) share the work;
- a batch is written with COPY into a temporary table and ``INSERT ... ON CONFLICT (entry_id) DO
  NOTHING``: replaying a batch inserts nothing twice;
- entries are acknowledged (XACK) only after the commit, then the stream is trimmed below the
  oldest entry not yet safely stored (XTRIM MINID);
- entries left pending by a flusher that died are claimed by another after ``claim_idle_ms``
  (XAUTOCLAIM); when Postgres is unreachable the batch is kept and retried with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

log = logging.getLogger("ducto_redis.flusher")

GROUP = "ducto-flusher"
COLUMNS = (
    "entry_id", "namespace", "shard", "stream_ms", "stream_seq", "ts", "account_kind", "account_id", "member",
    "kind", "amount", "balance_after", "held_after", "hold", "reservation_id", "operation_type", "model",
    "tx_type", "idempotency_key", "expires_ms", "cap_action", "reason", "metadata", "extra",
)
# stream field -> column, for the fields stored in their own column
FIELD_COLUMNS = {
    "member": "member", "kind": "kind", "rid": "reservation_id", "op": "operation_type", "model": "model",
    "type": "tx_type", "idem": "idempotency_key", "cap": "cap_action", "reason": "reason",
}
INT_FIELDS = {"amount": "amount", "bal": "balance_after", "held": "held_after", "hold": "hold", "exp": "expires_ms"}
KNOWN = {"id", "ts", "ak", "acct", "meta", *FIELD_COLUMNS, *INT_FIELDS}


def schema_sql(schema: str) -> str:
    """The DDL of the ledger in ``schema``."""
    text = (resources.files("ducto_redis.ledger") / "schema.sql").read_text(encoding="utf-8")
    return text.replace("{schema}", schema)


def migrate(database_url: str, schema: str) -> None:
    """Create the ledger schema, table and indexes (idempotent)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute(schema_sql(schema))


_ESC = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
STAGE_COLUMNS = tuple("ts_ms" if c == "ts" else c for c in COLUMNS)


def copy_line(namespace: str, shard: int, stream_id: str, f: dict[str, str]) -> str:
    """One entry as a line of COPY text format, columns in ``STAGE_COLUMNS`` order (ts as ms)."""
    ms, _, seq = stream_id.partition("-")
    g = f.get
    meta = g("meta")
    if meta and not meta.startswith("{"):
        meta = json.dumps({"raw": meta})
    extra = {k: v for k, v in f.items() if k not in KNOWN}
    cols = (
        g("id") or f"{namespace}:{shard}:{stream_id}", namespace, str(shard), ms, seq or "0", g("ts") or ms,
        g("ak") or "u", g("acct") or "", g("member"), g("kind"), g("amount") or "0", g("bal"), g("held"),
        g("hold"), g("rid"), g("op"), g("model"), g("type"), g("idem"), g("exp"), g("cap"), g("reason"), meta,
        json.dumps(extra) if extra else None,
    )
    return "\t".join(["\\N" if not v else v.translate(_ESC) for v in cols]) + "\n"


class LedgerFlusher:
    """Moves one namespace's ledger entries from Redis into Postgres (see the module docstring)."""

    def __init__(
        self,
        store: Any,
        database_url: str,
        *,
        consumer: str | None = None,
        batch: int = 5000,
        block_ms: int = 200,
        claim_idle_ms: int = 30_000,
        schema: str | None = None,
    ) -> None:
        self.store = store
        self.client = store.client
        self.database_url = database_url
        self.schema = schema or store.settings.ledger_schema
        self.namespace = store.settings.namespace
        self.streams = store.core.keys.all_ledger_streams()
        self.shard_of = {s: i for i, s in enumerate(self.streams)}
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.cluster = isinstance(self.client, RedisCluster)
        self.flushed = 0
        self.failures = 0
        self._conn: Any = None
        self._staged = False
        self._pending_batch: list[tuple[str, str, dict[str, str]]] = []
        self._last_claim = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._groups_ready = False

    # ── Redis side ────────────────────────────────────────────────────

    def ensure_groups(self) -> None:
        """Create the consumer group on every shard stream (MKSTREAM; existing groups are kept)."""
        for s in self.streams:
            try:
                self.client.xgroup_create(s, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _read(self, block: bool) -> list[tuple[str, str, dict[str, str]]]:
        """New entries for this consumer, plus entries a dead consumer left pending."""
        out: list[tuple[str, str, dict[str, str]]] = []
        now = time.monotonic()
        if now - self._last_claim >= self.claim_idle_ms / 2000:
            self._last_claim = now
            for s in self.streams:
                _next, msgs, *_ = self.client.xautoclaim(s, GROUP, self.consumer, self.claim_idle_ms,
                                                         start_id="0-0", count=self.batch)
                out.extend((s, mid, fields) for mid, fields in msgs if fields)
        want = max(1, self.batch - len(out))
        block_ms = self.block_ms if block and not out else None
        if self.cluster:
            for s in self.streams:
                got = self.client.xreadgroup(GROUP, self.consumer, {s: ">"}, count=max(1, want // len(self.streams)))
                for stream, msgs in got or []:
                    out.extend((stream, mid, fields) for mid, fields in msgs)
        else:
            # COUNT applies per stream: split the batch over the shards so a read stays near `batch`
            per_stream = max(1, want // len(self.streams))
            got = self.client.xreadgroup(GROUP, self.consumer, dict.fromkeys(self.streams, ">"),
                                         count=per_stream, block=block_ms)
            for stream, msgs in got or []:
                out.extend((stream, mid, fields) for mid, fields in msgs)
        return out

    def _ack_and_trim(self, entries: Iterable[tuple[str, str, dict[str, str]]]) -> None:
        by_stream: dict[str, list[str]] = {}
        for s, mid, _ in entries:
            by_stream.setdefault(s, []).append(mid)
        for s, ids in by_stream.items():
            self.client.xack(s, GROUP, *ids)
            self._trim(s)

    def _trim(self, stream: str) -> None:
        """Drop the entries below the oldest one not yet acknowledged (or not yet delivered)."""
        pending = self.client.xpending(stream, GROUP)
        if pending and pending.get("pending"):
            minid = pending["min"]
        else:
            groups = {g["name"]: g for g in self.client.xinfo_groups(stream)}
            last = groups[GROUP]["last-delivered-id"] if GROUP in groups else "0-0"
            ms, _, seq = str(last).partition("-")
            minid = f"{ms}-{int(seq) + 1}"
        self.client.xtrim(stream, minid=minid, approximate=False)

    # ── Postgres side ─────────────────────────────────────────────────

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=3)
            self._staged = False
        return self._conn

    def _write(self, entries: list[tuple[str, str, dict[str, str]]]) -> None:
        conn = self._connection()
        with conn.cursor() as cur:
            if not self._staged:
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS ledger_stage "
                            f"(LIKE {self.schema}.ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                cur.execute("ALTER TABLE ledger_stage DROP COLUMN ts, ADD COLUMN ts_ms bigint")
                self._staged = True
            payload = "".join(copy_line(self.namespace, self.shard_of[s], mid, fields) for s, mid, fields in entries)
            with cur.copy(f"COPY ledger_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
                copy.write(payload.encode("utf-8"))
            select = ", ".join("to_timestamp(ts_ms / 1000.0)" if c == "ts" else c for c in COLUMNS)
            cur.execute(f"INSERT INTO {self.schema}.ledger ({', '.join(COLUMNS)}) SELECT {select} "
                        f"FROM ledger_stage ON CONFLICT (entry_id) DO NOTHING")
        conn.commit()

    # ── the loop ──────────────────────────────────────────────────────

    def flush_once(self, block: bool = False) -> int:
        """Move one batch: read, write (COPY), commit, then ack and trim. Returns entries moved.

        A batch that failed to reach Postgres is kept and written again first; nothing is
        acknowledged before its commit.
        """
        if not self._groups_ready:
            self.ensure_groups()
        batch = self._pending_batch or self._read(block)
        if not batch:
            return 0
        self._pending_batch = batch
        try:
            self._write(batch)
        except Exception:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
            raise
        self._pending_batch = []
        self._ack_and_trim(batch)
        self.flushed += len(batch)
        return len(batch)

    def drain(self, timeout: float = 60.0) -> int:
        """Flush until nothing is left to read (or ``timeout``); returns entries moved."""
        moved = 0
        deadline = time.monotonic() + timeout
        self._last_claim = 0.0
        while time.monotonic() < deadline:
            n = self.flush_once(block=False)
            moved += n
            if n == 0 and not self._pending_batch:
                return moved
        return moved

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush until ``stop`` is set, retrying with exponential backoff when anything fails."""
        stop = stop or self._stop
        delay = 0.05
        while not stop.is_set():
            try:
                self.flush_once(block=True)
                delay = 0.05
            except Exception as exc:
                self.failures += 1
                log.warning("ledger flush failed (%s); retrying in %.2fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def start(self) -> LedgerFlusher:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="ducto-ledger-flusher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after its current batch) and close the Postgres connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()
