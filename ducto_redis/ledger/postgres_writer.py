"""The PostgreSQL side of the flusher: the schema, and writing a batch exactly once — COPY
straight in, or the idempotent path (a temporary table, ``ON CONFLICT DO NOTHING``), and when a
row is refused, the quarantine (``quarantine.py``)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from ..validation import check_schema_name
from .copy_text import COPY_COLUMNS
from .quarantine import TooManyRefused, is_row_refusal, sift

if TYPE_CHECKING:
    from .flusher import Batch


def schema_sql(schema: str) -> str:
    """The DDL of the ledger in ``schema`` (a name checked by ``check_schema_name``: it goes into SQL)."""
    text = (resources.files("ducto_redis.ledger") / "schema.sql").read_text(encoding="utf-8")
    return text.replace("{schema}", check_schema_name(schema))


def migrate(database_url: str, schema: str) -> None:
    """Create the ledger schema, table and indexes (idempotent)."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute(schema_sql(schema))


class PostgresWriter:
    """The PostgreSQL side of :class:`~ducto_redis.ledger.flusher.LedgerFlusher` (a mixin: it uses
    the flusher's database URL, schema and namespace)."""

    database_url: str
    schema: str
    namespace: str
    fallbacks: int
    quarantined: int
    _conn: Any
    _staged: bool
    _schema_ready: bool

    def prepare_schema(self) -> None:
        """Create the ledger schema once (``create_schema``): ``run`` and ``drain`` call it first, so
        a flusher started while Postgres is away waits for it (with backoff) instead of failing."""
        if not self._schema_ready:
            migrate(self.database_url, self.schema)
            self._schema_ready = True

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=3)
            self._staged = False
        return self._conn

    def _write(self, batch: Batch) -> None:
        """Store the batch in one transaction (see the module docstring for the two paths)."""
        import psycopg

        payload = batch.prepare(self.namespace).payload
        assert payload is not None
        conn = self._connection()
        columns = ", ".join(COPY_COLUMNS)
        refused = False
        with conn.cursor() as cur:
            if batch.fresh:
                try:
                    with cur.copy(f"COPY {self.schema}.ledger ({columns}) FROM STDIN (NULL '')") as copy:
                        copy.write(payload)
                    conn.commit()
                    return
                except psycopg.errors.UniqueViolation:
                    conn.rollback()
                    self.fallbacks += 1
                except psycopg.Error as exc:
                    if not is_row_refusal(exc):
                        raise
                    conn.rollback()
                    refused = True
            if not refused:
                try:
                    self._store_idempotently(cur, payload)
                except psycopg.Error as exc:
                    if not is_row_refusal(exc):
                        raise
                    conn.rollback()
                    self._staged = False  # a temporary table made in that transaction is gone
                    refused = True
            if refused:  # find the refused row(s); store the rest
                self._ensure_stage(cur)  # outside the savepoints, so one refused part cannot drop it
                lines = [line + b"\n" for line in payload.split(b"\n")[:-1]]
                try:
                    self.quarantined += sift(conn, self.schema, lines, lambda part: self._store_idempotently(cur, part))
                except TooManyRefused:
                    conn.rollback()
                    self._staged = False
                    raise
        conn.commit()

    def _ensure_stage(self, cur: Any) -> None:
        if not self._staged:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS ledger_stage "
                        f"(LIKE {self.schema}.ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            self._staged = True

    def _store_idempotently(self, cur: Any, payload: bytes) -> None:
        """COPY into a temporary table, then INSERT what is not stored yet (the replay-safe path)."""
        columns = ", ".join(COPY_COLUMNS)
        self._ensure_stage(cur)
        with cur.copy(f"COPY ledger_stage ({columns}) FROM STDIN (NULL '')") as copy:
            copy.write(payload)
        cur.execute(f"INSERT INTO {self.schema}.ledger ({columns}) SELECT {columns} "
                    f"FROM ledger_stage ON CONFLICT (namespace, entry_id) DO NOTHING")
        cur.execute("DELETE FROM ledger_stage")
