"""What MemoryStore's embedded ledger costs a decision: ``charge`` with and without the SQLite copy.

Three stores on the same machine, rounds interleaved, median round reported (charges/s):
a RedisStore over an in-process fakeredis (the same scripts, no ledger copy: MemoryStore before
its ledger), a MemoryStore with its ledger in memory, and one with its ledger in a SQLite file
(WAL, synchronous=FULL: each call's entries are on disk before it returns). Nothing is asserted.

    python bench/embedded_ledger.py --seconds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis

from ducto_redis import MemoryStore, RedisStore


def timed(op: Callable[[], object], seconds: float) -> float:
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        op()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = RedisStore(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
        stores: dict[str, RedisStore] = {
            "fakeredis, no ledger copy": bare,
            "MemoryStore, SQLite in memory": MemoryStore(),
            "MemoryStore, SQLite file (WAL, synchronous=FULL)": MemoryStore(ledger_file=f"{tmp}/ledger.sqlite"),
        }
        for s in stores.values():
            s.add_credits("u", 10**15)
        rates: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(args.rounds):
            for name, s in stores.items():
                rates[name].append(timed(lambda s=s: s.charge("u", 1, "chat"), args.seconds))  # type: ignore[misc]
        base = statistics.median(rates["fakeredis, no ledger copy"])
        print(f"command: python bench/embedded_ledger.py --seconds {args.seconds:g} --rounds {args.rounds}")
        print("| store | charges/s (median round) | vs no ledger copy |")
        print("|---|---:|---:|")
        for name, r in rates.items():
            print(f"| {name} | {statistics.median(r):,.0f} | {statistics.median(r) / base:.2f}× |")


if __name__ == "__main__":
    main()
