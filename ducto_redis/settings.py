"""One settings model, read from ``DUCTO_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .validation import MAX_TTL_SECONDS, SCHEMA_NAME_PATTERN

DEFAULT_MIN_BALANCE = 5
"""ducto's floor: what a reservation leaves available when no ``min_balance`` is given (the default of
``Settings.default_min_balance``) and a pricing config's ``min_balance`` when it names none."""


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
    - ``ledger_schema``: the Postgres schema of the ledger table.
    - ``ledger_file``: MemoryStore only: the SQLite file its embedded ledger is kept in (default:
      in memory); a MemoryStore started with a file holding entries rebuilds its state from them.
    - ``ledger_max_backlog``: unflushed ledger entries per shard before the policy applies (0 = no limit).
    - ``default_min_balance``: the floor ``reserve_credits`` keeps available when its ``min_balance`` is
      left out, and ``CreditManager``'s without a pricing engine (ducto's 5).
    - ``ledger_backlog_policy``: ``closed`` refuses new holds and debits past the limit
      (``ledger_backlog_full``); ``open`` keeps accepting them.
    - ``fail_mode``: what the HTTP service and ``CreditMiddleware`` answer when Redis cannot be
      reached or does not answer within ``decision_timeout_ms``: ``closed`` (503 with ``Retry-After``)
      or ``open`` (let the request through, counted in the metrics).
    - ``decision_timeout_ms``: the longest a gateway decision waits for Redis (connect and reply).
    - ``service_host`` / ``service_port`` / ``service_workers``: where ``ducto-redis serve`` listens.
    - ``service_tokens``: comma-separated bearer tokens of the service's API; none = the service
      listens on loopback only.
    - ``routes_file``: the route table (JSON, or YAML with PyYAML) of forward-auth and the middleware.
    - ``account_header``: the request header holding the account (API key) in forward-auth.
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
    ledger_schema: str = Field(default="ducto", pattern=SCHEMA_NAME_PATTERN)
    ledger_file: str | None = None
    ledger_max_backlog: int = Field(default=0, ge=0)
    ledger_backlog_policy: Literal["closed", "open"] = "closed"
    default_min_balance: int = Field(default=DEFAULT_MIN_BALANCE, ge=0)
    fail_mode: Literal["closed", "open"] = "closed"
    decision_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    service_host: str = "127.0.0.1"
    service_port: int = Field(default=8080, ge=0, le=65535)
    service_workers: int = Field(default=1, ge=1, le=64)
    service_tokens: str = ""
    routes_file: str | None = None
    account_header: str = Field(default="X-API-Key", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")

    def bearer_tokens(self) -> frozenset[str]:
        """The service's bearer tokens (``service_tokens`` split on commas, blanks dropped)."""
        return frozenset(t.strip() for t in self.service_tokens.split(",") if t.strip())


def _config_text(settings: Settings, clock_offset_ms: int) -> str:
    return (f"{clock_offset_ms}|{settings.idempotency_ttl_seconds}|{settings.events_maxlen}|"
            f"{settings.ledger_max_backlog}|{settings.ledger_backlog_policy}")


DEFAULT_SCRIPT_CONFIG = _config_text(Settings.model_construct(), 0)
"""The scripts' configuration on the default settings (no ``DUCTO_*`` variable read), clock offset 0:
the function library holds it (scripts.py puts it there as ``DEFAULT_CONFIG``)."""


def script_config(settings: Settings, clock_offset_ms: int = 0) -> str:
    """Every script's ``config`` argument (lua/lib/01_base.lua ``config``):
    ``offset|idempotency TTL s|events max length|ledger backlog limit|policy`` — or ``""`` when that
    is :data:`DEFAULT_SCRIPT_CONFIG`: a store on the defaults sends nothing there, and a script whose
    ``config`` is optional is sent one value fewer (each costs Redis ~1 600 instructions)."""
    text = _config_text(settings, clock_offset_ms)
    return "" if text == DEFAULT_SCRIPT_CONFIG else text


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments actually given (not None): they override the environment's settings,
    and an argument left out keeps the ``DUCTO_*`` value (as the CLI does)."""
    return {k: v for k, v in values.items() if v is not None}
