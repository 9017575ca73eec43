"""Ledger-facing store methods, mixed into RedisStore (flusher control, lag, analytics)."""

from __future__ import annotations


class LedgerStoreMixin:
    """Methods of the store that reach the Postgres ledger."""
