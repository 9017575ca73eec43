"""Restore sets an account's quantity limits again from the ledger (real Redis, real PostgreSQL)."""

from __future__ import annotations

from conftest import DATABASE_URL, drop_namespace

from ducto_redis import RedisStore
from ducto_redis.ledger.flusher import LedgerFlusher


def test_restore_rebuilds_quantity_limits(ledger_store: RedisStore) -> None:
    s = ledger_store
    s.add_credits("u", 1_000)
    s.set_quantity_limit("u", "tokens", 1_000, period_seconds=60)
    s.set_quantity_limit("u", "tokens", 100, period_seconds=60, model="gpt-4o")
    s.set_quantity_limit("u", "images", 5, period_seconds=60)
    s.set_quantity_limit("u", "images", None)
    LedgerFlusher(s, DATABASE_URL).drain()
    limits = s.client.hget(s.core.keys.user("u").account, "ql")
    drop_namespace(s.client, s.settings.namespace)
    s.restore_from_ledger()
    assert s.client.hget(s.core.keys.user("u").account, "ql") == limits
    gpt = {"model": "gpt-4o"}
    assert s.charge("u", 1, "chat", metadata=gpt, quantities={"tokens": 101}).error == "rate_limited"
    assert s.charge("u", 1, "chat", quantities={"tokens": 1_000}).error is None
    assert s.charge("u", 1, "chat", quantities={"images": 50}).error is None  # removed before the loss
    LedgerFlusher(s, DATABASE_URL).drain()
    assert s.reconcile_with_ledger() == {}
