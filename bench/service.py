"""The decision service against its yardstick, with locust, in one run (issue 15's figures).

Starts, on loopback: the plain Starlette endpoint (bench/plain_endpoint.py: one bare redis.asyncio
EVALSHA of the shared reference debit per request) and ``ducto-redis serve``, both under uvicorn
with the same settings, with 1 and then 2 workers; then Caddy in front of each, again with 1 and 2
workers behind it (``forward_auth`` to the plain endpoint's ``/auth`` or to the service's
``/v1/authorize``, the upstream a Caddy ``respond``). Each target gets the same locust load
(FastHttpUser, ``--users``) for ``--seconds``; both sides of a pair run at once and the load
alternates between them, ``--rounds`` times. Prints
median req/s, p50 and p99, the servers' CPU per request (their process trees' CPU time over the
requests served: less sensitive to the machine's other load) and the ratios; ``--write`` puts them
into bench/RESULTS.md.

    python bench/service.py --seconds 20 --rounds 3 --users 32 --write
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gateway_support import free_port, wait_port

from ducto_redis import RedisStore

BENCH = Path(__file__).resolve().parent
TOKEN = "bench-token"
NS = "bench-svc"
URL = os.environ.get("DUCTO_REDIS_URL", "redis://127.0.0.1:6379/0")


class Server(str):
    """A started server: its base URL (the str), and its process id (``pid``)."""

    pid: int


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds of these processes and all their descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    wanted, total, frontier = set(pids), 0.0, list(pids)
    while frontier:
        p = frontier.pop()
        total += stats.get(p, (0, 0.0))[1]
        kids = [c for c, (ppid, _) in stats.items() if ppid == p and c not in wanted]
        wanted.update(kids)
        frontier.extend(kids)
    return total


@contextlib.contextmanager
def process(cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: str | None = None) -> Iterator[Server]:
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        time.sleep(1.0)  # every worker up
        server = Server(f"http://127.0.0.1:{port}")
        server.pid = proc.pid
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def plain(workers: int) -> contextlib.AbstractContextManager[Server]:
    """The plain endpoint under uvicorn with the service's settings, its HTTP protocol included
    (ducto_redis/service/nodelay.py: without it, 2 workers leave Nagle on and every keep-alive
    request waits ~40 ms for a delayed ACK, on both sides of a pair)."""
    port = free_port()
    run = ("import sys, uvicorn; from ducto_redis.service.nodelay import NoDelayHTTP; sys.path.insert(0, sys.argv[1]); "
           "uvicorn.run('plain_endpoint:app', port=int(sys.argv[2]), workers=int(sys.argv[3]), log_level='warning', "
           "access_log=False, http=NoDelayHTTP)")
    return process([sys.executable, "-c", run, str(BENCH), str(port), str(workers)], port)


def service(workers: int, routes: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    return process([sys.executable, "-m", "ducto_redis.cli", "--redis-url", URL, "--namespace", NS, "serve",
                    "--port", str(port), "--workers", str(workers), "--routes", str(routes)], port,
                   {"DUCTO_SERVICE_TOKENS": TOKEN})


def caddy(auth_url: str, auth_uri: str, tmp: str) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    host = auth_url.removeprefix("http://")
    d = tempfile.mkdtemp(dir=tmp)
    conf = Path(d) / "Caddyfile"
    conf.write_text(f"""{{
	admin off
	auto_https off
	storage file_system {d}/data
}}
http://127.0.0.1:{port} {{
	log {{
		output discard
	}}
	forward_auth {host} {{
		uri {auth_uri}
		header_up X-Ducto-Token {TOKEN}
		copy_headers X-Credits-Remaining
	}}
	respond "ok" 200
}}
""")
    env = {"HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}
    return process([shutil.which("caddy") or "caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
                   port, env)


def locust(user: str, host: str, seconds: int, users: int, tmp: str) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, failures) of one headless locust run."""
    prefix = os.path.join(tmp, user + str(time.time_ns()))
    subprocess.run([sys.executable, "-m", "locust", "-f", str(BENCH / "locustfile.py"), user, "--host", host,
                    "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", prefix,
                    "--only-summary", "--loglevel", "WARNING"],
                   check=False, env={**os.environ, "DUCTO_BENCH_TOKEN": TOKEN, "DUCTO_NAMESPACE": NS},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(prefix + "_stats.csv", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return float(row["Requests/s"]), float(row["50%"]), float(row["99%"]), int(row["Failure Count"])


def seed(accounts: int, ns: str = NS, prefix: str = "acct-") -> None:
    """Accounts ``<prefix>0`` .. in the service's namespace ``ns`` and, for the plain endpoint, the
    reference script's balances of the same names (its README: preset to 10**15)."""
    store = RedisStore.from_url(URL, namespace=ns)
    for i in range(accounts):
        store.add_credits(f"{prefix}{i}", 10**12, type="purchase", idempotency_key=f"bench-seed-{i}")
    store.close()
    client = redis.Redis.from_url(URL)
    pipe = client.pipeline(transaction=False)
    for i in range(accounts):
        pipe.hset(f"ref:{{{prefix}{i}}}:bal", "balance", 10**15)
    pipe.execute()
    client.close()


def cleanup(ns: str = NS, prefix: str = "acct-") -> None:
    """Every key :func:`seed` and the runs made."""
    client = redis.Redis.from_url(URL)
    for pattern in (f"{{{ns}:*", f"ref:{{{prefix}*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    client.close()


Result = tuple[float, float, float, int, float]  # req/s, p50 ms, p99 ms, failures, server CPU ms per request


def compare(
    base: list[Server], ours: list[Server], user: tuple[str, str], rounds: int, seconds: int, users: int, tmp: str
) -> tuple[Result, Result]:
    """Alternate the same load on the yardstick and on ours, ``rounds`` times each; medians of
    req/s and latency, and the servers' CPU per request over all rounds (less sensitive to the
    machine's other load than req/s)."""
    runs: dict[int, list[tuple[float, float, float, int]]] = {0: [], 1: []}
    cpu = [0.0, 0.0]
    requests = [0.0, 0.0]
    for _ in range(rounds):
        for side, servers in enumerate((base, ours)):
            before = cpu_seconds(*(s.pid for s in servers))
            r = locust(user[side], servers[-1], seconds, users, tmp)
            cpu[side] += cpu_seconds(*(s.pid for s in servers)) - before
            requests[side] += r[0] * seconds
            runs[side].append(r)

    def summary(side: int) -> Result:
        rs = runs[side]
        return (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                statistics.median(r[2] for r in rs), sum(r[3] for r in rs), 1000 * cpu[side] / max(requests[side], 1))

    return summary(0), summary(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    os.environ["DUCTO_BENCH_ACCOUNTS"] = str(args.accounts)
    rows: list[tuple[str, Result, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="ducto-bench-") as tmp:
        routes = Path(tmp) / "routes.json"
        routes.write_text('{"routes": [{"method": "GET", "path": "/chat", "cost": 1}]}')
        cleanup()
        seed(args.accounts)
        try:
            for workers in (1, 2):
                with plain(workers) as purl, service(workers, routes) as surl:
                    base, ours = compare([purl], [surl], ("PlainUser", "ServiceUser"), args.rounds, args.seconds,
                                         args.users, tmp)
                rows.append((f"plain endpoint `POST /charge` (bare EVALSHA), {workers} worker(s)", base, "", ""))
                rows.append((f"service `POST /v1/charge`, {workers} worker(s)", ours, f"{ours[0] / base[0]:.2f}×",
                             f"{ours[4] / base[4]:.2f}×"))
            for workers in (1, 2):
                with plain(workers) as purl, caddy(purl, "/auth", tmp) as pc, service(workers, routes) as surl, \
                        caddy(surl, "/v1/authorize", tmp) as sc:
                    base, ours = compare([purl, pc], [surl, sc], ("ForwardAuthUser",) * 2, args.rounds, args.seconds,
                                         args.users, tmp)
                rows.append((f"Caddy forward_auth → plain endpoint `/auth`, {workers} worker(s)", base, "", ""))
                rows.append((f"Caddy forward_auth → service `/v1/authorize`, {workers} worker(s)", ours,
                             f"{ours[0] / base[0]:.2f}×", f"{ours[4] / base[4]:.2f}×"))
        finally:
            cleanup()
    table = ["| target | req/s (median) | p50 ms | p99 ms | failures | server CPU ms/request | req/s vs the yardstick "
             "above | CPU per request vs the yardstick |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (rps, p50, p99, fails, cpu), ratio, cpu_ratio in rows:
        table.append(f"| {name} | {rps:,.0f} | {p50:.0f} | {p99:.0f} | {fails} | {cpu:.2f} | {ratio} | {cpu_ratio} |")
    text = "\n".join(table)
    print(text)
    if args.write:
        from results import write_section

        note = (f"locust FastHttpUser, {args.users} users, {args.rounds} alternating rounds of {args.seconds} s per "
                f"target (medians), {args.accounts} accounts, "
                "uvicorn with the same settings for both apps, Caddy 2.6 (Debian), Redis 7, all on one noisy 2-core "
                "machine (locust, the servers and Redis share the cores): read the ratios, from this one run.")
        write_section("Decision service (locust)", "python bench/service.py " + " ".join(sys.argv[1:]), note, text)


if __name__ == "__main__":
    main()
