"""Where ledger rows are kept: PostgreSQL (the flusher's) or SQLite (MemoryStore's embedded ledger).

Both hold the same table — one row per ledger entry, the columns of ``copy_text.COLUMNS`` — and
every query over it is written ONCE, in SQL both accept (``?`` placeholders, ``{table}`` for the
table's name): the analytics (``queries.py``), restore's read (:meth:`LedgerDatabase.restore_rows`)
and the lookup of one entry (:meth:`LedgerDatabase.entry`). Two details make one text fit both:

* ``ts`` is compared with parameters written as ``YYYY-MM-DD HH:MM:SS.mmm+00`` (:func:`ts_param`):
  PostgreSQL reads that as a ``timestamptz``; SQLite stores ``ts`` as exactly that text (what the
  flusher's COPY rows hold), so its text order is time order;
* the UTC day of an entry is ``substr(CAST(ts AS TEXT), 1, 10)``: the text SQLite stores, and
  PostgreSQL's text of a ``timestamptz`` in a session set to UTC (each connection is).

A row read back is a dict by column name with the same Python types from either database
(``ts`` an aware datetime, ``metadata``/``extra`` decoded JSON, numbers as ints).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from .copy_text import COLUMNS, COPY_COLUMNS, copy_rows

INTEGER_COLUMNS = frozenset({"shard", "stream_ms", "stream_seq", "amount", "balance_after", "held_after", "hold",
                             "expires_ms"})
JSON_COLUMNS = frozenset({"metadata", "extra"})

RESTORE_SQL = ("SELECT * FROM {table} WHERE namespace = ? "
               "ORDER BY account_kind, account_id, shard, stream_ms, stream_seq")
ACCOUNTS_SQL = ("SELECT COUNT(*) FROM (SELECT DISTINCT account_kind, account_id FROM {table} "
                "WHERE namespace = ? AND account_kind <> 'p') AS accounts")
ENTRY_SQL = "SELECT * FROM {table} WHERE namespace = ? AND entry_id = ?"


def ts_param(moment: datetime) -> str:
    """A moment as the ledger's time text, ``YYYY-MM-DD HH:MM:SS.mmm+00`` (naive = UTC), rounded UP
    to the millisecond: entries carry milliseconds, so ``ts >= ts_param(t)`` holds exactly for the
    entries at or after ``t`` (and ``ts < ts_param(t)`` for those before it)."""
    t = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    ms = math.ceil(t.microsecond / 1000)
    t = t.replace(microsecond=0) + timedelta(milliseconds=ms)
    return f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}+00"


def _ts_value(text: str) -> datetime:
    """The ledger's time text back as an aware datetime (``+00`` is UTC)."""
    return datetime.fromisoformat(text + ":00" if text.endswith("+00") else text)


class LedgerReader(Protocol):
    """Finds one ledger entry by id: what a refund needs when the entry has left the Redis stream."""

    def entry(self, namespace: str, entry_id: str) -> dict[str, Any] | None:
        """The entry's row (columns by name; ``None`` when the ledger has no such entry)."""
        ...


class LedgerDatabase:
    """A database holding the ledger table; subclasses only connect and run SQL.

    Every statement is written once with ``?`` placeholders and ``{table}`` (see the module
    docstring); :meth:`rows` and :meth:`dict_rows` run it on this database.
    """

    table = "ledger"
    kind = "ledger"

    @property
    def label(self) -> str:
        """Where the rows are, in words (for log lines)."""
        return f"{self.kind} table {self.table}"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query (tuples)."""
        raise NotImplementedError

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """The rows of a query as dicts by column, with the same Python types from either database."""
        raise NotImplementedError

    def entry(self, namespace: str, entry_id: str) -> dict[str, Any] | None:
        """One entry by id (:class:`LedgerReader`)."""
        return next(self.dict_rows(ENTRY_SQL, (namespace, entry_id)), None)

    def restore_rows(self, namespace: str) -> Iterator[dict[str, Any]]:
        """Every row of a namespace, account by account, each account's in stream order (restore)."""
        return self.dict_rows(RESTORE_SQL, (namespace,))

    def count_accounts(self, namespace: str) -> int:
        """How many accounts (users and teams) the namespace's rows name."""
        found = self.rows(ACCOUNTS_SQL, (namespace,))
        return int(found[0][0]) if found else 0


class PostgresLedger(LedgerDatabase):
    """The flusher's ledger table in PostgreSQL (``{schema}.ledger``); one connection per query."""

    kind = "postgres"

    @property
    def label(self) -> str:
        return f"PostgreSQL table {self.table}"

    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.table = f"{schema}.ledger"

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.database_url)
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def _sql(self, sql: str) -> str:
        return sql.format(table=self.table).replace("?", "%s")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            return list(conn.execute(self._sql(sql), tuple(params)).fetchall())

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._connect() as conn, conn.cursor(name="ducto_ledger_read", row_factory=dict_row) as cur:
            cur.itersize = 5000
            cur.execute(self._sql(sql), tuple(params))
            yield from cur


def sqlite_schema(table: str = "ledger") -> str:
    """The SQLite DDL of the ledger table: PostgreSQL's columns, ``ts`` as its COPY text."""
    cols = []
    for c in COLUMNS:
        kind = "INTEGER" if c in INTEGER_COLUMNS else "TEXT"
        null = " PRIMARY KEY" if c == "entry_id" else (
            " NOT NULL" if c in ("namespace", "shard", "stream_ms", "stream_seq", "ts", "account_kind",
                                 "account_id", "kind") else "")
        cols.append(f"{c} {kind}{null}")
    return (f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)});\n"
            f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (namespace, ts);\n")


class SqliteLedger(LedgerDatabase):
    """The ledger table in SQLite: in memory (``path`` None) or a file that outlives the process.

    A file is opened in WAL mode with ``synchronous=FULL``: a committed entry survives a crash of
    the process and of the machine. One connection, shared by the threads of the process (a lock
    serializes its use).
    """

    kind = "sqlite"

    @property
    def label(self) -> str:
        return f"SQLite {self.path or 'in memory'}"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None)
        if self.path:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(sqlite_schema(self.table))

    def close(self) -> None:
        """Close the database (a file keeps every committed entry)."""
        with self._lock:
            self._conn.close()

    def append(self, payload: bytes) -> int:
        """Store the entries of a COPY text payload in one transaction; returns how many.

        Each entry is inserted once: an id already stored is a bug upstream, and raises
        (``sqlite3.IntegrityError``) with nothing of the payload stored.
        """
        rows = copy_rows(payload)
        if not rows:
            return 0
        sql = (f"INSERT INTO {self.table} ({', '.join(COPY_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(COPY_COLUMNS))})")
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(rows)

    def last_stream_ids(self, namespace: str) -> dict[int, tuple[int, int]]:
        """Per shard, the last stream id (ms, seq) the ledger holds for a namespace."""
        found = self.rows("SELECT shard, stream_ms, MAX(stream_seq) FROM {table} AS l WHERE namespace = ? "
                          "AND stream_ms = (SELECT MAX(stream_ms) FROM {table} WHERE namespace = l.namespace "
                          "AND shard = l.shard) GROUP BY shard, stream_ms", (namespace,))
        return {int(shard): (int(ms), int(seq)) for shard, ms, seq in found}

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql.format(table=self.table), tuple(params)).fetchall()

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql.format(table=self.table), tuple(params))
            names = [d[0] for d in cur.description]
        while True:
            with self._lock:
                chunk = cur.fetchmany(5000)
            if not chunk:
                return
            for values in chunk:
                row = dict(zip(names, values, strict=True))
                if isinstance(row.get("ts"), str):
                    row["ts"] = _ts_value(row["ts"])
                for c in JSON_COLUMNS & row.keys():
                    if isinstance(row[c], str):
                        row[c] = json.loads(row[c])
                yield row
