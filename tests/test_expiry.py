"""Expiring credits: grants leave the balance at expiry, oldest spent first, lazily and by sweeps."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from conftest import REDIS_URL, advance, drop_namespace, ledger_entries, make_store, snapshot

from ducto_redis import RedisStore
from ducto_redis.cli import main as cli


def in_hours(store: RedisStore, hours: float) -> datetime:
    """A time ``hours`` from the scripts' clock (the test clock offset included)."""
    return datetime.now(timezone.utc) + timedelta(hours=hours, milliseconds=store.core.clock_offset_ms)


def test_an_unspent_grant_leaves_the_balance_at_expiry_with_worked_numbers(store: RedisStore) -> None:
    store.add_credits("u", 100, type="purchase")
    g = store.add_credits("u", 50, type="signup_bonus", expires_at=in_hours(store, 1))
    assert g.new_balance == 150
    assert store.charge("u", 20, "x").balance_after == 130  # 20 of the grant spent, 30 left in it
    advance(store, 3600 + 60)
    assert store.get_balance("u").balance == 100  # not spendable before any sweep
    r = store.sweep_expired_credits()
    assert (r.expired_count, r.expired_amount, r.dry_run) == (1, 30, False)
    (e,) = r.expired
    assert (e.user_id, e.grant_id, e.amount) == ("u", g.transaction_id, 30)
    entry = [x for x in ledger_entries(store) if x["kind"] == "expire"][-1]
    assert (entry["amount"], entry["bal"], entry["reason"], entry["grant"], entry["id"]) == (
        "-30", "100", "credit_expired", g.transaction_id, e.entry_id)
    assert store.get_balance("u").balance == 100


def test_a_second_sweep_finds_nothing(store: RedisStore) -> None:
    for i in range(5):
        store.add_credits(f"u{i}", 10, expires_at=in_hours(store, 1))
    advance(store, 7200)
    assert store.sweep_expired_credits().expired_amount == 50
    before = snapshot(store)
    again = store.sweep_expired_credits()
    assert (again.expired_count, again.expired_amount) == (0, 0)
    assert snapshot(store) == before


def test_a_dry_run_reports_and_writes_nothing(store: RedisStore) -> None:
    store.add_credits("a", 100)
    store.add_credits("a", 40, expires_at=in_hours(store, 1))
    store.add_credits("b", 25, expires_at=in_hours(store, 1))
    store.add_credits("c", 5, expires_at=in_hours(store, 5))
    store.reserve_credits("a", 10, "job", ttl_seconds=60)  # an expired hold too: a dry run leaves it
    advance(store, 7200)
    before = snapshot(store)
    dry = store.sweep_expired_credits(dry_run=True)
    assert (dry.expired_count, dry.expired_amount, dry.dry_run) == (2, 65, True)
    assert all(e.entry_id == "" for e in dry.expired)
    assert snapshot(store) == before
    real = store.sweep_expired_credits()
    assert (real.expired_count, real.expired_amount) == (2, 65)
    assert {e.user_id for e in real.expired} == {"a", "b"}
    assert store.get_balance("c").balance == 5


def test_the_oldest_expiring_grant_is_spent_first(store: RedisStore) -> None:
    store.add_credits("u", 100)
    late = store.add_credits("u", 30, expires_at=in_hours(store, 2))
    store.add_credits("u", 40, expires_at=in_hours(store, 1))
    store.charge("u", 50, "x")  # 40 from the 1 h grant, 10 from the 2 h grant, none ordinary
    advance(store, 5400)
    assert store.get_balance("u").balance == 120  # the 1 h grant was empty: nothing left it
    assert store.sweep_expired_credits().expired_count == 0
    advance(store, 3600)
    r = store.sweep_expired_credits()
    assert [(e.grant_id, e.amount) for e in r.expired] == [(late.transaction_id, 20)]
    assert store.get_balance("u").balance == 100  # the ordinary credits are untouched


def test_expired_credits_cannot_be_spent_before_a_sweep(store: RedisStore) -> None:
    store.add_credits("u", 10)
    store.add_credits("u", 90, expires_at=in_hours(store, 1))
    advance(store, 3601)
    assert store.charge("u", 11, "x").error == "insufficient_credits"
    assert store.reserve_credits("u", 11, "x", min_balance=0).error == "insufficient_credits"
    d = store.charge("u", 10, "x")
    assert (d.error, d.balance_after) == (None, 0)
    kinds = [(e["kind"], e["amount"]) for e in ledger_entries(store)]
    assert kinds[-2:] == [("expire", "-90"), ("debit", "-10")]  # expired lazily, before the debit
    assert store.sweep_expired_credits().expired_count == 0


def test_a_hold_pins_expiring_credits_until_it_resolves(store: RedisStore) -> None:
    store.add_credits("u", 100, expires_at=in_hours(store, 1))
    h = store.reserve_credits("u", 100, "job", min_balance=0, ttl_seconds=7200)
    advance(store, 3700)
    assert store.sweep_expired_credits().expired_count == 0  # all of it is held: nothing can leave yet
    b = store.get_balance("u")
    assert (b.balance, b.held) == (100, 100)
    d = store.deduct_credits("u", h.reservation_id, 60)  # the settlement spends the pinned grant first
    assert (d.error, d.balance_after) == (None, 0)  # and the 40 released expire at once
    assert [(e["kind"], e["amount"]) for e in ledger_entries(store)][-2:] == [("settle", "-60"), ("expire", "-40")]


def test_releasing_a_hold_lets_the_pinned_grant_expire(store: RedisStore) -> None:
    store.add_credits("u", 5)
    store.add_credits("u", 50, expires_at=in_hours(store, 1))
    h = store.reserve_credits("u", 50, "job", min_balance=0, ttl_seconds=7200)
    advance(store, 3700)
    assert store.get_balance("u").balance == 55  # 50 held: the grant cannot leave under the hold
    assert store.charge("u", 6, "x").error == "insufficient_credits"
    assert store.release_reservation("u", h.reservation_id).balance == 5  # released: the grant leaves
    b = store.get_balance("u")
    assert (b.balance, b.held) == (5, 0)


def test_a_hold_covers_the_expiring_credits_first_so_ordinary_ones_stay_spendable(store: RedisStore) -> None:
    store.add_credits("u", 5)
    store.add_credits("u", 50, expires_at=in_hours(store, 1))
    store.reserve_credits("u", 30, "job", min_balance=0, ttl_seconds=7200)
    advance(store, 3700)
    b = store.get_balance("u")  # 30 of the grant pinned by the hold, 20 left, 5 ordinary
    assert (b.balance, b.held, b.available) == (35, 30, 5)
    assert store.charge("u", 5, "x").balance_after == 30


def test_an_expiry_already_past_is_taken_never_spendable_and_swept_as_in_ducto(store: RedisStore) -> None:
    store.add_credits("u", 1)
    g = store.add_credits("u", 10, type="purchase", expires_at=in_hours(store, -1))
    assert g.new_balance == 11  # taken, as ducto takes it...
    assert store.get_balance("u").balance == 1  # ...but due at once: never spendable
    dry = store.sweep_expired_credits(dry_run=True)
    assert (dry.expired_count, dry.expired_amount, dry.dry_run) == (1, 10, True)
    swept = store.sweep_expired_credits()
    assert (swept.expired_count, swept.expired_amount) == (1, 10)
    assert [e.grant_id for e in swept.expired] == [g.transaction_id]
    assert store.sweep_expired_credits().expired_count == 0
    assert store.get_balance("u").balance == 1
    assert store.charge("u", 2, "x").error == "insufficient_credits"


def test_naive_expiry_datetimes_are_utc(store: RedisStore) -> None:
    naive = in_hours(store, 1).replace(tzinfo=None)
    store.add_credits("u", 10, expires_at=naive)
    advance(store, 3500)
    assert store.get_balance("u").balance == 10
    advance(store, 200)
    assert store.get_balance("u").balance == 0


def test_sweeps_reach_every_shard(store: RedisStore) -> None:
    users = [f"user-{i}" for i in range(40)]
    for u in users:
        store.add_credits(u, 7, expires_at=in_hours(store, 1))
    assert len({store.core.keys.user(u).shard for u in users}) > 10
    advance(store, 3601)
    r = store.sweep_expired_credits()
    assert (r.expired_count, r.expired_amount) == (40, 280)
    assert all(store.get_balance(u).balance == 0 for u in users)


def test_accounts_without_grants_keep_no_grant_state(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.charge("u", 10, "x")
    k = store.core.keys.user("u")
    assert "gx" not in store.client.hgetall(k.account)
    assert not store.client.exists(k.grants)


def test_conservation_with_grants_refunds_holds_and_sweeps(store: RedisStore) -> None:
    """Random workload: per account, the ledger's signed amounts sum to the balance; refunds never
    pass their debit; balance >= held >= 0 after every step."""
    rnd = random.Random(7)
    users = ["a", "b", "c"]
    debits: dict[str, tuple[str, int]] = {}
    refunded: dict[str, int] = defaultdict(int)
    holds: list[tuple[str, str]] = []
    for u in users:
        store.add_credits(u, 200, type="purchase")
    for _ in range(120):
        u = rnd.choice(users)
        x = rnd.random()
        if x < 0.2:
            store.add_credits(u, rnd.randint(1, 80), expires_at=in_hours(store, rnd.uniform(0.1, 3)))
        elif x < 0.45:
            d = store.charge(u, rnd.randint(1, 60), "x")
            if d.error is None:
                debits[d.transaction_id] = (u, -d.amount)
        elif x < 0.6:
            h = store.reserve_credits(u, rnd.randint(1, 60), "job", min_balance=0, ttl_seconds=rnd.choice([600, 9000]))
            if h.error is None:
                holds.append((u, h.reservation_id))
        elif x < 0.7 and holds:
            hu, rid = holds.pop(rnd.randrange(len(holds)))
            d = store.deduct_credits(hu, rid, rnd.randint(0, 70))
            if d.error is None and d.amount:
                debits[d.transaction_id] = (hu, -d.amount)
        elif x < 0.85 and debits:
            tx = rnd.choice(list(debits))
            r = store.refund_credits(tx, rnd.choice([None, 1, 5, 20]))
            if r.error is None:
                refunded[tx] += r.amount
            else:
                assert r.error in ("already_refunded", "invalid_amount")
        elif x < 0.95:
            advance(store, rnd.uniform(300, 2400))
        else:
            store.sweep_expired_credits(dry_run=rnd.random() < 0.3)
        for v in users:
            b = store.get_balance(v)
            assert b.balance >= b.held >= 0
    assert all(refunded[tx] <= amount for tx, (_u, amount) in debits.items())
    store.sweep_expired_credits()
    entries = ledger_entries(store)
    for u in users:
        b = store.get_balance(u)
        mine = [e for e in entries if e["acct"] == u]
        assert sum(int(e["amount"]) for e in mine) == b.balance  # credits in - out = balance
        assert int(mine[-1]["bal"]) == b.balance
        assert all(int(e["bal"]) >= 0 for e in mine)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids))  # every entry id unique (the Postgres primary key)


def test_racing_spends_refunds_and_sweeps_while_grants_expire_conserve_every_credit(redis_client: Any) -> None:
    """Real Redis: 6 threads charge, settle and refund while a 7th advances the clock and sweeps."""
    store = make_store("redis", redis_client)
    try:
        store.add_credits("hot", 2_000, type="purchase")
        for i in range(30):
            store.add_credits("hot", 100, expires_at=in_hours(store, 0.1 * (i + 1)))
        debits: dict[str, int] = {}
        refunded: dict[str, int] = defaultdict(int)
        lock = threading.Lock()
        stop = threading.Event()

        def spender(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(60):
                x = rnd.random()
                if x < 0.45:
                    d = store.charge("hot", rnd.randint(1, 40), "race")
                    if d.error is None:
                        with lock:
                            debits[d.transaction_id] = -d.amount
                elif x < 0.75:
                    h = store.reserve_credits("hot", rnd.randint(1, 60), "race", min_balance=0)
                    if h.error is None:
                        d = store.deduct_credits("hot", h.reservation_id, rnd.randint(0, 60))
                        if d.error is None and d.amount:
                            with lock:
                                debits[d.transaction_id] = -d.amount
                        elif d.error is not None:
                            store.release_reservation("hot", h.reservation_id)
                else:
                    with lock:
                        txs = list(debits)
                    if txs:
                        tx = rnd.choice(txs)
                        r = store.refund_credits(tx, rnd.choice([None, 3, 10]))
                        if r.error is None:
                            with lock:
                                refunded[tx] += r.amount

        def clock() -> None:
            while not stop.is_set():
                advance(store, 360)
                store.sweep_expired_credits()

        ticker = threading.Thread(target=clock)
        ticker.start()
        threads = [threading.Thread(target=spender, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        ticker.join()
        store.sweep_expired_credits()
        assert all(refunded[tx] <= amount for tx, amount in debits.items())
        entries = [e for e in ledger_entries(store) if e["acct"] == "hot"]
        assert all(int(e["bal"]) >= 0 and int(e["held"]) >= 0 and int(e["bal"]) >= int(e["held"]) for e in entries)
        b = store.get_balance("hot")
        assert b.balance == sum(int(e["amount"]) for e in entries)  # credits in - out = balance
        spent = sum(debits.values()) - sum(refunded.values())
        expired = -sum(int(e["amount"]) for e in entries if e.get("reason") == "credit_expired")
        assert b.balance == 2_000 + 3_000 - spent - expired and b.held == 0
        assert expired > 0 and sum(refunded.values()) > 0 and spent > 0  # all three really raced
    finally:
        drop_namespace(store.client, store.settings.namespace)
        store.close()


def test_the_cli_sweeps_expired_credits(redis_client: Any, capsys: Any) -> None:
    store = make_store("redis", redis_client)
    try:
        advance(store, -3600)  # granted "an hour ago" for 30 minutes: expired on the CLI's real clock
        store.add_credits("u", 9, expires_at=datetime.now(timezone.utc) - timedelta(minutes=30))
        args = ["--redis-url", REDIS_URL, "--namespace", store.settings.namespace]
        assert cli([*args, "sweep-credits", "--dry-run"]) == 0
        assert cli([*args, "sweep-credits"]) == 0
        assert cli([*args, "sweep-credits"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "would expire 1 grants, 9 credits", "expired 1 grants, 9 credits", "expired 0 grants, 0 credits"]
        assert store.get_balance("u").balance == 0
    finally:
        drop_namespace(store.client, store.settings.namespace)
        store.close()
