"""Server-side cost of one ``debit.lua`` call (Redis' own ``usec`` per FCALL of the debit function).

Client round trips dominate the hot-path bench on a loaded machine; this measures only the script,
on a private ``redis-server`` this command starts (and stops) on a free loopback port, so its
statistics can be reset without touching a shared server. Cases:

- ``plain``: accounts without expiring grants (the common case);
- ``3 grants``: accounts with three expiring grants (grant consumption on every debit).

Usage::

    python bench/debit_cost.py --rounds 5 --batches 30

Each round: ``batches`` × 100 pipelined charges over 100 accounts; the best round is reported.
Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ducto_redis import RedisStore
from ducto_redis.batch import charge_calls
from ducto_redis.connect import run_pipelined


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(client: redis.Redis, store: RedisStore, grants: int, rounds: int, batches: int) -> float:
    users = [f"u{i}" for i in range(100)]
    for u in users:
        store.add_credits(u, 10**12)
        for d in range(grants):
            store.add_credits(u, 10**9, expires_at=datetime.now(timezone.utc) + timedelta(days=d + 1))
    reqs: list[Any] = [{"user_id": u, "amount": 1, "operation_type": "x"} for u in users]
    best = float("inf")
    for _ in range(rounds):
        client.config_resetstat()  # the private server's statistics only
        for _ in range(batches):
            run_pipelined(client, charge_calls(store.core, reqs))
        stats = client.info("commandstats")  # the debit function's calls (or EVALSHA, before functions)
        used = [stats[k] for k in ("cmdstat_fcall", "cmdstat_evalsha") if k in stats]
        best = min(best, sum(float(u["usec"]) for u in used) / sum(int(u["calls"]) for u in used))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=30)
    opts = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("needs a redis-server binary on PATH")
    port, folder = free_port(), tempfile.mkdtemp(prefix="ducto-cost-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        cases: list[tuple[str, dict[str, Any], int]] = [("plain", {}, 0), ("3 grants", {}, 3)]
        print("| debit.lua case | server µs per call |\n|---|---:|")
        for i, (name, overrides, grants) in enumerate(cases):
            store = RedisStore(client, namespace=f"cost{i}", **overrides)
            print(f"| {name} | {measure(client, store, grants, opts.rounds, opts.batches):.2f} |")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
