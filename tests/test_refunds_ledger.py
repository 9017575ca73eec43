"""Restore and reconcile after refunds and expiring grants (real Redis, real PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from conftest import DATABASE_URL, advance, drop_namespace, restorable_state

from ducto_redis import RedisStore
from ducto_redis.ledger.flusher import LedgerFlusher


def comparable(store: RedisStore) -> dict[str, Any]:
    """The namespace's state by meaning (conftest.restorable_state); the grant index may keep stale
    entries (dropped by the next sweep): see below."""
    return restorable_state(store, skip=(":gexp",))


def test_restore_after_refunds_and_expiring_grants_rebuilds_the_same_state(
    ledger_store: RedisStore,
) -> None:
    s = ledger_store

    def soon(hours: float) -> datetime:
        return datetime.now(timezone.utc) + timedelta(hours=hours, milliseconds=s.core.clock_offset_ms)

    s.add_credits("a", 100, type="purchase")
    s.add_credits("a", 60, expires_at=soon(1))
    s.add_credits("a", 40, expires_at=soon(48))
    d1 = s.charge("a", 70, "x")  # 60 from the 1 h grant, 10 from the 48 h one
    s.refund_credits(d1.transaction_id, 25, idempotency_key="r1")  # 10 into the 48 h grant, 15 into the 1 h one
    s.add_credits("b", 30, expires_at=soon(1))
    h = s.reserve_credits("b", 10, "job", min_balance=0, ttl_seconds=7200)
    s.add_credits("c", 500)
    d3 = s.charge("c", 50, "x")
    advance(s, 3700)
    assert s.sweep_expired_credits().expired_amount == 15 + 20  # a's 15; b's 20 not held (10 pinned)
    s.deduct_credits("b", h.reservation_id, 4)
    s.refund_credits(d3.transaction_id, 1)
    d4 = s.charge("c", 9, "x")
    s.core.clock_offset_ms = 0  # restore uses the real clock: keep the scripts' state comparable
    LedgerFlusher(s, DATABASE_URL).drain()
    assert s.reconcile_with_ledger() == {}
    before = comparable(s)
    drop_namespace(s.client, s.settings.namespace)
    assert s.restore_from_ledger() == 3
    assert comparable(s) == before
    assert s.reconcile_with_ledger() == {}
    for u in ("a", "b", "c"):  # every account with a grant is in its shard's index at its earliest expiry
        k = s.core.keys.user(u)
        gx = s.client.hget(k.account, "gx")
        assert (gx and int(s.client.zscore(k.grant_index, u))) == (gx and int(gx))
    # decisions carry on: restored refund records remember what was refunded, and what was not
    assert s.refund_credits(d1.transaction_id).error == "already_refunded"
    assert s.refund_credits(d3.transaction_id).error == "already_refunded"
    assert (s.refund_credits(d4.transaction_id).amount, s.get_balance("c").balance) == (9, 451)
    # 100 ordinary + the 48 h grant's 40: the 15 refunded into the 1 h grant left with it
    assert s.get_balance("a").balance == 140
