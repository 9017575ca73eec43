"""Cluster benchmark: decisions/s from 2 client processes on one Redis vs a 3-primary cluster.

Starts a throwaway 3-primary Redis Cluster on loopback (redis-server must be installed), runs the
same load against the single node at 127.0.0.1:6379 and against the cluster, and prints a table.

    python bench/cluster.py [--seconds 5] [--processes 2] [--write]

On this 2-core machine the three primaries and the clients share two cores, so the cluster
cannot show its scaling here; the figures show its overhead (redirect-free slot routing, one
pipeline per node for batches). On real hardware each primary adds one core of Lua execution.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import LocalCluster
from results import write_section

from ducto_redis import RedisStore
from ducto_redis.batch import ChargeRequest

SINGLE = "redis://127.0.0.1:6379/0"
USERS = [f"acct-{i}" for i in range(1000)]


def worker(url: str, ns: str, mode: str, seconds: float, out: Any) -> None:
    s = RedisStore.from_url(url, namespace=ns)
    made, i = 0, 0
    end = time.time() + seconds
    while time.time() < end:
        if mode == "charge":
            s.charge(USERS[i % len(USERS)], 1, "bench")
            made += 1
        else:
            s.charge_many([ChargeRequest(USERS[(i + j) % len(USERS)], 1, "bench") for j in range(100)])
            made += 100
        i += 1 if mode == "charge" else 100
    out.put(made)


def measure(url: str, mode: str, seconds: float, processes: int) -> float:
    ns = "cbench" + uuid.uuid4().hex[:6]
    s = RedisStore.from_url(url, namespace=ns)
    for u in USERS:
        s.add_credits(u, 10**15)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(url, ns, mode, seconds, q)) for _ in range(processes)]
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    keys = list(s.client.scan_iter(match=f"{{{ns}:*", count=5000))
    for k in keys:
        s.client.delete(k)
    return float(total / seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    cluster = LocalCluster()
    try:
        rows = []
        for mode in ("charge", "charge_many x100"):
            m = "charge" if mode == "charge" else "many"
            single = measure(SINGLE, m, args.seconds, args.processes)
            clustered = measure(cluster.url, m, args.seconds, args.processes)
            rows.append(f"| {mode}, {args.processes} processes | {single:,.0f} | {clustered:,.0f} | "
                        f"{clustered / single:.2f}× |")
    finally:
        cluster.stop()
    text = "\n".join(["| load | single node decisions/s | 3-primary cluster decisions/s | cluster / single |",
                      "|---|---:|---:|---:|", *rows])
    print(text)
    if args.write:
        write_section("Cluster", "python bench/cluster.py " + " ".join(sys.argv[1:]),
                      "Three primaries, two client processes and the single-node Redis all share this "
                      "machine's 2 cores: the table shows the cluster's overhead here, not its scaling.", text)

if __name__ == "__main__":
    main()
