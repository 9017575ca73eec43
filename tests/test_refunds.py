"""Refunds: full and partial, never more than the original, idempotent, on every backend."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import REDIS_URL, advance, drop_namespace, ledger_entries, make_store, snapshot

from ducto_redis import AsyncMemoryStore, AsyncRedisStore, InvalidInputError, MemoryStore, RedisStore
from ducto_redis.layout import parse_tx_id


def in_hours(store: RedisStore, hours: float) -> datetime:
    """A time ``hours`` from the scripts' clock (the test clock offset included)."""
    return datetime.now(timezone.utc) + timedelta(hours=hours, milliseconds=store.core.clock_offset_ms)


def test_a_debit_is_refunded_once_in_full_or_in_part_with_worked_numbers(store: RedisStore) -> None:
    store.add_credits("u", 1_000, type="purchase")
    d = store.charge("u", 300, "chat")
    assert d.balance_after == 700
    r1 = store.refund_credits(d.transaction_id, 100, reason="bad answer")
    assert (r1.error, r1.amount, r1.new_balance, r1.user_id, r1.original_transaction_id) == (
        None, 100, 800, "u", d.transaction_id)
    # once, as in ducto: the rest of a partly refunded debit is not refundable later
    assert (store.refund_credits(d.transaction_id).error, store.get_balance("u").balance) == ("already_refunded", 800)
    assert store.refund_credits(d.transaction_id, 1).error == "already_refunded"
    d2 = store.charge("u", 50, "chat")
    r2 = store.refund_credits(d2.transaction_id)  # in full
    assert (r2.error, r2.amount, r2.new_balance) == (None, 50, 800)
    assert store.refund_credits(d2.transaction_id).error == "already_refunded"
    refunds = [e for e in ledger_entries(store) if e["kind"] == "refund"]
    assert [(e["amount"], e["bal"], e["ref"], e["type"]) for e in refunds] == [
        ("100", "800", d.transaction_id, "refund"), ("50", "800", d2.transaction_id, "refund")]
    assert refunds[0]["reason"] == "bad answer" and refunds[0]["id"] == r1.refund_transaction_id


def test_a_settlement_is_refundable_up_to_the_settled_amount(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    h = store.reserve_credits("u", 400, "job")
    d = store.deduct_credits("u", h.reservation_id, 250)
    assert store.refund_credits(d.transaction_id, 251).error == "invalid_amount"
    r = store.refund_credits(d.transaction_id)
    assert (r.error, r.amount, r.new_balance) == (None, 250, 1_000)


def test_a_second_refund_and_a_refund_past_the_original_write_nothing(store: RedisStore) -> None:
    store.add_credits("u", 100)
    d = store.charge("u", 10, "x")
    before = snapshot(store)
    assert store.refund_credits(d.transaction_id, 11).error == "invalid_amount"  # more than the debit
    assert snapshot(store) == before
    assert store.refund_credits(d.transaction_id, 3).new_balance == 93
    after = snapshot(store)
    for amount in (3, 1, None):  # a retried partial refund pays nothing more
        assert store.refund_credits(d.transaction_id, amount).error == "already_refunded"
    assert snapshot(store) == after
    assert sum(int(e["amount"]) for e in ledger_entries(store) if e["kind"] == "refund") == 3


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


def test_a_refund_for_one_user_refuses_any_other_accounts_debit_and_writes_nothing(store: RedisStore) -> None:
    store.add_credits("a", 100)
    store.add_credits("b", 100)
    team = store.create_team("pool", 100).team_id
    store.add_team_member(team, "a")
    theirs, pooled = store.charge("b", 10, "x"), store.deduct_team(team, "a", 10)
    store.refund_credits(store.charge("b", 1, "x").transaction_id, idempotency_key="k")  # a remembered reply
    remembered = store.charge("b", 2, "x")
    store.refund_credits(remembered.transaction_id, idempotency_key="k")
    before = snapshot(store)
    for tx in (theirs.transaction_id, pooled.transaction_id, remembered.transaction_id):
        r = store.refund_credits(tx, idempotency_key="k", user_id="a")
        assert (r.error, r.amount, r.user_id) == ("transaction_not_found", 0, "")
    assert snapshot(store) == before
    mine = store.charge("a", 7, "x")
    assert store.refund_credits(mine.transaction_id, user_id="a").amount == 7
    with pytest.raises(InvalidInputError, match="user_id"):
        store.refund_credits(mine.transaction_id, user_id="")


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
            where = parse_tx_id(tx)
            assert where is not None and where[0] == s.core.keys.user(u).shard
            ids.add(tx)
    assert len(ids) == 600


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
    assert store.refund_credits(d.transaction_id, 50).new_balance == 120  # ordinary 30 back first, then 20 of it
    advance(store, 2 * 3600)
    assert store.get_balance("u").balance == 100  # the 20 returned to the grant expired with it
    assert store.sweep_expired_credits().expired_amount == 20
    # a refund into a grant that has expired already: the credits leave again at once
    store.add_credits("u", 40, type="promo", expires_at=in_hours(store, 1))
    d2 = store.charge("u", 40, "x")  # all from the new grant (oldest-expiring first)
    advance(store, 2 * 3600)
    r = store.refund_credits(d2.transaction_id)
    assert (r.error, r.amount, r.new_balance) == (None, 40, 100)
    tail = [(e["kind"], e["amount"], e.get("reason", "")) for e in ledger_entries(store)][-2:]
    assert tail == [("refund", "40", ""), ("expire", "-40", "credit_expired")]
    assert store.sweep_expired_credits().expired_count == 0
    assert store.get_balance("u").balance == 100


def test_a_grant_expiring_twice_at_the_same_remainder_gets_two_distinct_ledger_entries(store: RedisStore) -> None:
    store.add_credits("u", 5)
    store.add_credits("u", 20, expires_at=in_hours(store, 1))
    d1 = store.charge("u", 10, "x")  # both debits spend the grant
    d2 = store.charge("u", 10, "x")
    store.refund_credits(d1.transaction_id)  # 10 back into the grant
    advance(store, 7200)
    assert store.sweep_expired_credits().expired_amount == 10
    r = store.refund_credits(d2.transaction_id)  # 10 more come back into the expired grant and leave
    assert (r.amount, r.new_balance) == (10, 5)
    expiries = [e for e in ledger_entries(store) if e.get("reason") == "credit_expired"]
    assert [e["amount"] for e in expiries] == ["-10", "-10"]
    ids = [e["id"] for e in ledger_entries(store)]
    assert len(ids) == len(set(ids))  # the Postgres primary key keeps every entry


def test_racing_refunds_from_8_threads_refund_once(redis_client: Any) -> None:
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
        assert got == [7]  # 160 racing attempts, one refund
        assert store.refund_credits(d.transaction_id).error == "already_refunded"
        assert store.get_balance("u").balance == 907
        assert sum(int(e["amount"]) for e in ledger_entries(store) if e["kind"] == "refund") == 7
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
