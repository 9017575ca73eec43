"""Concurrency: many threads and processes hammering one account never overdraw it or lose a credit."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, ledger_entries, new_namespace

from ducto_redis import MemoryStore, RedisStore

START = 50_000


def hammer(store: RedisStore, user: str, ops: int, seed: int) -> int:
    """Random reserve / settle / release / charge; returns the sum of accepted debits."""
    rnd = random.Random(seed)
    spent = 0
    for _ in range(ops):
        choice = rnd.random()
        if choice < 0.35:
            d = store.charge(user, rnd.randint(1, 400), "race")
            if d.error is None:
                spent += -d.amount
            continue
        r = store.reserve_credits(user, rnd.randint(1, 500), "race", min_balance=0)
        if r.error:
            continue
        if choice < 0.45:
            store.release_reservation(user, r.reservation_id)
            continue
        actual = rnd.randint(0, r.amount + 200)  # sometimes more than the hold
        d = store.deduct_credits(user, r.reservation_id, actual)
        if d.error is None:
            spent += actual
        else:
            assert d.error == "insufficient_credits"
            assert store.release_reservation(user, r.reservation_id).error is None
    return spent


def threaded(store: RedisStore, user: str, threads: int, ops: int, seed: int) -> int:
    totals = [0] * threads

    def work(i: int) -> None:
        totals[i] = hammer(store, user, ops, seed * 100 + i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(totals)


def process_main(url: str, namespace: str, user: str, threads: int, ops: int, seed: int, out: Any) -> None:
    store = RedisStore.from_url(url, namespace=namespace)
    out.put(threaded(store, user, threads, ops, seed))


def assert_conserved(store: RedisStore, user: str, spent: int) -> None:
    bal = store.get_balance(user)
    assert bal.held == 0
    assert bal.balance == START - spent
    assert bal.balance >= 0
    entries = ledger_entries(store)
    assert all(int(e["bal"]) >= 0 and int(e["held"]) >= 0 for e in entries)
    assert all(int(e["bal"]) - int(e["held"]) >= 0 for e in entries)
    ledger_spent = -sum(int(e["amount"]) for e in entries if e["kind"] in ("debit", "settle"))
    assert ledger_spent == spent


@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_eight_threads_and_two_processes_never_overdraw_one_account(
    backend: str, request: pytest.FixtureRequest, redis_client: Any
) -> None:
    url = request.getfixturevalue("cluster").url if backend == "cluster" else REDIS_URL
    namespace = new_namespace()
    store = RedisStore.from_url(url, namespace=namespace)
    try:
        store.add_credits("hot", START)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=process_main, args=(url, namespace, "hot", 8, 150, p, q)) for p in range(2)]
        for p in procs:
            p.start()
        spent = sum(q.get(timeout=240) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert spent > START // 2  # the account was really contended down towards zero
        assert_conserved(store, "hot", spent)
    finally:
        drop_namespace(store.client, namespace)


def test_eight_threads_on_the_memory_store_never_overdraw_one_account() -> None:
    store = MemoryStore()
    store.add_credits("hot", START)
    spent = threaded(store, "hot", 8, 150, 7)
    assert_conserved(store, "hot", spent)
