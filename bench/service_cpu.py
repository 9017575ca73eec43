"""The decision service's CPU per request, in process, against the plain endpoint's (issue 15).

Calls each ASGI app directly, as uvicorn would (scope, receive, send; the headers locust and Caddy
send), ``--concurrency`` requests in flight on one event loop, against the real Redis: the plain
Starlette endpoint (bench/plain_endpoint.py: one bare redis.asyncio EVALSHA of the reference debit)
``POST /charge`` and ``GET /auth``, and the service's ``POST /v1/charge`` and ``GET /v1/authorize``
(a route costing 1 credit). Prints each side's CPU time per request (``time.process_time`` over
``--requests`` requests, the median of ``--rounds`` interleaved rounds) and the ratios. With one
uvicorn worker saturated, server CPU per request is what decides req/s (bench/service.py); this
measures the part the apps own, without HTTP parsing and sockets, which both sides pay alike.

``--stub`` answers every Redis call with a reply recorded once (no I/O): the Python cost alone.
``--profile TARGET`` prints a cProfile of one target's last round (slower; for finding, not figures).

    python bench/service_cpu.py --requests 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import json
import os
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service import cleanup, seed  # bench/service.py: the same accounts, the same way

from ducto_redis import Settings
from ducto_redis import aio as aio_module
from ducto_redis.routes import RouteTable
from ducto_redis.service.app import create_app

BENCH = Path(__file__).resolve().parent
URL = os.environ.get("DUCTO_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = "bench-svc-cpu"
TOKEN = "bench-token"
ACCOUNTS = 200
PREFIX = "cpu-"
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Make = Callable[[int], tuple[dict[str, Any], bytes]]


def account(i: int) -> str:
    return f"{PREFIX}{i % ACCOUNTS}"


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
            "state": {}}


def charge(path: str, auth: bool) -> Make:
    """A POST of a charge's JSON body, as locust's FastHttpUser sends it."""
    def make(i: int) -> tuple[dict[str, Any], bytes]:
        body = json.dumps({"user_id": account(i), "amount": 1, "operation_type": "bench"}).encode()
        headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"python/gevent-http-client-1.5"),
                   (b"accept-encoding", b"gzip, deflate"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if auth:
            headers.append((b"authorization", b"Bearer " + TOKEN.encode()))
        return scope("POST", path, headers), body
    return make


def forward_auth(path: str) -> Make:
    """A forward-auth subrequest as Caddy sends it: the client's headers and X-Forwarded-*."""
    def make(i: int) -> tuple[dict[str, Any], bytes]:
        headers = [(b"host", b"127.0.0.1:8081"), (b"user-agent", b"python/gevent-http-client-1.5"),
                   (b"accept-encoding", b"gzip, deflate"), (b"x-api-key", account(i).encode()),
                   (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-host", b"127.0.0.1:8081"),
                   (b"x-forwarded-method", b"GET"), (b"x-forwarded-proto", b"http"),
                   (b"x-forwarded-uri", b"/chat"), (b"x-ducto-token", TOKEN.encode())]
        return scope("GET", path, headers), b""
    return make


async def drive(app: App, make: Make, n: int, concurrency: int) -> dict[int, int]:
    """``n`` requests, ``concurrency`` at a time; the count of each status answered."""
    statuses: dict[int, int] = {}

    async def one(i: int) -> None:
        sc, body = make(i)
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(sc, receive, send)

    async def worker(w: int) -> None:
        for i in range(w, n, concurrency):
            await one(i)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return statuses


def stub_redis(plain: Any) -> None:
    """Answer every script call with the first reply Redis gave to that script (no I/O)."""
    names = vars(aio_module)  # the store's I/O, as ducto_redis.aio calls it
    real = names["run_pipelined_async"]
    replies: dict[str, list[Any]] = {}

    async def run_pipelined_async(client: Any, calls: Any) -> list[Any]:
        name = calls[0].script.function
        if name not in replies or len(calls) != 1:
            replies[name] = await real(client, calls)
        return replies[name]

    names["run_pipelined_async"] = run_pipelined_async

    async def evalsha(*args: Any) -> list[int]:
        return [1, 10**15]

    plain.client.evalsha = evalsha


async def run(args: argparse.Namespace) -> None:
    spec = importlib.util.spec_from_file_location("plain_endpoint", BENCH / "plain_endpoint.py")
    assert spec is not None and spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    service = create_app(Settings(redis_url=URL, namespace=NS, service_tokens=TOKEN),
                         routes=RouteTable([{"method": "GET", "path": "/chat", "cost": 1}]))
    if args.stub:
        stub_redis(plain)
    targets: dict[str, tuple[App, Make]] = {
        "plain POST /charge": (plain.app, charge("/charge", False)),
        "service POST /v1/charge": (service, charge("/v1/charge", True)),
        "plain GET /auth": (plain.app, forward_auth("/auth")),
        "service GET /v1/authorize": (service, forward_auth("/v1/authorize")),
    }
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    for name, (app, make) in targets.items():
        print(name, await drive(app, make, 500, args.concurrency))  # warm up; the statuses answered
    for r in range(args.rounds):
        for name, (app, make) in targets.items():
            profile = cProfile.Profile() if args.profile == name and r == args.rounds - 1 else None
            start = time.process_time()
            if profile:
                profile.enable()
            await drive(app, make, args.requests, args.concurrency)
            if profile:
                profile.disable()
            cpu[name].append((time.process_time() - start) / args.requests * 1e6)
            if profile:
                pstats.Stats(profile).sort_stats("tottime").print_stats(40)
    med = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"\nCPU µs per request, median of {args.rounds} rounds of {args.requests} "
          f"({'stubbed Redis' if args.stub else 'real Redis'}, {args.concurrency} in flight):")
    for name, v in med.items():
        print(f"  {name:28s} {v:6.1f}   rounds: {' '.join(f'{x:.1f}' for x in cpu[name])}")
    print(f"  /v1/charge vs /charge:      {med['service POST /v1/charge'] / med['plain POST /charge']:.2f}×")
    print(f"  /v1/authorize vs /auth:     {med['service GET /v1/authorize'] / med['plain GET /auth']:.2f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--stub", action="store_true", help="no Redis I/O: replies recorded once")
    ap.add_argument("--profile", metavar="TARGET", help='e.g. "service GET /v1/authorize"')
    args = ap.parse_args()
    cleanup(NS, PREFIX)
    seed(ACCOUNTS, NS, PREFIX)
    try:
        asyncio.run(run(args))
    finally:
        cleanup(NS, PREFIX)


if __name__ == "__main__":
    main()
