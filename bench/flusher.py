"""Flusher benchmark: ledger entries/s into PostgreSQL, and the lag while decisions run.

1. throughput: ``--entries`` entries are made (charge_many), then ONE flusher drains them into
   Postgres (idempotent by entry id: a fresh batch is COPYed into the ledger, a duplicate id
   falls back to COPY -> INSERT ON CONFLICT DO NOTHING) and entries/s are measured. With
   ``--flushers N`` (N > 1) as many entries again are drained by N flusher processes at once,
   reported as an aggregate figure;
2. lag: ``--producers`` processes run batched decisions (charge_many x200) for ``--seconds``, as
   fast as they can, or at ``--rate`` decisions/s in all, while ``--lag-flushers`` flusher processes
   (default one) run; the age
   of the oldest unflushed entry is sampled every 20 ms (p50/p99, sampling starts after 1 s).
   ``--synthetic`` makes the producers XADD debit-shaped entries straight into the streams
   instead of deciding: the flusher's lag at an entry rate the Python producers cannot reach.

Every run checks the ledger at the end: rows, distinct entry ids, and the entries expected.

Usage::

    python bench/flusher.py [--entries 200000] [--seconds 10] [--producers 2] [--rate 0]
                            [--flushers 1] [--lag-flushers 1] [--synthetic] [--write]

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
from ducto_redis.layout import ROW_COLUMNS, ROW_FIELD
from ducto_redis.ledger.flusher import LedgerFlusher, migrate

URL = "redis://127.0.0.1:6379/0"
DB = os.environ.get("DUCTO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
USERS = [f"acct-{i}" for i in range(2000)]
BATCH = 200


def make_store(ns: str, schema: str) -> RedisStore:
    return RedisStore.from_url(URL, namespace=ns, ledger_schema=schema)


def produce(ns: str, schema: str, count: int) -> int:
    s = make_store(ns, schema)
    made = 0
    while made < count:
        s.charge_many([ChargeRequest(USERS[(made + i) % len(USERS)], 1, "bench") for i in range(BATCH)])
        made += BATCH
    return made


def synthetic_entries(s: RedisStore, made: int) -> None:
    """BATCH debit-shaped ledger entries XADDed straight to the shards' streams (no decision), in
    the scripts' layout: one field (``layout.ROW_FIELD``) holding the row, its values in
    ``layout.ROW_COLUMNS`` order (see ducto_redis/ledger/copy_text.py)."""
    streams = s.core.keys.all_ledger_streams()
    pipe = s.client.pipeline(transaction=False)
    now = str(int(time.time() * 1000))
    for j in range(BATCH):
        values = {"ts": now, "id": f"syn-{os.getpid()}-{made + j}", "ak": "u", "acct": USERS[(made + j) % len(USERS)],
                  "kind": "debit", "amount": "-1", "bal": "999", "held": "0", "op": "bench"}
        row = "\t".join(values.get(f, "") for f in ROW_COLUMNS)
        pipe.xadd(streams[(made + j) % len(streams)], {ROW_FIELD: row})
    pipe.execute()


def producer_loop(ns: str, schema: str, seconds: float, rate: float, start: float, synthetic: bool,
                  out: Any) -> None:
    """charge_many x200 (or synthetic entries) until ``start + seconds``; at most ``rate``/s if rate > 0."""
    s = make_store(ns, schema)
    while time.time() < start:
        time.sleep(0.001)
    end = start + seconds
    made = 0
    while (now := time.time()) < end:
        if rate and made > (now - start) * rate:
            time.sleep(min(0.005, made / rate - (now - start)))
            continue
        if synthetic:
            synthetic_entries(s, made)
        else:
            s.charge_many([ChargeRequest(USERS[(made + j) % len(USERS)], 1, "bench") for j in range(BATCH)])
        made += BATCH
    out.put(made)


def flusher_run(ns: str, schema: str, stop: Any) -> None:
    f = LedgerFlusher(make_store(ns, schema), DB, batch=20_000, block_ms=20, consumer=f"bench-{os.getpid()}")
    f.run(stop)
    f.drain()


def flusher_drain(ns: str, schema: str, start: float, out: Any) -> None:
    f = LedgerFlusher(make_store(ns, schema), DB, batch=20_000, consumer=f"drain-{os.getpid()}")
    while time.time() < start:
        time.sleep(0.001)
    moved = f.drain(timeout=600)
    out.put((moved, time.time()))


def count_rows(schema: str) -> tuple[int, int]:
    with psycopg.connect(DB) as c:
        row = c.execute(f"SELECT COUNT(*), COUNT(DISTINCT entry_id) FROM {schema}.ledger").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run(entries: int, seconds: float, producers: int, rate: float, flushers: int,
        lag_flushers: int, synthetic: bool) -> dict[str, float]:
    ns, schema = "fbench" + uuid.uuid4().hex[:6], "fbench_" + uuid.uuid4().hex[:6]
    store = make_store(ns, schema)
    migrate(DB, schema)
    out: dict[str, float] = {}
    ctx = mp.get_context("spawn")
    expected = 0
    try:
        for u in USERS:
            store.add_credits(u, 10**15)
        expected += len(USERS)
        LedgerFlusher(store, DB, batch=20_000).drain()
        # 1. throughput of one flusher draining a backlog
        expected += produce(ns, schema, entries)
        f = LedgerFlusher(store, DB, batch=20_000)
        t0 = time.perf_counter()
        moved = f.drain(timeout=600)
        out["drain_entries"] = moved
        out["drain_per_s"] = moved / (time.perf_counter() - t0)
        # 1b. N flusher processes draining a backlog together
        if flushers > 1:
            expected += produce(ns, schema, entries)
            q = ctx.Queue()
            start = time.time() + 3.0  # every process up and connected before the clock starts
            procs = [ctx.Process(target=flusher_drain, args=(ns, schema, start, q)) for _ in range(flushers)]
            for p in procs:
                p.start()
            results = [q.get() for _ in procs]
            for p in procs:
                p.join()
            out["multi_entries"] = sum(m for m, _ in results)
            out["multi_per_s"] = out["multi_entries"] / (max(t for _, t in results) - start)
        # 2. lag while producers decide
        q, stop = ctx.Queue(), ctx.Event()
        fls = [ctx.Process(target=flusher_run, args=(ns, schema, stop)) for _ in range(lag_flushers)]
        for fl in fls:
            fl.start()
        time.sleep(2.0)
        start = time.time() + 2.0
        prods = [ctx.Process(target=producer_loop, args=(ns, schema, seconds, rate / producers, start, synthetic, q))
                 for _ in range(producers)]
        for p in prods:
            p.start()
        lags: list[int] = []
        while time.time() < start + seconds:
            if time.time() >= start + 1.0:
                lags.append(store.ledger_lag().oldest_unflushed_age_ms)
            time.sleep(0.02)
        decided = sum(q.get() for _ in prods)
        for p in prods:
            p.join()
        expected += decided
        stop.set()
        for fl in fls:
            fl.join(120)
        lags.sort()
        out["decisions_per_s"] = decided / seconds
        out["lag_p50_ms"] = statistics.median(lags) if lags else 0
        out["lag_p99_ms"] = lags[int(0.99 * (len(lags) - 1))] if lags else 0
        out["rows"], out["distinct"] = count_rows(schema)
        out["expected_rows"] = expected
    finally:
        keys = list(store.client.scan_iter(match=f"{{{ns}:*", count=5000))
        for i in range(0, len(keys), 1000):
            store.client.delete(*keys[i : i + 1000])
        with psycopg.connect(DB, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return out


def table(r: dict[str, float], producers: int, rate: float, flushers: int, lag_flushers: int,
          synthetic: bool) -> str:
    lines = [
        "| measure | value |",
        "|---|---:|",
        f"| drain into Postgres, idempotent by entry id ({int(r['drain_entries']):,} entries, one flusher) "
        f"| {r['drain_per_s']:,.0f} entries/s |",
    ]
    if "multi_per_s" in r:
        lines.append(f"| the same with {flushers} flusher processes at once ({int(r['multi_entries']):,} entries, "
                     f"aggregate) | {r['multi_per_s']:,.0f} entries/s |")
    paced = f"paced at {rate:,.0f}/s" if rate else "as fast as they can"
    what = (f"entries/s appended during the lag run (synthetic: {producers} processes XADD debit-shaped "
            f"entries x{BATCH}, no decision" if synthetic else
            f"decisions/s during the lag run ({producers} producer processes, charge_many x{BATCH}")
    lines += [
        f"| {what}, {paced}; "
        f"{lag_flushers} flusher process{'es' if lag_flushers > 1 else ''}) | {r['decisions_per_s']:,.0f} |",
        f"| lag (age of the oldest unflushed entry) p50 / p99 | {r['lag_p50_ms']:,.0f} ms / "
        f"{r['lag_p99_ms']:,.0f} ms |",
        f"| rows in Postgres / distinct / expected | {int(r['rows']):,} / {int(r['distinct']):,} / "
        f"{int(r['expected_rows']):,} |",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=0.0, help="decisions/s in all during the lag run (0: flat out)")
    ap.add_argument("--flushers", type=int, default=1, help="also drain with this many flusher processes at once")
    ap.add_argument("--lag-flushers", type=int, default=1, help="flusher processes during the lag run")
    ap.add_argument("--synthetic", action="store_true",
                    help="lag run: XADD ledger entries directly instead of deciding (isolates the flusher)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    r = run(args.entries, args.seconds, args.producers, args.rate, args.flushers, args.lag_flushers, args.synthetic)
    text = table(r, args.producers, args.rate, args.flushers, args.lag_flushers, args.synthetic)
    print(text)
    if args.write:
        write_section("Flusher", "python bench/flusher.py " + " ".join(sys.argv[1:]),
                      "Redis 7 and PostgreSQL 15 on loopback, 2 noisy cores shared by producers, flusher "
                      "and both servers.", text)


if __name__ == "__main__":
    main()
