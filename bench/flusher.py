"""Flusher benchmark: ledger entries/s into PostgreSQL, and the lag while decisions run.

1. throughput: N entries are made (charge_many), then one flusher drains them into Postgres
   (COPY -> INSERT ON CONFLICT DO NOTHING, idempotent) and entries/s are measured;
2. lag: producer processes run batched decisions as fast as they can while a flusher process
   runs; the age of the oldest unflushed entry is sampled every 20 ms (p50/p99).

Usage::

    python bench/flusher.py [--entries 200000] [--seconds 10] [--producers 2] [--write]

Needs the real Redis (127.0.0.1:6379) and Postgres (DUCTO_DATABASE_URL or the local `test` db).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from results import write_section

from ducto_redis import RedisStore
from ducto_redis.batch import ChargeRequest
from ducto_redis.ledger.flusher import LedgerFlusher, migrate

URL = "redis://127.0.0.1:6379/0"
DB = os.environ.get("DUCTO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
USERS = [f"acct-{i}" for i in range(2000)]


def make_store(ns: str, schema: str) -> RedisStore:
    return RedisStore.from_url(URL, namespace=ns, ledger_schema=schema)


def produce(ns: str, schema: str, count: int) -> int:
    s = make_store(ns, schema)
    made = 0
    while made < count:
        reqs = [ChargeRequest(USERS[(made + i) % len(USERS)], 1, "bench") for i in range(200)]
        s.charge_many(reqs)
        made += len(reqs)
    return made


def producer_loop(ns: str, schema: str, seconds: float, out: Any) -> None:
    s = make_store(ns, schema)
    end = time.time() + seconds
    made = 0
    i = 0
    while time.time() < end:
        reqs = [ChargeRequest(USERS[(i + j) % len(USERS)], 1, "bench") for j in range(200)]
        s.charge_many(reqs)
        made += len(reqs)
        i += 200
    out.put(made)


def flusher_loop(ns: str, schema: str, stop: Any) -> None:
    f = LedgerFlusher(make_store(ns, schema), DB, batch=20_000, block_ms=20, consumer=f"bench-{os.getpid()}")
    while not stop.is_set():
        f.flush_once(block=True)
    f.drain()


def run(entries: int, seconds: float, producers: int) -> dict[str, float]:
    ns, schema = "fbench" + uuid.uuid4().hex[:6], "fbench_" + uuid.uuid4().hex[:6]
    store = make_store(ns, schema)
    migrate(DB, schema)
    out: dict[str, float] = {}
    try:
        for u in USERS:
            store.add_credits(u, 10**15)
        LedgerFlusher(store, DB, batch=20_000).drain()
        # 1. throughput of an idempotent drain
        produce(ns, schema, entries)
        f = LedgerFlusher(store, DB, batch=20_000)
        t0 = time.perf_counter()
        moved = f.drain(timeout=600)
        out["drain_entries"] = moved
        out["drain_per_s"] = moved / (time.perf_counter() - t0)
        # 2. lag while producers decide as fast as they can
        ctx = mp.get_context("spawn")
        q, stop = ctx.Queue(), ctx.Event()
        fl = ctx.Process(target=flusher_loop, args=(ns, schema, stop))
        fl.start()
        prods = [ctx.Process(target=producer_loop, args=(ns, schema, seconds, q)) for _ in range(producers)]
        t0 = time.time()
        for p in prods:
            p.start()
        lags: list[int] = []
        while any(p.is_alive() for p in prods):
            lags.append(store.ledger_lag().oldest_unflushed_age_ms)
            time.sleep(0.02)
        decided = sum(q.get() for _ in prods)
        elapsed = time.time() - t0
        stop.set()
        fl.join(60)
        lags.sort()
        out["decisions_per_s"] = decided / elapsed
        out["lag_p50_ms"] = statistics.median(lags) if lags else 0
        out["lag_p99_ms"] = lags[int(0.99 * (len(lags) - 1))] if lags else 0
        with psycopg.connect(DB) as c:
            row = c.execute(f"SELECT COUNT(*), COUNT(DISTINCT entry_id) FROM {schema}.ledger").fetchone()
        assert row is not None
        out["rows"], out["distinct"] = row[0], row[1]
        out["expected_rows"] = len(USERS) + entries + decided
    finally:
        keys = list(store.client.scan_iter(match=f"{{{ns}:*", count=5000))
        for i in range(0, len(keys), 1000):
            store.client.delete(*keys[i : i + 1000])
        with psycopg.connect(DB, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return out


def table(r: dict[str, float], producers: int) -> str:
    return "\n".join([
        "| measure | value |",
        "|---|---:|",
        f"| idempotent drain into Postgres ({int(r['drain_entries']):,} entries, one flusher) "
        f"| {r['drain_per_s']:,.0f} entries/s |",
        f"| decisions/s during the lag run ({producers} producer processes, charge_many x200) "
        f"| {r['decisions_per_s']:,.0f} |",
        f"| lag (age of the oldest unflushed entry) p50 / p99 | {r['lag_p50_ms']:,.0f} ms / "
        f"{r['lag_p99_ms']:,.0f} ms |",
        f"| rows in Postgres / distinct / expected | {int(r['rows']):,} / {int(r['distinct']):,} / "
        f"{int(r['expected_rows']):,} |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    text = table(run(args.entries, args.seconds, args.producers), args.producers)
    print(text)
    if args.write:
        write_section("Flusher", "python bench/flusher.py " + " ".join(sys.argv[1:]),
                      "Redis 7 and PostgreSQL 15 on loopback, 2 noisy cores shared by producers, flusher "
                      "and both servers.", text)


if __name__ == "__main__":
    main()
