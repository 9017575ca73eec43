"""What MemoryStore's embedded ledger costs a decision: ``charge`` with and without the SQLite copy.

Three stores on the same machine, rounds interleaved, median round reported (charges/s):
a RedisStore over an in-process fakeredis (the same scripts, no ledger copy: MemoryStore before
its ledger), a MemoryStore with its ledger in memory, and one with its ledger in a SQLite file
(WAL, synchronous=FULL: each call's entries are on disk before it returns). Nothing is asserted.

    python bench/embedded_ledger.py --seconds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis
from results import interleaved, write_section

from ducto_redis import MemoryStore, RedisStore

BASE = "fakeredis, no ledger copy"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, RedisStore] = {
            BASE: RedisStore(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)),
            "MemoryStore, SQLite in memory (copied every 256 calls)": MemoryStore(),
            "MemoryStore, SQLite file (copied per call; WAL, synchronous=FULL)": MemoryStore(
                ledger_file=f"{tmp}/ledger.sqlite"),
        }
        ops: dict[str, Callable[[], object]] = {}
        for name, s in stores.items():
            s.add_credits("u", 10**15)
            ops[name] = lambda s=s: s.charge("u", 1, "chat")  # type: ignore[misc]
        rates = interleaved(ops, args.rounds, args.seconds)
    command = f"python bench/embedded_ledger.py --seconds {args.seconds:g} --rounds {args.rounds}"
    lines = ["| store | charge/s (median round) | vs no ledger copy |", "|---|---:|---:|"]
    lines += [f"| {name} | {r:,.0f} | {r / rates[BASE]:.2f}× |" for name, r in rates.items()]
    table = "\n".join(lines)
    print(f"command: {command}\n{table}")
    if args.write:
        write_section("Embedded ledger (MemoryStore)", command,
                      "Rounds interleaved; 2 noisy cores: read the ratios.", table)


if __name__ == "__main__":
    main()
