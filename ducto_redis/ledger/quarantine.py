"""The quarantine: ledger entries PostgreSQL refuses, set aside so they never hold back the others.

The first line of defence is validation (``ducto_redis/validation.py``): nothing PostgreSQL cannot
store enters Redis through the store. An entry can still reach a stream another way (another
client's XADD, an older version's rows, a bug). When PostgreSQL refuses a row of a batch (a data
error — bad encoding, a NUL, a number that is not one, invalid JSON —, a constraint other than the
primary key, an index row too large), the flusher finds the refused row(s) by halving the batch
(:func:`sift`: about 2·log2(n) COPYs for one bad row in n, every other row stored in the same
transaction), writes each refused entry here — the same columns as the ledger, as far as they can be
read, plus PostgreSQL's reason and the raw COPY line — and acknowledges it like the rest.
``ducto-redis status`` (:func:`quarantine_summary`) reports how many there are.

A batch where most rows are refused is not quarantined: that is a broken table or schema, not a
poison entry, and the flusher stops and retries (with backoff, logging why) instead of setting the
whole ledger aside.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .copy_text import COPY_COLUMNS, line_position, line_values

log = logging.getLogger("ducto_redis.flusher")

INT_COLUMNS = frozenset({"shard", "stream_ms", "stream_seq", "stream_row", "amount", "balance_after", "held_after",
                         "hold", "expires_ms"})
JSON_COLUMNS = frozenset({"metadata", "extra"})
POSITION = ("namespace", "shard", "stream_ms", "stream_seq", "stream_row")
BIGINT = 2**63 - 1


class TooManyRefused(RuntimeError):
    """Most rows of a batch were refused: a broken table, not poison entries (nothing quarantined)."""


def is_row_refusal(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the data of a row (retrying cannot help), not the connection:
    SQLSTATE class 22 (data exception), 23 but the primary key (23505, a replay: handled apart),
    54 (program limit exceeded: an index row too large)."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("22", "54") or (state[:2] == "23" and state != "23505")


def _text(v: bytes) -> str:
    return v.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _value(column: str, v: bytes | None) -> Any:
    """A column's value as PostgreSQL will take it, or None when it cannot be read."""
    if v is None:
        return None
    if column in INT_COLUMNS:
        try:
            n = int(v)
        except ValueError:
            return None
        return n if -BIGINT <= n <= BIGINT else None
    if column == "ts":
        try:
            return datetime.fromisoformat(v.decode().replace("+00", "+00:00", 1) if v.endswith(b"+00") else v.decode())
        except (ValueError, UnicodeDecodeError):
            return None
    if column in JSON_COLUMNS:
        try:
            json.loads(v)
        except ValueError:
            return None
        text = v.decode("utf-8")
        return None if "\\u0000" in text else text
    return _text(v)


def quarantine_values(line: bytes) -> dict[str, Any]:
    """Every column of a refused COPY line that can be read, for the quarantine table."""
    values = {c: _value(c, v) for c, v in line_values(line).items()}
    ns, shard, ms, seq, row = line_position(line)
    values.update(namespace=ns, shard=shard, stream_ms=ms, stream_seq=seq, stream_row=row)
    return values


def _insert(cur: Any, schema: str, values: dict[str, Any], reason: str, line: bytes) -> None:
    cols = [c for c in COPY_COLUMNS if c in values]
    names = ", ".join([*cols, "refused_because", "raw"])
    marks = ", ".join(["%s::jsonb" if c in JSON_COLUMNS else "%s" for c in cols] + ["%s", "%s"])
    cur.execute(f"INSERT INTO {schema}.ledger_quarantine ({names}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(POSITION)}) DO NOTHING", [*(values[c] for c in cols), reason, line])


def quarantine(conn: Any, schema: str, line: bytes, reason: str) -> None:
    """Keep one refused entry: every readable column, or (should even that be refused) its position
    only; the raw line and the reason always. In a savepoint of the caller's transaction."""
    with conn.cursor() as cur:
        try:
            with conn.transaction():
                _insert(cur, schema, quarantine_values(line), reason, line)
        except Exception as exc:
            if not is_row_refusal(exc):
                raise
            ns, shard, ms, seq, row = line_position(line)
            _insert(cur, schema, {"namespace": _text(ns.encode()), "shard": shard, "stream_ms": ms,
                                  "stream_seq": seq, "stream_row": row}, reason, line)
    ns, shard, ms, seq, row = line_position(line)
    log.error("ledger entry %d-%d (row %d) of shard %d (namespace %s) quarantined in %s.ledger_quarantine: %s",
              ms, seq, row, shard, ns, schema, reason)


def sift(conn: Any, schema: str, lines: list[bytes], store: Callable[[bytes], None]) -> int:
    """Store every line PostgreSQL takes (``store`` writes a payload idempotently) and quarantine each
    it refuses, halving the refused parts; each part in a savepoint. Returns the entries quarantined.
    Raises :class:`TooManyRefused` (rolling nothing back itself) when more than half of a batch of
    over ten rows is refused."""
    refused: list[tuple[bytes, str]] = []
    limit = max(10, len(lines) // 2)
    parts = [lines]
    while parts:
        part = parts.pop()
        try:
            with conn.transaction():
                store(b"".join(part))
        except Exception as exc:
            if not is_row_refusal(exc):
                raise
            if len(part) > 1:
                mid = len(part) // 2
                parts += [part[mid:], part[:mid]]
                continue
            refused.append((part[0], str(exc).strip().splitlines()[0]))
            if len(refused) > limit:
                raise TooManyRefused(f"PostgreSQL refused over {limit} of {len(lines)} rows of one batch "
                                     f"(last: {refused[-1][1]}): check the ledger table") from exc
    for line, reason in refused:
        quarantine(conn, schema, line, reason)
    return len(refused)


@dataclass
class QuarantineSummary:
    """How many entries of a namespace are quarantined, and the latest one's reason."""

    count: int = 0
    latest_reason: str | None = None
    latest_at: datetime | None = None


def quarantine_summary(database_url: str, schema: str, namespace: str) -> QuarantineSummary:
    """The quarantine of one namespace (none when the table does not exist yet)."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.ledger_quarantine",)).fetchone()
        if not exists or exists[0] is None:
            return QuarantineSummary()
        row = conn.execute(
            f"SELECT COUNT(*), (array_agg(refused_because ORDER BY quarantined_at DESC))[1], MAX(quarantined_at) "
            f"FROM {schema}.ledger_quarantine WHERE namespace = %s", (namespace,)).fetchone()
    if not row:
        return QuarantineSummary()
    return QuarantineSummary(int(row[0]), row[1], row[2])
