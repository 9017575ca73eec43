"""Refunds find the debit in the ledger, not in a per-debit record: the shard's stream while the entry
is there, the ledger database after it is flushed. So any debit in the ledger is refundable, team
debits too, and Redis keeps nothing per debit once its entry is flushed."""

from __future__ import annotations

from typing import Any

from conftest import REDIS_URL, drop_namespace, snapshot

from ducto_redis import MemoryStore, RedisStore
from ducto_redis.layout import parse_tx_id
from ducto_redis.ledger.flusher import LedgerFlusher


def stream_entries(store: RedisStore) -> int:
    keys = store.core.keys
    return sum(store.client.xlen(keys.ledger_stream(shard)) for shard in range(keys.shards))


def test_a_team_debit_is_refunded_to_the_pool_once_in_full_or_in_part(store: RedisStore) -> None:
    team = store.create_team("pool", 500).team_id
    store.add_team_member(team, "m", spend_cap=100)
    d = store.deduct_team(team, "m", 40)
    part = store.refund_credits(d.transaction_id, 15, reason="bad answer")
    assert (part.error, part.amount, part.team_id, part.user_id) == (None, 15, team, "m")
    assert store.get_team_balance(team).balance == 475
    assert store.refund_credits(d.transaction_id).error == "already_refunded"
    assert store.get_team_balance(team).balance == 475
    # a refund is not new spend: the member's spend stays gross, as for users' caps
    assert [m.total_spent for m in store.team_spend_report(team) if m.user_id == "m"] == [40]
    whole = store.deduct_team(team, "m", 20)
    assert store.refund_credits(whole.transaction_id).amount == 20
    assert store.get_team_balance(team).balance == 475


def test_a_debit_flushed_to_postgresql_is_refunded_from_the_ledger_once(ledger_store: RedisStore) -> None:
    from conftest import DATABASE_URL

    s = ledger_store
    s.add_credits("u", 100, type="purchase")
    d = s.charge("u", 30, "chat")
    LedgerFlusher(s, DATABASE_URL).drain()
    assert stream_entries(s) == 0  # flushed and trimmed: only PostgreSQL has the debit now
    r = s.refund_credits(d.transaction_id, 10)
    assert (r.error, r.amount, r.new_balance) == (None, 10, 80)
    assert s.refund_credits(d.transaction_id).error == "already_refunded"
    team = s.create_team("pool", 50).team_id
    s.add_team_member(team, "m")
    t = s.deduct_team(team, "m", 20)
    LedgerFlusher(s, DATABASE_URL).drain()
    assert s.refund_credits(t.transaction_id).amount == 20
    assert s.get_team_balance(team).balance == 50


def test_without_a_ledger_database_a_flushed_debit_answers_transaction_flushed_and_writes_nothing(
        ledger_store: RedisStore) -> None:
    from conftest import DATABASE_URL

    ledger_store.add_credits("u", 100, type="purchase")
    d = ledger_store.charge("u", 30, "chat")
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    bare = RedisStore.from_url(REDIS_URL, namespace=ledger_store.settings.namespace, database_url=None)
    try:
        before = snapshot(bare)
        assert bare.refund_credits(d.transaction_id).error == "transaction_flushed"
        assert snapshot(bare) == before
        assert bare.get_balance("u").balance == 70
        # an id that never named a debit is still not found, not "flushed"
        assert bare.refund_credits("00000000-0000-4000-8000-000000000000").error == "transaction_not_found"
    finally:
        bare.close()


def test_the_embedded_store_refunds_a_debit_its_stream_no_longer_holds() -> None:
    s = MemoryStore()
    s.add_credits("u", 5_000, type="purchase")
    first = s.charge("u", 7, "chat")
    for _ in range(1_200):  # the embedded streams keep copied entries beyond their last 1 000 only
        s.charge("u", 1, "chat")
    where = parse_tx_id(first.transaction_id)
    assert where is not None
    shard, entry, _row = where
    assert s.client.xrange(s.core.keys.ledger_stream(shard), entry, entry) == []  # only SQLite has it
    r = s.refund_credits(first.transaction_id)
    assert (r.error, r.amount) == (None, 7)
    assert s.refund_credits(first.transaction_id).error == "already_refunded"


def _footprint(store: RedisStore, redis_client: Any) -> tuple[int, int]:
    keys = list(redis_client.scan_iter(match=f"{{{store.settings.namespace}:*", count=1000))
    return len(keys), sum(int(redis_client.memory_usage(k, samples=0) or 0) for k in keys)


def test_redis_keeps_no_bytes_per_debit_once_its_entry_is_flushed(ledger_store: RedisStore,
                                                                  redis_client: Any) -> None:
    from conftest import DATABASE_URL

    s = ledger_store
    for u in range(4):
        s.add_credits(f"u{u}", 100_000, type="purchase")
    flusher = LedgerFlusher(s, DATABASE_URL)

    def charges(n: int) -> None:
        s.charge_many([{"user_id": f"u{i % 4}", "amount": 1, "operation_type": "chat"} for i in range(n)])
        flusher.drain()

    charges(40)  # every account's ring of recent calls full: its steady size
    keys, size = _footprint(s, redis_client)
    charges(1_000)
    keys_after, size_after = _footprint(s, redis_client)
    assert keys_after == keys
    # a balance's digits and a ring's ids may differ by a few bytes; 1 000 debits' records would be
    # 100 000+ bytes
    assert abs(size_after - size) < 200, (size, size_after)
    drop_namespace(redis_client, s.settings.namespace)
