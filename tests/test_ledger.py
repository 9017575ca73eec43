"""The durable ledger, with the real Redis and the real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace, restorable_state

from ducto_redis import CreditMetadata, RedisStore, SpendCap
from ducto_redis.cli import main as cli
from ducto_redis.ledger.flusher import Batch, LedgerFlusher, migrate

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/test"


def rows(store: RedisStore, sql: str = "SELECT COUNT(*), COUNT(DISTINCT entry_id) FROM {t}") -> list[Any]:
    with psycopg.connect(DATABASE_URL) as c:
        return c.execute(sql.replace("{t}", f"{store.settings.ledger_schema}.ledger")).fetchall()


def workload(store: RedisStore, n_users: int = 20, seed: int = 1) -> int:
    """A mixed workload; returns the number of ledger entries it made."""
    import random

    rnd = random.Random(seed)
    before = sum(store.client.xlen(s) for s in store.core.keys.all_ledger_streams())
    tid = store.create_team("pool", initial_balance=50_000).team_id
    for i in range(n_users):
        u = f"user-{i}"
        store.add_credits(u, 10_000, type=rnd.choice(["purchase", "signup_bonus"]))
        store.add_team_member(tid, u, spend_cap=rnd.choice([None, 800]), cap_period=rnd.choice(["total", "daily"]))
        if i % 4 == 0:
            action = rnd.choice(["deny", "warn"])
            store.set_spend_cap(SpendCap(user_id=u, cap_type="monthly", limit=3_000, action=action))
        if i % 5 == 0:
            store.set_rate_limit(u, limit=1000, period_seconds=1)
    for _ in range(300):
        u = f"user-{rnd.randrange(n_users)}"
        r = rnd.random()
        if r < 0.4:
            store.charge(u, rnd.randint(1, 200), "req", metadata=CreditMetadata(model=rnd.choice(["a", "b"])))
        elif r < 0.6:
            h = store.reserve_credits(u, rnd.randint(1, 300), "job")
            if h.error is None and rnd.random() < 0.7:
                store.deduct_credits(u, h.reservation_id, rnd.randint(0, 350))
        elif r < 0.85:
            store.deduct_team(tid, u, rnd.randint(1, 300), metadata=CreditMetadata(model="a"))
        else:
            h = store.reserve_team(tid, u, rnd.randint(1, 200))
            if h.error is None and rnd.random() < 0.5:
                store.settle_team_reservation(tid, u, h.reservation_id, rnd.randint(0, 200))
    store.top_up_team(tid, 1_000, idempotency_key="topup")
    return int(sum(store.client.xlen(s) for s in store.core.keys.all_ledger_streams()) - before)


def test_every_entry_lands_once_and_the_streams_are_trimmed(ledger_store: RedisStore) -> None:
    made = workload(ledger_store)
    f = LedgerFlusher(ledger_store, DATABASE_URL, batch=97)
    assert f.drain() == made
    assert rows(ledger_store) == [(made, made)]
    lag = ledger_store.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)


def test_a_replayed_batch_inserts_nothing_twice(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("u", 10)
    ledger_store.charge("u", 3, "x")
    f = LedgerFlusher(ledger_store, DATABASE_URL)
    entries = [(i, mid, [x for kv in fields.items() for x in kv])
               for i, s in enumerate(f.streams) for mid, fields in f.client.xrange(s)]
    f._write(Batch(entries, fresh=True))
    f._write(Batch(entries, fresh=False))  # e.g. a flusher that committed, died before XACK, and was claimed
    f._write(Batch(entries, fresh=True))  # an id already stored: the direct COPY falls back, stores nothing
    assert rows(ledger_store) == [(2, 2)]
    assert f.fallbacks == 1


def test_ledger_rows_carry_every_field(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("u", 1_000, type="purchase", metadata=CreditMetadata(reference_id="inv-9"))
    h = ledger_store.reserve_credits("u", 100, "job")
    ledger_store.deduct_credits("u", h.reservation_id, 60, idempotency_key="k", metadata=CreditMetadata(model="m"))
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    got = rows(ledger_store, "SELECT kind, amount, balance_after, held_after, hold, reservation_id, operation_type, "
                             "model, tx_type, idempotency_key, metadata FROM {t} ORDER BY stream_ms, stream_seq")
    assert [r[0] for r in got] == ["credit", "hold", "settle"]
    assert got[0][1:3] == (1_000, 1_000) and got[0][8] == "purchase" and got[0][10] == {"reference_id": "inv-9"}
    assert got[2][1:10] == (-60, 940, 0, 100, h.reservation_id, "job", "m", None, "k")


def test_a_flusher_killed_mid_batch_loses_and_duplicates_nothing(ledger_store: RedisStore) -> None:
    made = 0
    for i in range(40):
        ledger_store.add_credits(f"u{i}", 100)
        made += 1
    for _ in range(60):
        for i in range(40):
            ledger_store.charge(f"u{i}", 1, "x")
            made += 1
    code = (
        "import sys, time; sys.path.insert(0, '.');"
        "from ducto_redis import RedisStore; from ducto_redis.ledger.flusher import LedgerFlusher;"
        f"s = RedisStore.from_url({REDIS_URL!r}, namespace={ledger_store.settings.namespace!r},"
        f" ledger_schema={ledger_store.settings.ledger_schema!r});"
        f"f = LedgerFlusher(s, {DATABASE_URL!r}, batch=50, consumer='doomed');"
        "orig = f._write\n"
        "def slow(*args):\n"
        "    orig(*args); print('committed', flush=True); time.sleep(0.05)\n"
        "f._write = slow\n"
        "f.run()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.time() + 30
    while seen.count("committed") < 5:  # let it commit a few batches, then kill it between a commit and its XACK
        assert time.time() < deadline and proc.poll() is None, seen
        seen.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored_before = rows(ledger_store)[0][0]
    assert 0 < stored_before < made
    pending = ledger_store.ledger_lag().pending
    assert pending > 0  # the dead consumer's batch was committed but never acknowledged
    time.sleep(0.3)
    survivor = LedgerFlusher(ledger_store, DATABASE_URL, consumer="survivor", claim_idle_ms=200)
    survivor.drain()
    assert rows(ledger_store) == [(made, made)]  # 0 lost, 0 duplicated
    assert ledger_store.ledger_lag().backlog == 0


def test_postgres_unreachable_decisions_continue_and_everything_arrives_after(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("u", 100_000)
    down = LedgerFlusher(ledger_store, CLOSED_PORT_URL)
    down.ensure_groups()
    made = 1
    for _round in range(5):
        for _ in range(200):
            assert ledger_store.charge("u", 1, "x").error is None  # the hot path keeps deciding
            made += 1
        with pytest.raises(psycopg.OperationalError):
            down.flush_once()
        assert down.unwritten  # the batch is kept for the retry, nothing acknowledged
    assert ledger_store.ledger_lag().backlog == made
    down.database_url = DATABASE_URL  # Postgres is back
    down.drain()
    assert rows(ledger_store) == [(made, made)]
    assert ledger_store.ledger_lag().backlog == 0


def test_background_flusher_thread_keeps_the_ledger_current(ledger_store: RedisStore) -> None:
    ledger_store.start_flusher()
    workload(ledger_store, n_users=5)  # the thread trims the streams as it goes
    deadline = time.time() + 20
    while ledger_store.ledger_lag().backlog and time.time() < deadline:
        time.sleep(0.05)
    ledger_store.stop_flusher()
    assert ledger_store.ledger_lag().backlog == 0
    count, distinct = rows(ledger_store)[0]
    assert count == distinct > 300
    assert ledger_store.reconcile_with_ledger() == {}  # every account in Postgres equals Redis


def test_restore_after_losing_redis_rebuilds_every_key_and_reconcile_sees_no_drift(ledger_store: RedisStore) -> None:
    workload(ledger_store)
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    assert ledger_store.reconcile_with_ledger() == {}
    before = restorable_state(ledger_store)
    drop_namespace(ledger_store.client, ledger_store.settings.namespace)  # Redis lost everything
    assert ledger_store.get_balance("user-1").balance == 0
    assert ledger_store.restore_from_ledger() > 20
    assert restorable_state(ledger_store) == before
    assert ledger_store.reconcile_with_ledger() == {}
    # and decisions carry on from the restored state
    assert ledger_store.charge("user-1", 1, "x").error in (None, "spend_cap_exceeded", "insufficient_credits")


def test_reconcile_reports_drift_per_account_and_the_cli_exits_1(ledger_store: RedisStore, capsys: Any) -> None:
    ledger_store.add_credits("u", 100)
    ledger_store.charge("u", 10, "x")
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    args = ["--redis-url", REDIS_URL, "--namespace", ledger_store.settings.namespace,
            "--database-url", DATABASE_URL, "--ledger-schema", ledger_store.settings.ledger_schema]
    assert cli([*args, "reconcile"]) == 0
    ledger_store.client.hset(ledger_store.core.keys.user("u").account, "b", "1000000")  # drift
    drift = ledger_store.reconcile_with_ledger()
    assert list(drift) == ["u:u"] and "balance" in drift["u:u"][0]
    assert cli([*args, "reconcile"]) == 1
    assert "u:u" in capsys.readouterr().out


def test_analytics_with_worked_numbers(ledger_store: RedisStore) -> None:
    s = ledger_store
    for u in ("a", "b", "c"):
        s.add_credits(u, 1_000)
    s.charge("a", 100, "x", metadata=CreditMetadata(model="gpt-4"))
    s.charge("a", 50, "x", metadata=CreditMetadata(model="mini"))
    s.charge("b", 30, "x", metadata=CreditMetadata(model="gpt-4"))
    h = s.reserve_credits("c", 40, "job")
    s.deduct_credits("c", h.reservation_id, 25)
    tid = s.create_team("t", initial_balance=500).team_id
    s.add_team_member(tid, "a")
    s.add_team_member(tid, "b")
    s.deduct_team(tid, "a", 7)
    s.deduct_team(tid, "b", 9)
    s.deduct_team(tid, "b", 1)
    LedgerFlusher(s, DATABASE_URL).drain()
    start = datetime.now(timezone.utc) - timedelta(days=1)
    end = datetime.now(timezone.utc) + timedelta(days=1)
    assert [(r.user_id, r.total_spend, r.transaction_count) for r in s.spend_by_user(start, end)] == [
        ("a", 150, 2), ("b", 30, 1), ("c", 25, 1)]
    assert [(r.model, r.total_spend) for r in s.spend_by_model(start, end)] == [
        ("gpt-4", 130), ("mini", 50), ("", 25)]  # users' spend only: the team's 17 are spend_by_member's
    assert [r.user_id for r in s.top_users(2, start, end)] == ["a", "b"]
    (day,) = s.daily_spend(start, end)
    assert (day.total_spend, day.transaction_count) == (205, 4)
    stats = s.aggregate_stats(start, end)
    assert (stats.total_credits_consumed, stats.active_users, stats.avg_daily_spend, stats.top_model,
            stats.top_user) == (205, 3, 205, "gpt-4", "a")
    assert [(r.user_id, r.total_spend, r.transaction_count) for r in s.spend_by_member(tid, start, end)] == [
        ("b", 10, 2), ("a", 7, 1)]
    assert s.spend_by_user(end, end + timedelta(days=1)) == []


def test_backlog_limit_fails_closed_on_real_redis_until_the_flusher_drains(redis_client: Any) -> None:
    schema = "t_" + uuid.uuid4().hex[:10]
    s = RedisStore.from_url(REDIS_URL, namespace=new_namespace(), ledger_schema=schema, ledger_max_backlog=5)
    try:
        migrate(DATABASE_URL, schema)
        s.add_credits("u", 100)
        results = [s.charge("u", 1, "x").error for _ in range(6)]
        assert results[:4] == [None] * 4 and results[4:] == ["ledger_backlog_full"] * 2
        LedgerFlusher(s, DATABASE_URL).drain()
        assert s.charge("u", 1, "x").error is None
    finally:
        drop_namespace(redis_client, s.settings.namespace)
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_team_with_a_cap_but_never_created_is_still_not_found_after_a_restore(ledger_store: RedisStore) -> None:
    """A team exists once its hash has a balance (layout.py): restore gives none to a team the ledger
    never saw created, though a cap set on it is restored."""
    s = ledger_store
    s.set_team_spend_cap("ghost", "daily", 100, "deny")
    tid = s.create_team("real", initial_balance=0).team_id
    s.add_team_member(tid, "m")
    LedgerFlusher(s, DATABASE_URL).drain()
    drop_namespace(s.client, s.settings.namespace)
    assert s.restore_from_ledger() > 0
    assert s.client.hget(s.core.keys.team("ghost").account, "S") is not None  # the cap is back
    assert [s.deduct_team("ghost", "m", 1).error, s.get_team_balance("ghost").error] == ["team_not_found"] * 2
    assert s.add_team_member("ghost", "m").error == "team_not_found"
    assert s.deduct_team(tid, "m", 1).error == "insufficient_team_balance"  # a pool of 0 exists
    assert s.reconcile_with_ledger() == {}
