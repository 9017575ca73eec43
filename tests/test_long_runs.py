"""The long runs behind ``pytest --slow`` (marked ``slow``): the flusher and restore at scale.

- A flusher run that stores over 100 000 ledger entries in PostgreSQL exactly once while decisions
  keep being made, with the flusher killed in the middle — after committing a batch, before
  acknowledging it — and restarted under the same consumer name.
- A restore of a large namespace (users with grants, holds, caps, rate and quantity limits, plans,
  refunds; teams with members, caps and holds; over 100 000 ledger rows) that gives back every key,
  compared key by key, and reconciles with no drift.

Each takes a few minutes at most on two cores; the default run skips them.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import DATABASE_URL, REDIS_URL, advance, drop_namespace, restorable_state
from test_ledger import rows
from test_plans import with_plans

from ducto_redis import CreditMetadata, RedisStore, SpendCap
from ducto_redis.batch import ChargeRequest, TeamDebitRequest
from ducto_redis.layout import tx_id
from ducto_redis.ledger.flusher import GROUP, LedgerFlusher

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = 100_000

# a flusher process that stalls forever right after its third commit, before the acknowledgement:
# killed there, it leaves a batch stored in PostgreSQL but still pending in Redis
CRASHING_FLUSHER = """
import sys, time
sys.path.insert(0, {root!r})
from ducto_redis import RedisStore
from ducto_redis.ledger.flusher import LedgerFlusher
s = RedisStore.from_url({url!r}, namespace={namespace!r}, ledger_schema={schema!r})
f = LedgerFlusher(s, {database!r}, batch=2000, consumer={consumer!r})
write, commits = f._write, 0
def write_then_stall(*args):
    global commits
    write(*args)
    commits += 1
    print('committed', commits, flush=True)
    if commits == 3:
        time.sleep(3600)
f._write = write_then_stall
f.run()
"""


def one_user_per_shard(store: RedisStore) -> list[str]:
    """A user id in every shard: a charge_many over them makes one stream entry per decision."""
    by_shard: dict[int, str] = {}
    i = 0
    while len(by_shard) < store.settings.shards:
        user = f"u{i}"
        by_shard.setdefault(store.core.keys.user(user).shard, user)
        i += 1
    return list(by_shard.values())


def charge_rounds(store: RedisStore, users: list[str], rounds: int) -> int:
    """``rounds`` charge_many calls of one credit per user; every decision accepted; rows made."""
    for _ in range(rounds):
        results = store.charge_many([ChargeRequest(u, 1, "long-run") for u in users])
        assert all(r.error is None for r in results)
    return rounds * len(users)


def stored_yet_pending(s: RedisStore) -> int:
    """Entries pending in the consumer group (delivered, never acknowledged) that PostgreSQL holds."""
    ids = []
    for shard, stream in enumerate(s.core.keys.all_ledger_streams()):
        for p in s.client.xpending_range(stream, GROUP, min="-", max="+", count=100_000):
            ids.append(tx_id(shard, p["message_id"]))
    return int(rows(s, f"SELECT COUNT(*) FROM {{t}} WHERE entry_id = ANY(ARRAY{ids!r}::text[])")[0][0]) if ids else 0


def test_a_flusher_killed_and_restarted_stores_100_000_entries_exactly_once(ledger_store: RedisStore) -> None:
    s = ledger_store
    users = one_user_per_shard(s)
    for u in users:
        s.add_credits(u, 10**12)
    made = len(users)
    rounds = -(-ENTRIES // len(users))
    made += charge_rounds(s, users, rounds * 2 // 5)  # a backlog before any flusher runs

    consumer = "long-run-flusher"
    code = CRASHING_FLUSHER.format(root=str(ROOT), url=REDIS_URL, namespace=s.settings.namespace,
                                   schema=s.settings.ledger_schema, database=DATABASE_URL, consumer=consumer)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in proc.stdout or []:
            lines.put(line.strip())

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        made += charge_rounds(s, users, rounds * 3 // 10)  # decisions go on while it flushes
        while (line := lines.get(timeout=120)) != "committed 3":
            assert line.startswith("committed"), line
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # stalled after its third commit: stored, never acknowledged
        proc.wait()
    assert 0 < rows(s)[0][0] < made
    assert stored_yet_pending(s) > 0  # the crash left entries committed in PostgreSQL, unacknowledged in Redis

    restarted = LedgerFlusher(s, DATABASE_URL, batch=2000, consumer=consumer, claim_idle_ms=500).start()
    try:
        made += charge_rounds(s, users, rounds - rounds * 2 // 5 - rounds * 3 // 10)  # and go on after
    finally:
        restarted.stop(timeout=60)
    restarted.drain(timeout=300)

    assert made >= ENTRIES
    assert rows(s) == [(made, made)]  # every entry once: none lost, none stored twice
    lag = s.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)
    assert s.reconcile_with_ledger() == {}  # and what PostgreSQL holds adds up to every balance


def large_namespace(s: RedisStore, users: int = 10_000, teams: int = 100, members: int = 10) -> int:
    """Users and teams with everything restore rebuilds; returns the ledger rows made (at least)."""
    ids = [f"user-{i}" for i in range(users)]
    later = datetime.now(timezone.utc) + timedelta(days=30)
    with_plans(s)
    for i, u in enumerate(ids):
        s.add_credits(u, 1_000_000, type="purchase" if i % 2 else "signup_bonus")
        if i % 7 == 0:
            s.add_credits(u, 500, expires_at=later)  # an expiring grant
        if i % 20 == 0:
            s.set_spend_cap(SpendCap(user_id=u, cap_type="monthly", limit=900_000, action="deny"))
        if i % 30 == 0:
            s.set_spend_cap(SpendCap(user_id=u, cap_type="daily", limit=50, action="warn", model="gpt-4o"))
        if i % 50 == 0:
            s.set_rate_limit(u, limit=10_000, period_seconds=1)
        if i % 100 == 0:
            s.set_quantity_limit(u, "tokens", 10**9, period_seconds=60)
        if i % 25 == 0:
            s.set_user_plan(u, "pro")
            assert s.charge_with_allowance(u, 40, "chat").error is None
    made = 0
    debits: list[str] = []
    for _ in range(10):  # the bulk of the rows: ten debits per user, a batch of 1 000 at a time
        for start in range(0, users, 1_000):
            results = s.charge_many([ChargeRequest(u, 7, "chat", metadata=CreditMetadata(model="gpt-4o"))
                                     for u in ids[start:start + 1_000]])
            assert all(r.error is None for r in results)
            debits.extend(r.transaction_id for r in results[::97])
            made += len(results)
    for tx in debits[::2]:
        assert s.refund_credits(tx, 3, reason="partly wrong").error is None
    for i, u in enumerate(ids[::10]):
        hold = s.reserve_credits(u, 100, "job", ttl_seconds=7 * 86_400)
        if i % 3 == 0:
            assert s.deduct_credits(u, hold.reservation_id, 60).error is None  # others stay open
    team_ids = []
    for t in range(teams):
        tid = s.create_team(f"team {t}", initial_balance=1_000_000).team_id
        team_ids.append(tid)
        for m in range(members):
            s.add_team_member(tid, ids[(t * members + m) % users], spend_cap=50_000 if m % 2 else None,
                              cap_period="daily" if m % 3 else "total")
        if t % 4 == 0:
            s.set_team_spend_cap(tid, "monthly", 900_000, "deny")
        s.reserve_team(tid, ids[t * members % users], 500, ttl_seconds=7 * 86_400)  # an open team hold
    for _ in range(5):
        team_results = s.deduct_team_many([TeamDebitRequest(tid, ids[(t * members + m) % users], 11)
                                           for t, tid in enumerate(team_ids) for m in range(members)])
        assert all(r.error is None for r in team_results)
        made += len(team_results)
    return made


def keys_that_differ(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def test_restoring_a_large_namespace_gives_back_every_key(ledger_store: RedisStore) -> None:
    s = ledger_store
    made = large_namespace(s)
    advance(s, 3_600)  # an hour on: nothing due yet (holds and grants last days)
    LedgerFlusher(s, DATABASE_URL, batch=20_000).drain(timeout=600)
    stored = rows(s)[0][0]
    assert stored >= max(made, ENTRIES)
    before = restorable_state(s)
    assert len(before) > 10_000

    drop_namespace(s.client, s.settings.namespace)  # Redis lost everything
    assert s.restore_from_ledger() > 10_000
    after = restorable_state(s)
    differ = keys_that_differ(before, after)
    assert not differ, [(k, before.get(k), after.get(k)) for k in differ[:5]]  # key by key, the first five shown
    assert s.reconcile_with_ledger() == {}
    assert s.charge("user-1", 1, "chat").error is None  # and decisions carry on from the restored state
