"""4 processes x 4 threads, 20 members (some capped), one pool of 100 000: nothing overdraws."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, ledger_entries, new_namespace

from ducto_redis import RedisStore

POOL = 100_000
MEMBERS = [f"member-{i}" for i in range(20)]
CAPS = {m: (3_000 if i % 3 == 0 else None) for i, m in enumerate(MEMBERS)}


def hammer(url: str, ns: str, tid: str, seed: int, ops: int) -> dict[str, int]:
    store = RedisStore.from_url(url, namespace=ns)
    rnd = random.Random(seed)
    accepted: dict[str, int] = {}
    for _ in range(ops):
        m = rnd.choice(MEMBERS)
        if rnd.random() < 0.25:
            h = store.reserve_team(tid, m, rnd.randint(1, 600))
            if h.error:
                continue
            actual = rnd.randint(0, h.amount + 300)
            r = store.settle_team_reservation(tid, m, h.reservation_id, actual)
            if r.error is None:
                accepted[m] = accepted.get(m, 0) + actual
            else:
                store.release_team_reservation(tid, m, h.reservation_id)
            continue
        amount = rnd.randint(1, 900)
        r = store.deduct_team(tid, m, amount)
        if r.error is None:
            accepted[m] = accepted.get(m, 0) + amount
        else:
            assert r.error in ("spend_cap_exceeded", "insufficient_team_balance"), r.error
    return accepted


def process_main(url: str, ns: str, tid: str, proc: int, out: Any) -> None:
    totals: dict[str, int] = {}
    lock = threading.Lock()

    def work(t: int) -> None:
        got = hammer(url, ns, tid, proc * 10 + t, 120)
        with lock:
            for k, v in got.items():
                totals[k] = totals.get(k, 0) + v

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(totals)


@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_racing_members_never_overdraw_the_pool_or_exceed_their_caps(
    backend: str, request: pytest.FixtureRequest, redis_client: Any
) -> None:
    url = request.getfixturevalue("cluster").url if backend == "cluster" else REDIS_URL
    ns = new_namespace()
    store = RedisStore.from_url(url, namespace=ns)
    try:
        tid = store.create_team("racers", initial_balance=POOL).team_id
        for m in MEMBERS:
            store.add_credits(m, 0)
            store.add_team_member(tid, m, spend_cap=CAPS[m])
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=process_main, args=(url, ns, tid, p, q)) for p in range(4)]
        for p in procs:
            p.start()
        accepted: dict[str, int] = {}
        for _ in procs:
            for k, v in q.get(timeout=240).items():
                accepted[k] = accepted.get(k, 0) + v
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        pool = store.get_team_balance(tid)
        members = {m.user_id: m for m in store.get_team_members(tid)}
        total = sum(accepted.values())
        assert pool.balance >= 0 and pool.held == 0
        assert POOL - pool.balance == total  # the pool dropped by exactly the accepted debits
        assert sum(m.total_spent for m in members.values()) == total
        for m, row in members.items():
            assert row.total_spent == accepted.get(m, 0)
            cap = CAPS[m]
            if cap is not None:
                assert row.total_spent <= cap
        assert total > POOL // 2  # the pool was really contended
        entries = [e for e in ledger_entries(store) if e["acct"] == tid and "bal" in e]
        assert all(int(e["bal"]) >= 0 and int(e["bal"]) - int(e["held"]) >= 0 for e in entries)
    finally:
        drop_namespace(store.client, ns)
