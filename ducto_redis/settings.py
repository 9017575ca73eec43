"""One settings model, read from ``DUCTO_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .validation import MAX_TTL_SECONDS, SCHEMA_NAME_PATTERN


class Settings(BaseSettings):
    """Configuration of a store. Every field can be set as ``DUCTO_<FIELD>`` in the environment.

    - ``redis_url`` (``DUCTO_REDIS_URL``): where the hot state lives.
    - ``database_url`` (``DUCTO_DATABASE_URL``): the Postgres ledger (flusher, analytics, restore).
    - ``namespace``: prefix of every key; two namespaces on one Redis never see each other.
    - ``shards``: number of ledger shards (each one hash tag, one stream). Fixed for a namespace's life.
    - ``hold_ttl_seconds``: a reservation not settled or released by then returns its credits.
    - ``idempotency_ttl_seconds``: how long a replayed idempotency key returns the first result.
    - ``events_maxlen``: approximate length the events stream is trimmed to.
    - ``auto_batch_ms``: async store only; when > 0, concurrent calls made within this window
      (milliseconds, at most 1 by default design) are sent together in one pipeline round trip.
    - ``refund_window_seconds``: how long a debit stays refundable by ``refund_credits`` (its refund
      record in Redis, ~100 bytes per debit, lives this long: memory ≈ 100 B × debits/s × window;
      default one day, like idempotency keys; 0 = debits are not refundable).
    - ``ledger_schema``: the Postgres schema of the ledger table.
    - ``ledger_file``: MemoryStore only: the SQLite file its embedded ledger is kept in (default:
      in memory); a MemoryStore started with a file holding entries rebuilds its state from them.
    - ``ledger_max_backlog``: unflushed ledger entries per shard before the policy applies (0 = no limit).
    - ``ledger_backlog_policy``: ``closed`` refuses new holds and debits past the limit
      (``ledger_backlog_full``); ``open`` keeps accepting them.
    """

    model_config = SettingsConfigDict(env_prefix="DUCTO_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str | None = None
    namespace: str = Field(default="ducto", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    shards: int = Field(default=64, ge=1, le=16384)
    hold_ttl_seconds: int = Field(default=600, ge=1, le=MAX_TTL_SECONDS)
    idempotency_ttl_seconds: int = Field(default=86400, ge=1, le=365 * 86400)
    events_maxlen: int = Field(default=100_000, ge=100)
    auto_batch_ms: float = Field(default=0.0, ge=0.0, le=50.0)
    auto_batch_max: int = Field(default=512, ge=1, le=10_000)
    refund_window_seconds: int = Field(default=86400, ge=0, le=366 * 86400)
    ledger_schema: str = Field(default="ducto", pattern=SCHEMA_NAME_PATTERN)
    ledger_file: str | None = None
    ledger_max_backlog: int = Field(default=0, ge=0)
    ledger_backlog_policy: Literal["closed", "open"] = "closed"
    default_min_balance: int = Field(default=5, ge=0)


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments actually given (not None): they override the environment's settings,
    and an argument left out keeps the ``DUCTO_*`` value (as the CLI does)."""
    return {k: v for k, v in values.items() if v is not None}
