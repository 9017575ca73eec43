"""Refunds: full and partial, never more than the original, idempotent, on every backend."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import REDIS_URL, advance, drop_namespace, ledger_entries, make_store, snapshot

from ducto_redis import AsyncMemoryStore, AsyncRedisStore, MemoryStore, RedisStore
from ducto_redis.core import shard_of_tx


def in_hours(store: RedisStore, hours: float) -> datetime:
    """A time ``hours`` from the scripts' clock (the test clock offset included)."""
    return datetime.now(timezone.utc) + timedelta(hours=hours, milliseconds=store.core.clock_offset_ms)


def test_full_and_partial_refunds_with_worked_numbers(store: RedisStore) -> None:
    store.add_credits("u", 1_000, type="purchase")
    d = store.charge("u", 300, "chat")
    assert d.balance_after == 700
    r1 = store.refund_credits(d.transaction_id, 100, reason="bad answer")
    assert (r1.error, r1.amount, r1.new_balance, r1.user_id, r1.original_transaction_id) == (
        None, 100, 800, "u", d.transaction_id)
    r2 = store.refund_credits(d.transaction_id)  # all that is left: 200
    assert (r2.error, r2.amount, r2.new_balance) == (None, 200, 1_000)
    assert store.refund_credits(d.transaction_id).error == "already_refunded"
    assert store.refund_credits(d.transaction_id, 1).error == "already_refunded"
    assert store.get_balance("u").balance == 1_000
    refunds = [e for e in ledger_entries(store) if e["kind"] == "refund"]
    assert [(e["amount"], e["bal"], e["ref"], e["type"]) for e in refunds] == [
        ("100", "800", d.transaction_id, "refund"), ("200", "1000", d.transaction_id, "refund")]
    assert refunds[0]["reason"] == "bad answer" and refunds[0]["id"] == r1.refund_transaction_id


def test_a_settlement_is_refundable_up_to_the_settled_amount(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    h = store.reserve_credits("u", 400, "job")
    d = store.deduct_credits("u", h.reservation_id, 250)
    assert store.refund_credits(d.transaction_id, 251).error == "invalid_amount"
    r = store.refund_credits(d.transaction_id)
    assert (r.error, r.amount, r.new_balance) == (None, 250, 1_000)


def test_partial_refunds_add_up_to_the_original_and_never_past_it(store: RedisStore) -> None:
    store.add_credits("u", 100)
    d = store.charge("u", 10, "x")
    for _ in range(3):
        assert store.refund_credits(d.transaction_id, 3).error is None
    before = snapshot(store)
    assert store.refund_credits(d.transaction_id, 2).error == "invalid_amount"  # 1 left
    assert snapshot(store) == before
    assert store.refund_credits(d.transaction_id, 1).new_balance == 100
    assert store.refund_credits(d.transaction_id).error == "already_refunded"
    assert snapshot(store) != before
    assert sum(int(e["amount"]) for e in ledger_entries(store) if e["kind"] == "refund") == 10


def test_a_replayed_refund_returns_the_first_result_and_changes_nothing(store: RedisStore) -> None:
    store.add_credits("u", 100)
    d = store.charge("u", 40, "x")
    first = store.refund_credits(d.transaction_id, 15, idempotency_key="rf-1")
    before = snapshot(store)
    again = store.refund_credits(d.transaction_id, 15, idempotency_key="rf-1")
    assert again.idempotent and not first.idempotent
    assert again.model_dump(exclude={"idempotent"}) == first.model_dump(exclude={"idempotent"})
    assert snapshot(store) == before
    assert store.get_balance("u").balance == 75
    other = store.charge("u", 5, "x")  # the same key for another transaction is another refund
    assert store.refund_credits(other.transaction_id, 5, idempotency_key="rf-1").amount == 5
    assert store.get_balance("u").balance == 75


@pytest.mark.parametrize("which", ["random uuid", "garbage", "a credit", "a reservation", "zero settlement",
                                   "upper case", "no such shard", "braces"])
def test_unknown_transactions_are_not_found_and_nothing_is_written(store: RedisStore, which: str) -> None:
    c = store.add_credits("u", 100)
    h = store.reserve_credits("u", 10, "op")
    zero = store.deduct_credits("u", store.reserve_credits("u", 10, "op").reservation_id, 0)
    tx = {"random uuid": "0badc0de-0001-4000-8000-000000000000", "garbage": "nope", "a credit": c.transaction_id,
          "a reservation": h.reservation_id, "zero settlement": zero.transaction_id,
          "upper case": store.charge("u", 1, "x").transaction_id.upper(),
          "no such shard": "00000000-ffff-4000-8000-000000000000", "braces": "{0badc0de}-0001-4000-8000-0000000"}[which]
    before = snapshot(store)
    r = store.refund_credits(tx)
    assert (r.error, r.amount, r.original_transaction_id) == ("transaction_not_found", 0, tx)
    assert snapshot(store) == before


def test_debit_ids_carry_their_accounts_shard_and_stay_unique() -> None:
    s = MemoryStore()
    ids = set()
    for i in range(300):
        u = f"user-{i}"
        s.add_credits(u, 10)
        d = s.charge(u, 1, "x")
        h = s.reserve_credits(u, 2, "x", min_balance=0)
        settled = s.deduct_credits(u, h.reservation_id, 1)
        for tx in (d.transaction_id, settled.transaction_id):
            assert shard_of_tx(tx, s.settings.shards) == s.core.keys.user(u).shard
            ids.add(tx)
    assert len(ids) == 600


def test_refunds_within_the_window_only(redis_client: Any) -> None:
    store = make_store("memory", redis_client, refund_window_seconds=0)
    store.add_credits("u", 100)
    d = store.charge("u", 10, "x")
    assert store.refund_credits(d.transaction_id).error == "transaction_not_found"
    windowed = make_store("memory", redis_client, refund_window_seconds=60)
    windowed.add_credits("u", 100)
    d = windowed.charge("u", 10, "x")
    key = windowed.core.keys.user("u").refundable(d.transaction_id)
    assert 0 < windowed.client.pttl(key) <= 60_000  # the record expires with the window


def test_charge_many_debits_are_refundable(store: RedisStore) -> None:
    for u in ("a", "b", "c"):
        store.add_credits(u, 50)
    results = store.charge_many([{"user_id": u, "amount": 20, "operation_type": "x"} for u in ("a", "b", "c")])
    for u, d in zip(("a", "b", "c"), results, strict=True):
        r = store.refund_credits(d.transaction_id)
        assert (r.user_id, r.amount, r.new_balance) == (u, 20, 50)


def test_refund_of_a_debit_that_spent_an_expiring_grant_returns_it_to_the_grant(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.add_credits("u", 50, type="promo", expires_at=in_hours(store, 1))
    d = store.charge("u", 80, "x")  # 50 from the grant, 30 ordinary
    assert store.refund_credits(d.transaction_id, 30).new_balance == 100  # ordinary credits back first
    assert store.refund_credits(d.transaction_id, 20).new_balance == 120  # then the grant's part
    advance(store, 2 * 3600)
    assert store.get_balance("u").balance == 100  # the 20 returned to the grant expired with it
    r = store.refund_credits(d.transaction_id)  # the last 30 go back to the expired grant: they leave at once
    assert (r.error, r.amount, r.new_balance) == (None, 30, 100)
    assert store.get_balance("u").balance == 100
    # the refund first expired the grant's 20 lazily, then credited 30 that left again at once
    tail = [(e["kind"], e["amount"], e.get("reason", "")) for e in ledger_entries(store)][-3:]
    assert tail == [("expire", "-20", "credit_expired"), ("refund", "30", ""), ("expire", "-30", "credit_expired")]
    assert store.sweep_expired_credits().expired_count == 0
    assert store.get_balance("u").balance == 100


def test_a_grant_expiring_twice_at_the_same_remainder_gets_two_distinct_ledger_entries(store: RedisStore) -> None:
    store.add_credits("u", 5)
    store.add_credits("u", 20, expires_at=in_hours(store, 1))
    d = store.charge("u", 20, "x")  # all from the grant
    store.refund_credits(d.transaction_id, 10)  # 10 back into the grant
    advance(store, 7200)
    r = store.refund_credits(d.transaction_id)  # the first 10 expire, 10 more come back and expire
    assert (r.amount, r.new_balance) == (10, 5)
    expiries = [e for e in ledger_entries(store) if e.get("reason") == "credit_expired"]
    assert [e["amount"] for e in expiries] == ["-10", "-10"]
    ids = [e["id"] for e in ledger_entries(store)]
    assert len(ids) == len(set(ids))  # the Postgres primary key keeps every entry


def test_racing_refunds_from_8_threads_never_exceed_the_original(redis_client: Any) -> None:
    store = make_store("redis", redis_client)
    try:
        store.add_credits("u", 1_000)
        d = store.charge("u", 100, "x")
        got: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(20):
                r = store.refund_credits(d.transaction_id, 7)
                if r.error is None:
                    with lock:
                        got.append(r.amount)
                else:
                    assert r.error in ("invalid_amount", "already_refunded")

        ts = [threading.Thread(target=work) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sum(got) == 98  # 14 refunds of 7; a 15th would pass the original
        assert store.refund_credits(d.transaction_id).amount == 2
        assert store.get_balance("u").balance == 1_000
        assert sum(int(e["amount"]) for e in ledger_entries(store) if e["kind"] == "refund") == 100
    finally:
        drop_namespace(store.client, store.settings.namespace)
        store.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_async_store_refunds_and_sweeps_like_the_sync_one(backend: str, redis_client: Any) -> None:
    if backend == "memory":
        sync: RedisStore = MemoryStore("ns")
        aio: AsyncRedisStore = AsyncMemoryStore("ns", server=sync.server)  # type: ignore[attr-defined]
    else:
        sync = make_store("redis", redis_client)
        aio = AsyncRedisStore.from_url(REDIS_URL, namespace=sync.settings.namespace)

    async def run() -> None:
        await aio.add_credits("u", 100)
        await aio.add_credits("u", 20, expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
        d = await aio.charge("u", 30, "x")  # 20 from the grant, 10 ordinary
        r = await aio.refund_credits(d.transaction_id, 15, idempotency_key="k")
        assert (r.amount, r.new_balance, r.user_id) == (15, 105, "u")
        assert (await aio.refund_credits(d.transaction_id, 15, idempotency_key="k")).idempotent
        aio.core.clock_offset_ms = 2 * 3600 * 1000
        dry = await aio.sweep_expired_credits(dry_run=True)
        assert (dry.expired_count, dry.expired_amount) == (1, 5)  # the grant's 5 given back
        assert (await aio.sweep_expired_credits()).expired_amount == 5
        if backend == "redis":
            await aio.close()

    try:
        asyncio.run(run())
        assert sync.get_balance("u").balance == 100
    finally:
        if backend == "redis":
            drop_namespace(sync.client, sync.settings.namespace)
            sync.close()
