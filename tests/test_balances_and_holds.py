"""Balances, credits, reservations (holds), settlement and release, on every store."""

from __future__ import annotations

from datetime import datetime, timezone

from conftest import advance, ledger_entries, snapshot

from ducto_redis import CreditMetadata, MemoryStore, RedisStore


def test_unknown_user_has_zero_balance_and_nothing_is_written(store: RedisStore) -> None:
    before = snapshot(store)
    bal = store.get_balance("nobody")
    assert (bal.balance, bal.held, bal.lifetime_purchased, bal.available) == (0, 0, 0, 0)
    assert snapshot(store) == before


def test_add_credits_zero_creates_the_user_record(store: RedisStore) -> None:
    r = store.add_credits("user-1", 0)
    assert r.new_balance == 0 and r.transaction_id
    assert store.client.exists(store.core.keys.user("user-1").account)


def test_add_credits_counts_only_purchases_toward_lifetime(store: RedisStore) -> None:
    store.add_credits("u", 1000, type="purchase")
    r = store.add_credits("u", 500, type="signup_bonus")
    assert (r.new_balance, r.lifetime_purchased) == (1500, 1000)
    assert store.get_balance("u").lifetime_purchased == 1000


def test_add_credits_replay_with_key_returns_first_result_and_credits_once(store: RedisStore) -> None:
    a = store.add_credits("u", 100, idempotency_key="grant-1")
    b = store.add_credits("u", 100, idempotency_key="grant-1")
    c = store.add_credits("u", 100, metadata=CreditMetadata(idempotency_key="grant-2"))
    d = store.add_credits("u", 100, metadata={"idempotency_key": "grant-2"})
    assert b.idempotent and not a.idempotent and b.transaction_id == a.transaction_id
    assert d.idempotent and d.transaction_id == c.transaction_id
    assert store.get_balance("u").balance == 200
    assert len([e for e in ledger_entries(store) if e["kind"] == "credit"]) == 2


def test_reserve_holds_credits_and_reduces_available(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 300, operation_type="inference")
    assert r.error is None and r.reservation_id and r.amount == 300
    assert (r.balance, r.reserved_total) == (1000, 300)
    bal = store.get_balance("u")
    assert (bal.balance, bal.held, bal.available) == (1000, 300, 700)


def test_reserve_refuses_when_available_would_drop_below_min_balance(store: RedisStore) -> None:
    store.add_credits("u", 100)
    before = snapshot(store)
    r = store.reserve_credits("u", 96, operation_type="x")  # 100 - 96 < 5
    assert r.error == "insufficient_credits" and r.reservation_id == "" and r.amount == 0
    assert snapshot(store) == before
    assert store.reserve_credits("u", 96, operation_type="x", min_balance=0).error is None


def test_the_reserve_floor_left_out_is_the_settings_default_min_balance(store: RedisStore) -> None:
    assert store.settings.default_min_balance == 5  # ducto's default
    store.add_credits("u", 100)
    assert store.reserve_credits("u", 96, "x", min_balance=None).error == "insufficient_credits"
    assert store.reserve_credits("u", 95, "x", min_balance=None).error is None
    strict = MemoryStore(default_min_balance=20)
    strict.add_credits("u", 100)
    assert strict.reserve_credits("u", 81, "x").error == "insufficient_credits"
    assert strict.reserve_credits("u", 80, "x").error is None


def test_reserve_counts_existing_holds(store: RedisStore) -> None:
    store.add_credits("u", 100)
    assert store.reserve_credits("u", 60, "x", min_balance=0).error is None
    assert store.reserve_credits("u", 50, "x", min_balance=0).error == "insufficient_credits"
    assert store.reserve_credits("u", 40, "x", min_balance=0).error is None


def test_settling_less_than_the_hold_releases_the_rest(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 300, "x")
    d = store.deduct_credits("u", r.reservation_id, 120)
    assert d.error is None and d.amount == -120 and d.balance_after == 880
    bal = store.get_balance("u")
    assert (bal.balance, bal.held) == (880, 0)


def test_settling_more_than_the_hold_succeeds_only_if_available_covers_it(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r1 = store.reserve_credits("u", 300, "x", min_balance=0)
    store.reserve_credits("u", 600, "x", min_balance=0)  # available now 100
    before = snapshot(store)
    too_much = store.deduct_credits("u", r1.reservation_id, 401)  # needs 101 beyond the hold
    assert too_much.error == "insufficient_credits"
    assert snapshot(store) == before  # the hold is still there, nothing changed
    ok = store.deduct_credits("u", r1.reservation_id, 400)
    assert ok.error is None and ok.balance_after == 600
    bal = store.get_balance("u")
    assert (bal.balance, bal.held, bal.available) == (600, 600, 0)


def test_a_hold_resolves_at_most_once(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 100, "x")
    assert store.deduct_credits("u", r.reservation_id, 100).error is None
    again = store.deduct_credits("u", r.reservation_id, 100)
    assert again.error == "reservation_not_found"
    assert store.release_reservation("u", r.reservation_id).error == "reservation_not_found"
    assert store.get_balance("u").balance == 900


def test_deduct_with_unknown_reservation_is_a_clear_error_and_writes_nothing(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    before = snapshot(store)
    d = store.deduct_credits("u", "no-such-reservation", 10)
    assert d.error == "reservation_not_found"
    assert snapshot(store) == before


def test_release_returns_the_hold_and_a_replay_changes_nothing(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 400, "x")
    a = store.release_reservation("u", r.reservation_id, idempotency_key="rel-1")
    b = store.release_reservation("u", r.reservation_id, idempotency_key="rel-1")
    assert a.error is None and a.amount == 400 and a.held == 0
    assert b.idempotent and b.error is None and b.amount == 400
    bal = store.get_balance("u")
    assert (bal.balance, bal.held) == (1000, 0)


def test_deduct_replay_with_key_returns_first_result_and_debits_once(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 100, "x")
    a = store.deduct_credits("u", r.reservation_id, 100, idempotency_key="job-7")
    b = store.deduct_credits("u", r.reservation_id, 100, idempotency_key="job-7")
    assert not a.idempotent and b.idempotent
    assert (b.transaction_id, b.balance_after, b.amount) == (a.transaction_id, 900, -100)
    assert store.get_balance("u").balance == 900


def test_holds_expire_after_their_ttl_and_the_credits_return(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 700, "x", ttl_seconds=60)
    assert store.get_balance("u").available == 300
    advance(store, 61)
    assert store.get_balance("u").available == 1000  # read-only view already excludes it
    assert store.deduct_credits("u", r.reservation_id, 700).error == "reservation_not_found"
    kinds = [e["kind"] for e in ledger_entries(store)]
    assert "expire" in kinds
    bal = store.get_balance("u")
    assert (bal.balance, bal.held) == (1000, 0)


def test_default_hold_ttl_is_ten_minutes_and_configurable(store: RedisStore) -> None:
    store.add_credits("u", 1000)
    r = store.reserve_credits("u", 100, "x")
    entry = next(e for e in ledger_entries(store) if e["kind"] == "hold")
    assert int(entry["exp"]) - int(entry["ts"]) == 600_000
    assert r.expires_at_ms == int(entry["exp"])
    advance(store, 599)
    assert store.get_balance("u").held == 100
    advance(store, 2)
    assert store.get_balance("u").held == 0


def test_charge_debits_without_a_hold_and_refuses_overdraw(store: RedisStore) -> None:
    store.add_credits("u", 100)
    ok = store.charge("u", 60, "request")
    assert ok.error is None and ok.balance_after == 40 and ok.amount == -60
    before = snapshot(store)
    no = store.charge("u", 41, "request")
    assert no.error == "insufficient_credits"
    assert snapshot(store) == before


def test_charge_respects_held_credits(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.reserve_credits("u", 80, "x", min_balance=0)
    assert store.charge("u", 21, "request").error == "insufficient_credits"
    assert store.charge("u", 20, "request").error is None


def test_charge_replay_returns_first_result(store: RedisStore) -> None:
    store.add_credits("u", 100)
    a = store.charge("u", 10, "request", idempotency_key="req-1")
    b = store.charge("u", 10, "request", idempotency_key="req-1")
    assert b.idempotent and b.transaction_id == a.transaction_id and b.balance_after == 90
    assert store.get_balance("u").balance == 90


def test_every_mutation_appends_one_complete_ledger_entry(store: RedisStore) -> None:
    store.add_credits("u", 1000, type="purchase", metadata=CreditMetadata(reference_id="inv-1"),
                      expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
    r = store.reserve_credits("u", 100, "inference")
    store.deduct_credits("u", r.reservation_id, 80, idempotency_key="k1",
                         metadata=CreditMetadata(model="gpt-4", input_tokens=10))
    r2 = store.reserve_credits("u", 50, "inference")
    store.release_reservation("u", r2.reservation_id)
    store.charge("u", 5, "request")
    entries = ledger_entries(store)
    assert [e["kind"] for e in entries] == ["credit", "hold", "settle", "hold", "release", "debit"]
    for e in entries:
        for field in ("id", "ts", "ak", "acct", "kind", "amount", "bal", "held"):
            assert field in e, (field, e)
        assert e["acct"] == "u" and e["ak"] == "u"
    credit, hold, settle = entries[0], entries[1], entries[2]
    assert credit["type"] == "purchase" and '"reference_id":"inv-1"' in credit["meta"]
    assert credit["exp"] == str(int(datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp() * 1000))
    assert hold["rid"] == r.reservation_id and hold["hold"] == "100" and hold["op"] == "inference"
    assert settle["amount"] == "-80" and settle["bal"] == "920" and settle["held"] == "0"
    assert settle["idem"] == "k1" and settle["model"] == "gpt-4" and settle["op"] == "inference"
    assert len({e["id"] for e in entries}) == len(entries)


def test_balance_cannot_exceed_two_to_the_53_minus_one(store: RedisStore) -> None:
    import pytest

    from ducto_redis import InvalidInputError

    store.add_credits("u", 2**53 - 1)
    before = snapshot(store)
    with pytest.raises(InvalidInputError, match="amount"):
        store.add_credits("u", 1)
    assert snapshot(store) == before
    assert store.get_balance("u").balance == 2**53 - 1


def test_past_the_ledger_backlog_limit_debits_fail_closed_and_credits_still_land(redis_client: object) -> None:
    from conftest import make_store

    s = make_store("memory", None, ledger_max_backlog=3)
    s.add_credits("u", 100)
    assert s.charge("u", 1, "x").error is None
    assert s.charge("u", 1, "x").error is None  # 3 entries now
    before = snapshot(s)
    assert s.charge("u", 1, "x").error == "ledger_backlog_full"
    assert s.reserve_credits("u", 1, "x").error == "ledger_backlog_full"
    assert snapshot(s) == before
    assert s.add_credits("u", 5).new_balance == 103  # money coming in is never refused
    s_open = make_store("memory", None, ledger_max_backlog=1, ledger_backlog_policy="open")
    s_open.add_credits("u", 100)
    assert s_open.charge("u", 1, "x").error is None
