"""Hot-path benchmark: decisions/s and p50/p99 latency, side by side in one run.

Sections (each a function that prepares its state and returns a timed operation):
- the yardstick: ``../shared/bench/reference_debit.lua`` (balance + daily window + member counter +
  XADD) by a bare redis-py ``evalsha``, one call at a time and pipelined in batches of 100 — every
  row is also given as a ratio to it, and the issue's targets are printed under the table;
- raw ceilings: a bare redis-py ``evalsha`` of a minimal debit script (HGET balance, check,
  HSET, XADD one ledger entry), and a bare ``fcall`` of the store's own debit function with its
  arguments packed once (so ``charge`` against it measures exactly what the Python shell adds);
- ``RedisStore.charge`` (no caps; with a deny and a warn cap), ``reserve_credits`` + ``deduct_credits``;
- ``deduct_team`` on a pool of 1 000 members with member caps and a team cap;
- the ``limits`` library's moving-window ``hit()``;
- ``MemoryStore.charge`` (embedded fakeredis + lupa);
- batching: raw pipelined EVALSHA x100 (minimal script), the store's own debit_many function with the
  same 100 decisions packed once), the floor of a batched debit with the store's layout
  (bench/floor_debit_many.lua, one FCALL per shard by redis-py pipelining), ``charge_many`` x100 from
  one thread (and in namespaces of 8 shards and of 1 instead of 64, so fewer script calls per
  batch; and with each batch written in one piece instead of streamed), from 2 threads, x500
  (against the reference pipelined x500 and x100: no target, printed under the table), and async
  with 4 batches in flight; and the Redis-side bound: Redis' own time per decision of debit_many
  (one 256-decision call minus a PING), as the decisions/s one Redis core could reach doing nothing
  else;
- asyncio: bare ``redis.asyncio`` EVALSHA, ``AsyncRedisStore.charge`` and with auto-batching, 64
  concurrent tasks each.

Usage::

    python bench/hotpath.py                      # print the table
    python bench/hotpath.py --seconds 3 --rounds 3 --write   # and write bench/RESULTS.md
    python bench/hotpath.py --breakdown          # client CPU of each stage of charge / charge_many
    python bench/hotpath.py --timeline           # wall time of one charge_many x100, phase by phase
    python bench/hotpath.py --paired 30 --seconds 0.5   # each target's two rows in turn, ratio per pair
    python bench/hotpath.py --paired 30 --seconds 0.5 --busy 1   # the same with one core kept busy

The machine is noisy (2 cores): rounds are interleaved and the median round is reported;
quote ratios from one run, not absolute numbers. A round runs every section in turn, so a drift
in the machine's speed over minutes can fall on one row of a target and not on its yardstick;
``--paired`` runs only the targets' rows, back to back, and reports the ratio of each pair (its
median, quartiles and range); with ``--only``, a comparison's rows too (no target). ``--busy N``
runs N busy-looping processes beside any of these: the client and Redis then share what cores are
left, as on a loaded machine. Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import write_section

from ducto_redis import AsyncRedisStore, CreditMetadata, MemoryStore, RedisStore, SpendCap, connect
from ducto_redis.batch import Batch, ChargeRequest, charge_calls
from ducto_redis.connect import did_not_run, pack_calls
from ducto_redis.core import new_call_id
from ducto_redis.keys import USER, shard_of
from ducto_redis.scripts import scripts

URL = "redis://127.0.0.1:6379/0"
RICH = 10**15
WIRES = 64  # distinct pre-packed batches the wire-floor row sends in turn
REPLAYED = re.compile(rb"(?:^|\n)[a-z_]+\|1\|")  # a line of a "many" reply whose idempotent flag is set
REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "reference_debit.lua"

RAW_DEBIT = """
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal')) or 0
local amount = tonumber(ARGV[1])
if bal < amount then return {'insufficient_credits', bal} end
bal = bal - amount
redis.call('HSET', KEYS[1], 'bal', bal)
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'acct', ARGV[3], 'kind', 'debit', 'amount', -amount, 'bal', bal)
return {'ok', bal}
"""


@dataclass
class Result:
    name: str
    per_call: int  # decisions per timed call
    rates: list[float] = field(default_factory=list)
    samples: list[list[float]] = field(default_factory=list)
    cpu: list[tuple[float, float | None]] = field(default_factory=list)  # per decision: client s, Redis s

    @property
    def rate(self) -> float:
        return self.rates[self.median_round()]

    def median_round(self) -> int:
        """The round whose rate is the median (the lower middle one for an even count)."""
        order = sorted(range(len(self.rates)), key=self.rates.__getitem__)
        return order[(len(order) - 1) // 2]

    def cpu_us(self) -> tuple[float, float | None]:
        py, red = self.cpu[self.median_round()]
        return py / self.per_call * 1e6, None if red is None else red / self.per_call * 1e6

    def pct(self, q: float) -> float:
        best = self.samples[self.median_round()]
        s = sorted(best)
        return s[min(len(s) - 1, int(q * len(s)))] * 1e6


SyncOp = Callable[[], Any]
AsyncOp = Callable[[], Awaitable[Any]]


class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ns = "bench" + uuid.uuid4().hex[:8]
        self.client = redis.Redis.from_url(URL, decode_responses=True)
        self.cleanups: list[Callable[[], None]] = []
        self.last_cpu: tuple[float, float | None] = (0.0, None)
        self._m0: tuple[float, int | None] = (0.0, None)
        host = self.client.connection_pool.connection_kwargs.get("host", "")
        pid = self.client.info("server").get("process_id") if host in ("127.0.0.1", "localhost") else None
        self.redis_pid: int | None = int(pid) if pid else None

    def store(self, **overrides: Any) -> RedisStore:
        s = RedisStore.from_url(URL, namespace=self.ns, **overrides)
        s.setup()
        return s

    def drop(self) -> None:
        keys = list(self.client.scan_iter(match=f"{{{self.ns}:*", count=5000))
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])

    def trim_ledger(self) -> None:
        for k in self.client.scan_iter(match=f"{{{self.ns}:*:ledger", count=5000):
            self.client.delete(k)

    # CPU meters: this process (all threads) and, when Redis runs on this machine, the Redis
    # server's main thread (its schedstat run time), over the timed part of a section only

    def redis_cpu_ns(self) -> int | None:
        if self.redis_pid is None:
            return None
        try:
            with open(f"/proc/{self.redis_pid}/task/{self.redis_pid}/schedstat") as f:
                return int(f.read().split()[0])
        except OSError:
            return None

    def meter_start(self) -> None:
        self._m0 = (time.process_time(), self.redis_cpu_ns())

    def meter_stop(self, ops: int) -> None:
        py0, r0 = self._m0
        r1 = self.redis_cpu_ns()
        self.last_cpu = ((time.process_time() - py0) / max(ops, 1),
                         None if r0 is None or r1 is None else (r1 - r0) / 1e9 / max(ops, 1))

    def reload_scripts(self) -> None:
        """SCRIPT LOAD the bench's own script, FUNCTION LOAD the store's library (another user may
        flush either)."""
        self.client.script_load(RAW_DEBIT)
        next(iter(scripts().values())).library.load(self.client)

    def guarded(self, op: SyncOp) -> SyncOp:
        """``op``, run again after reloading the scripts when Redis says one is not loaded."""

        def run() -> Any:
            try:
                return op()
            except redis.ResponseError as exc:
                if not did_not_run(exc):
                    raise
                self.reload_scripts()
                return op()

        return run

    def time_sync(self, op: SyncOp) -> tuple[float, list[float]]:
        op = self.guarded(op)
        for _ in range(200):
            op()
        samples: list[float] = []
        end = time.perf_counter() + self.seconds
        self.meter_start()
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            op()
            t1 = time.perf_counter()
            samples.append(t1 - t0)
            if t1 > end:
                break
        self.meter_stop(len(samples))
        return len(samples) / (time.perf_counter() - start), samples

    def time_threads(self, ops: list[SyncOp]) -> tuple[float, list[float]]:
        """Every op in its own thread, looping for ``seconds``; rate of all of them together."""
        ops = [self.guarded(op) for op in ops]
        for op in ops:
            for _ in range(20):
                op()
        samples: list[float] = []
        end = time.perf_counter() + self.seconds

        def worker(op: SyncOp) -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                op()
                samples.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=worker, args=(op,)) for op in ops]
        self.meter_start()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.meter_stop(len(samples))
        return len(samples) / (time.perf_counter() - start), samples

    def time_async(self, make: Callable[[], Awaitable[tuple[AsyncOp, Callable[[], Awaitable[None]]]]],
                   tasks: int) -> tuple[float, list[float]]:
        async def run() -> tuple[float, list[float]]:
            op, close = await make()
            for _ in range(100):
                await op()
            samples: list[float] = []
            end = time.perf_counter() + self.seconds

            async def worker() -> None:
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    await op()
                    samples.append(time.perf_counter() - t0)

            self.meter_start()
            start = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(tasks)])
            rate = len(samples) / (time.perf_counter() - start)
            self.meter_stop(len(samples))
            await close()
            return rate, samples

        return asyncio.run(run())


# ── sections: each returns (decisions per call, runner) ─────────────────


def _charges(s: RedisStore, users: list[str]) -> list[ChargeRequest]:
    """A charge of 1 for each of ``users``, each given a balance that no run spends."""
    for u in users:
        s.add_credits(u, RICH)
    return [ChargeRequest(u, 1, "bench") for u in users]


def _reference(b: Bench) -> tuple[str, list[str]]:
    """The reference script loaded, its keys (shared/bench/README.md) and a rich balance."""
    sha = b.client.script_load(REFERENCE.read_text())
    keys = [f"ref:{{{b.ns}}}:bal", f"ref:{{{b.ns}}}:day", f"ref:{{{b.ns}}}:mem", f"ref:{{{b.ns}}}:ledger"]
    b.client.hset(keys[0], "balance", RICH)

    def drop() -> None:
        b.client.delete(*keys)

    b.cleanups.append(drop)
    return sha, keys


def reference_evalsha(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The yardstick: the reference debit script by a bare redis-py evalsha, its README's arguments."""
    sha, keys = _reference(b)
    it = iter(range(10**12))
    return 1, lambda: b.time_sync(
        lambda: b.client.evalsha(sha, 4, *keys, 1, RICH, "m1", RICH, f"e{next(it)}", 1735689600000, 90000))


def _reference_pipelined(b: Bench, size: int) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """redis-py pipelining the reference script in batches of ``size``."""
    sha, keys = _reference(b)
    it = iter(range(10**12))

    def op() -> None:
        p = b.client.pipeline(transaction=False)
        for _ in range(size):
            p.evalsha(sha, 4, *keys, 1, RICH, "m1", RICH, f"e{next(it)}", 1735689600000, 90000)
        p.execute()

    return size, lambda: b.time_sync(op)


def reference_pipelined_100(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The batched yardstick: redis-py pipelining the reference script in batches of 100."""
    return _reference_pipelined(b, 100)


def raw_evalsha(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    sha = b.client.script_load(RAW_DEBIT)
    keys = [f"{{{b.ns}:0}}:raw:acct", f"{{{b.ns}:0}}:ledger"]
    b.client.hset(keys[0], "bal", RICH)
    return 1, lambda: b.time_sync(lambda: b.client.evalsha(sha, 2, *keys, 1, str(uuid.uuid4()), "raw"))


def raw_same_script(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """Bare FCALL of the store's own debit function with arguments packed once: the shell's floor."""
    s = b.store()
    s.add_credits("same", RICH)
    call = s.core.debit("same", 1, operation_type="bench")
    assert call.script is not None
    function, keys, args = call.script.function, call.keys, call.args

    def op() -> Any:
        args[0] = new_call_id()  # a fresh call id, as the store makes (a repeated one is a replay)
        return b.client.fcall(function, len(keys), *keys, *args)

    return 1, lambda: b.time_sync(op)


def store_charge(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    s = b.store()
    s.add_credits("hot", RICH)
    return 1, lambda: b.time_sync(lambda: s.charge("hot", 1, "bench"))


def store_charge_deny_cap(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The charge the targets name (bench/instructions.py's case): one daily deny cap."""
    s = b.store()
    s.add_credits("deny", RICH)
    s.set_spend_cap(SpendCap(user_id="deny", cap_type="daily", limit=RICH, action="deny"))
    return 1, lambda: b.time_sync(lambda: s.charge("deny", 1, "bench"))


def store_charge_caps(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    s = b.store()
    s.add_credits("capped", RICH)
    s.set_spend_cap(SpendCap(user_id="capped", cap_type="daily", limit=RICH, action="deny"))
    s.set_spend_cap(SpendCap(user_id="capped", cap_type="monthly", model="gpt-4", limit=RICH, action="warn"))
    meta = CreditMetadata(model="gpt-4")
    return 1, lambda: b.time_sync(lambda: s.charge("capped", 1, "bench", metadata=meta))


def store_reserve_deduct(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    s = b.store()
    s.add_credits("job", RICH)

    def op() -> None:
        r = s.reserve_credits("job", 10, "bench")
        s.deduct_credits("job", r.reservation_id, 7)

    return 1, lambda: b.time_sync(op)


def team_deduct(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """deduct_team on a pool with 1 000 members, every third capped, and a team cap."""
    s = b.store()
    tid = s.create_team("bench-pool", initial_balance=RICH).team_id
    members = [f"tm-{i}" for i in range(1000)]
    for i, m in enumerate(members):
        s.add_credits(m, 0)
        s.add_team_member(tid, m, spend_cap=RICH if i % 3 == 0 else None, cap_period="daily")
    s.set_team_spend_cap(tid, "monthly", limit=RICH, action="deny")
    it = iter(range(10**12))
    return 1, lambda: b.time_sync(lambda: s.deduct_team(tid, members[next(it) % 1000], 1))


def limits_hit(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(RedisStorage(URL))
    item = RateLimitItemPerSecond(10**9)
    key = f"{b.ns}-limits"
    b.cleanups.append(lambda: limiter.clear(item, key))
    return 1, lambda: b.time_sync(lambda: limiter.hit(item, key))


def memory_charge(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    s = MemoryStore()
    s.add_credits("hot", RICH)
    return 1, lambda: b.time_sync(lambda: s.charge("hot", 1, "bench"))


def raw_pipelined_100(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    sha = b.client.script_load(RAW_DEBIT)
    keys = [f"{{{b.ns}:0}}:raw:acct", f"{{{b.ns}:0}}:ledger"]
    b.client.hset(keys[0], "bal", RICH)

    def op() -> None:
        p = b.client.pipeline(transaction=False)
        for _ in range(100):
            p.evalsha(sha, 2, *keys, 1, str(uuid.uuid4()), "raw")
        p.execute()

    return 100, lambda: b.time_sync(op)


def store_charge_many_100(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    s = b.store()
    reqs = _charges(s, [f"batch-{i}" for i in range(100)])
    return 100, lambda: b.time_sync(lambda: s.charge_many(reqs))


def store_charge_many_at_once(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """charge_many x100 as the row above, but each batch's calls written in one piece (not streamed
    a few at a time as they are built): what streaming buys when the client and Redis each have a core,
    and what it costs when they share one (``--busy 1``)."""
    s = b.store()
    reqs = _charges(s, [f"once-{i}" for i in range(100)])
    first, piece = connect.FIRST_PIECE, connect.PIECE

    def op() -> None:
        connect.FIRST_PIECE = connect.PIECE = 1 << 30
        try:
            s.charge_many(reqs)
        finally:
            connect.FIRST_PIECE, connect.PIECE = first, piece

    return 100, lambda: b.time_sync(op)


def reference_pipelined_500(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The batched yardstick in batches of 500 (as the x100 row)."""
    return _reference_pipelined(b, 500)


def store_charge_many_500(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """charge_many x500 on 500 users: ~all 64 shards, ~8 decisions per script call (x100: ~1.6)."""
    s = b.store()
    reqs = _charges(s, [f"batch500-{i}" for i in range(500)])
    return 500, lambda: b.time_sync(lambda: s.charge_many(reqs))


def raw_same_script_many_100(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The wire floor of charge_many x100: the store's own debit_many.lua calls for the same 100
    decisions, packed into bytes before the clock starts; each op only writes them and reads the
    replies (hiredis). Every call carries its own call ids (a re-sent call id is answered as a replay,
    which costs Redis far less than a decision): WIRES batches are packed ahead and sent in turn, and
    by the time one comes round again its call ids have long left each account's ring of recent ones."""
    s = b.store()
    users = [f"same-many-{i}" for i in range(100)]
    for u in users:
        s.add_credits(u, RICH)
    batches = [Batch(charge_calls(s.core, [ChargeRequest(u, 1, "bench") for u in users]), s.core.scripts).calls
               for _ in range(WIRES)]
    wires = [pack_calls(calls) for calls in batches]
    conn: Any = b.client.connection_pool.get_connection()
    b.cleanups.append(lambda: b.client.connection_pool.release(conn))
    turn = itertools.count()

    def op() -> None:
        i = next(turn) % WIRES
        conn.send_packed_command([wires[i]])
        errors: list[Exception] = []
        for _ in batches[i]:  # read every reply, so the connection stays in step
            try:
                reply = conn.read_response()
            except redis.ResponseError as exc:
                errors.append(exc)
                continue
            if REPLAYED.search(reply if isinstance(reply, bytes) else str(reply).encode()):
                errors.append(RuntimeError(f"a replay, not a decision: {reply[:80]!r}"))
        if errors:
            raise errors[0]

    return 100, lambda: b.time_sync(op)


FLOOR = Path(__file__).resolve().parent / "floor_debit_many.lua"


def floor_pipelined_100(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """The floor of a batched debit with the store's layout (bench/floor_debit_many.lua: per account an
    HMGET and an HSET, the ring of call ids, one ledger entry per call; no caps, holds, grants,
    idempotency keys or models) for 100 users grouped by the store's 64 shards as charge_many groups
    them, one FCALL per shard, by redis-py pipelining: what any batched debit on this layout costs."""
    b.client.function_load(FLOOR.read_text(), replace=True)

    def unload() -> None:
        b.client.function_delete("floor")

    b.cleanups.append(unload)
    groups: dict[int, tuple[list[str], list[str]]] = {}
    for i in range(100):
        user = f"floor-{i}"
        shard = shard_of("u", user, 64)
        tag = f"{{{b.ns}:{shard}}}"
        b.client.hset(f"{tag}:floor:{user}", "b", RICH)
        keys, _ = groups.setdefault(shard, ([f"{tag}:floor:ledger"], []))
        keys.append(f"{tag}:floor:{user}")
    frags = {key: f"\tbench\tu\t{key.rsplit(':', 1)[1]}\t\t\t\t\t\t" for keys, _ in groups.values() for key in keys}
    it = itertools.count()

    def op() -> None:
        p = b.client.pipeline(transaction=False)
        for keys, _ in groups.values():
            args: list[Any] = []
            for key in keys[1:]:
                args += [f"f{next(it):x}", 1, frags[key]]
            p.fcall("floor_many", len(keys), *keys, *args)
        p.execute()

    return 100, lambda: b.time_sync(op)


def _charge_many_in(shards: int) -> Callable[[Bench], tuple[int, Callable[[], tuple[float, list[float]]]]]:
    """charge_many x100 in a namespace of ``shards`` shards (the default is 64, ~55 script calls per
    batch of 100 users): 8 shards make ~8 calls, 1 shard one call of 100 — what the per-call cost
    (script prelude, TIME, XADD, reply framing) and the shard count weigh."""

    def section(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
        ns = f"{b.ns}s{shards}"
        s = RedisStore.from_url(URL, namespace=ns, shards=shards)
        s.setup()

        def drop() -> None:
            for k in list(b.client.scan_iter(match=f"{{{ns}:*", count=5000)):
                b.client.delete(k)

        b.cleanups.append(drop)
        reqs = _charges(s, [f"batch{shards}-{i}" for i in range(100)])
        return 100, lambda: b.time_sync(lambda: s.charge_many(reqs))

    return section


def store_charge_many_threads(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """charge_many x100 from 2 threads sharing one store: one batch packs while another is in Redis."""
    s = b.store()
    sets = [[ChargeRequest(f"thr-{t}-{i}", 1, "bench") for i in range(100)] for t in range(2)]
    for reqs in sets:
        for r in reqs:
            s.add_credits(r.user_id, RICH)
    def op_for(reqs: list[ChargeRequest]) -> SyncOp:
        return lambda: s.charge_many(reqs)

    return 100, lambda: b.time_threads([op_for(reqs) for reqs in sets])


def async_charge_many_in_flight(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """AsyncRedisStore.charge_many x100, 4 batches in flight."""
    users = [f"aio-many-{i}" for i in range(100)]

    async def make() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        s = AsyncRedisStore.from_url(URL, namespace=b.ns)
        await s.setup()
        for u in users:
            await s.add_credits(u, RICH, idempotency_key=f"seed-{u}")
        reqs = [ChargeRequest(u, 1, "bench") for u in users]
        return (lambda: s.charge_many(reqs)), s.close

    return 100, lambda: b.time_async(make, 4)


def redis_side_bound(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    """Redis' own time for debit_many: one call of 256 charges on one shard (Redis' CPU time for the
    call when Redis runs on this machine, else the call's wall time minus a PING round trip).

    The rate is 1 / (Redis time per decision): what one Redis core could decide if it did nothing
    else (no client cost, no round trips). It bounds every batched row above.
    """
    s = b.store()
    users: list[str] = []
    i = 0
    while len(users) < 256:
        if shard_of(USER, f"bound-{i}", s.settings.shards) == 0:
            users.append(f"bound-{i}")
        i += 1
    reqs = _charges(s, users)

    def run() -> tuple[float, list[float]]:
        per: list[float] = []
        end = time.perf_counter() + b.seconds
        while time.perf_counter() < end:
            call = Batch(charge_calls(s.core, reqs), s.core.scripts).calls[0]
            assert call.script is not None
            t0 = time.perf_counter()
            b.client.ping()
            t1 = time.perf_counter()
            r0 = b.redis_cpu_ns()
            try:
                b.client.fcall(call.script.function, len(call.keys), *call.keys, *call.args)
            except redis.ResponseError as exc:
                if not did_not_run(exc):
                    raise
                b.reload_scripts()
                continue
            r1 = b.redis_cpu_ns()
            t2 = time.perf_counter()
            # Redis' CPU time for the call when Redis is local, else wall time less a round trip
            per.append((r1 - r0) / 1e9 if r0 is not None and r1 is not None else max((t2 - t1) - (t1 - t0), 1e-9))
        best = statistics.median(per)
        b.last_cpu = (0.0, best)
        return 1 / best, [best]  # calls/s; x256 decisions per call

    return 256, run


def async_raw_64(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    keys = [f"{{{b.ns}:0}}:raw:acct", f"{{{b.ns}:0}}:ledger"]
    b.client.hset(keys[0], "bal", RICH)

    async def make() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        c = aioredis.Redis.from_url(URL, decode_responses=True, max_connections=64)
        sha = await c.script_load(RAW_DEBIT)
        async def op() -> Any:
            try:
                return await c.evalsha(sha, 2, *keys, 1, str(uuid.uuid4()), "raw")
            except NoScriptError:
                await c.script_load(RAW_DEBIT)
                return await c.evalsha(sha, 2, *keys, 1, str(uuid.uuid4()), "raw")

        return op, c.aclose

    return 1, lambda: b.time_async(make, 64)


def _async_store(b: Bench, **overrides: Any) -> Callable[[], Awaitable[tuple[AsyncOp, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[AsyncOp, Callable[[], Awaitable[None]]]:
        s = AsyncRedisStore.from_url(URL, namespace=b.ns, **overrides)
        await s.setup()
        await s.add_credits("ahot", RICH, idempotency_key="bench-seed")
        return (lambda: s.charge("ahot", 1, "bench")), s.close

    return make


def async_store_64(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    return 1, lambda: b.time_async(_async_store(b), 64)


def async_store_batched_64(b: Bench) -> tuple[int, Callable[[], tuple[float, list[float]]]]:
    return 1, lambda: b.time_async(_async_store(b, auto_batch_ms=1.0), 64)


SECTIONS: dict[str, Callable[[Bench], tuple[int, Callable[[], tuple[float, list[float]]]]]] = {
    "reference debit script, EVALSHA, 1 conn": reference_evalsha,
    "raw EVALSHA (minimal debit), 1 conn": raw_evalsha,
    "raw FCALL of the store's debit function, 1 conn": raw_same_script,
    "RedisStore.charge, 1 conn": store_charge,
    "RedisStore.charge with a daily deny cap": store_charge_deny_cap,
    "RedisStore.charge with deny+warn caps": store_charge_caps,
    "reserve_credits + deduct_credits (pair)": store_reserve_deduct,
    "deduct_team (1 000 members, caps on)": team_deduct,
    "limits moving-window hit()": limits_hit,
    "MemoryStore.charge (embedded)": memory_charge,
    "reference debit script, EVALSHA pipelined x100": reference_pipelined_100,
    "raw EVALSHA pipelined x100": raw_pipelined_100,
    "raw FCALL of debit_many x100, pre-packed (same function)": raw_same_script_many_100,
    "RedisStore.charge_many x100": store_charge_many_100,
    "RedisStore.charge_many x100, written at once": store_charge_many_at_once,
    "floor batched debit (bench/floor_debit_many.lua), pipelined x100": floor_pipelined_100,
    "reference debit script, EVALSHA pipelined x500": reference_pipelined_500,
    "RedisStore.charge_many x500": store_charge_many_500,
    "RedisStore.charge_many x100, 8-shard namespace": _charge_many_in(8),
    "RedisStore.charge_many x100, 1-shard namespace": _charge_many_in(1),
    "RedisStore.charge_many x100, 2 threads": store_charge_many_threads,
    "AsyncRedisStore.charge_many x100, 4 in flight": async_charge_many_in_flight,
    "Redis-side bound: debit_many alone, 256 per call": redis_side_bound,
    "redis.asyncio EVALSHA, 64 tasks": async_raw_64,
    "AsyncRedisStore.charge, 64 tasks": async_store_64,
    "AsyncRedisStore.charge auto-batch 1 ms, 64 tasks": async_store_batched_64,
}
BASELINE = "reference debit script, EVALSHA, 1 conn"
SAME = "raw FCALL of the store's debit function, 1 conn"
# the timed targets: (what, row, against, at least)
TARGETS = [
    ("charge vs the reference script", "RedisStore.charge with a daily deny cap", BASELINE, 0.95),
    ("charge vs limits' hit()", "RedisStore.charge with a daily deny cap", "limits moving-window hit()", 1.0),
    ("charge_many x100 vs the reference pipelined x100", "RedisStore.charge_many x100",
     "reference debit script, EVALSHA pipelined x100", 1.2),
]
# ratios printed under the table when both rows ran, with no target: (what, row, against)
COMPARISONS = [
    ("charge_many x500 vs the reference pipelined x100 (the issue's own baseline: calls of 500)",
     "RedisStore.charge_many x500", "reference debit script, EVALSHA pipelined x100"),
    ("the floor of a batched debit x100 vs the reference pipelined x100", "floor batched debit "
     "(bench/floor_debit_many.lua), pipelined x100", "reference debit script, EVALSHA pipelined x100"),
    ("charge_many x500 vs the reference pipelined x500", "RedisStore.charge_many x500",
     "reference debit script, EVALSHA pipelined x500"),
    ("charge_many x100 written at once vs the reference pipelined x100",
     "RedisStore.charge_many x100, written at once", "reference debit script, EVALSHA pipelined x100"),
]


def run(seconds: float, rounds: int, only: list[str] | None) -> list[Result]:
    b = Bench(seconds)
    names = [n for n in SECTIONS if not only or any(o in n for o in only)]
    for must in (SAME, BASELINE):
        if must not in names:
            names.insert(0, must)
    for _, row, against, _ in TARGETS:  # a target's two rows run together
        if row in names and against not in names:
            names.append(against)
    results = {n: Result(n, 1) for n in names}
    try:
        runners = {}
        for n in names:
            per_call, runner = SECTIONS[n](b)
            results[n].per_call = per_call
            runners[n] = runner
        for r in range(rounds):
            for n in names:  # interleaved rounds: noise spreads over every section
                rate, samples = runners[n]()
                results[n].rates.append(rate * results[n].per_call)
                results[n].samples.append(samples)
                results[n].cpu.append(b.last_cpu)
                b.last_cpu = (0.0, None)
                b.trim_ledger()
                print(f"round {r + 1}/{rounds} {n}: {rate * results[n].per_call:,.0f}/s", file=sys.stderr)
    finally:
        for c in b.cleanups:
            c()
        b.drop()
    return list(results.values())


def table(results: list[Result]) -> str:
    base = next(r for r in results if r.name == BASELINE).rate
    same = next(r for r in results if r.name == SAME).rate
    lines = [
        "| section | decisions/s | p50 µs | p99 µs | client CPU µs/decision | Redis CPU µs/decision "
        "| vs the reference | vs same-function FCALL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        py, red = r.cpu_us()
        lines.append(f"| {r.name} | {r.rate:,.0f} | {r.pct(0.5):,.0f} | {r.pct(0.99):,.0f} "
                     f"| {py:.1f} | {'n/a' if red is None else f'{red:.1f}'} "
                     f"| {r.rate / base:.2f}× | {r.rate / same:.2f}× |")
    by = {r.name: r for r in results}
    lines.append("")
    for what, row, against, floor in TARGETS:
        if row in by and against in by:
            ratio = by[row].rate / by[against].rate
            verdict = "met" if ratio >= floor else "not met"
            lines.append(f"- {what}: **{ratio:.2f}×** (target ≥ {floor:.2f}×: {verdict})")
    for what, row, against in COMPARISONS:
        if row in by and against in by:
            lines.append(f"- {what}: **{by[row].rate / by[against].rate:.2f}×** (no target)")
    if "RedisStore.charge with a daily deny cap" in by:
        mine, ref = by["RedisStore.charge with a daily deny cap"].cpu_us()[0], by[BASELINE].cpu_us()[0]
        lines.append(f"- client CPU per decision, charge vs redis-py's EVALSHA of the reference: **{mine / ref:.2f}×**")
    return "\n".join(lines)


def paired(seconds: float, pairs: int, only: list[str] | None) -> str:
    """Each timed target's two rows run in turn, ``seconds`` each, ``pairs`` times (which goes first
    alternating): the ratio of every pair, then their median, quartiles and range. A drift in the
    machine's speed over the run falls on both sides of a pair alike, where the table's rounds
    (every section in turn, minutes apart) let it fall on one row more than the other."""
    b = Bench(seconds)
    made: dict[str, tuple[int, Callable[[], tuple[float, list[float]]]]] = {}
    lines = ["| target | pairs | median ratio | quartiles | range | pairs at or past it |",
             "|---|---:|---:|---:|---:|---:|"]
    chosen: list[tuple[str, str, str, float | None]] = [
        t for t in TARGETS if not only or any(o in t[0] or o in t[1] for o in only)]
    chosen += [(what, row, against, None) for what, row, against in COMPARISONS
               if only and any(o in what or o in row for o in only)]
    try:
        for what, row, against, floor in chosen:
            for name in (row, against):
                if name not in made:
                    made[name] = SECTIONS[name](b)
            ratios: list[float] = []
            for k in range(pairs):
                rates: dict[str, float] = {}
                for name in ((row, against) if k % 2 == 0 else (against, row)):
                    per_call, runner = made[name]
                    rates[name] = runner()[0] * per_call
                    b.last_cpu = (0.0, None)
                    b.trim_ledger()
                ratios.append(rates[row] / rates[against])
                print(f"pair {k + 1}/{pairs} {what}: {ratios[-1]:.2f}x", file=sys.stderr)
            q1, median, q3 = statistics.quantiles(ratios, n=4)
            target = "(no target)" if floor is None else f"(≥ {floor:.2f}×)"
            past = "–" if floor is None else f"{sum(r >= floor for r in ratios)} of {pairs}"
            lines.append(f"| {what} {target} | {pairs} | **{median:.2f}×** | {q1:.2f}–{q3:.2f}× "
                         f"| {min(ratios):.2f}–{max(ratios):.2f}× | {past} |")
    finally:
        for c in b.cleanups:
            c()
        b.drop()
    return "\n".join(lines)


def breakdown(seconds: float) -> str:
    """Client CPU per decision of each stage of ``charge`` (with a daily deny cap) and of
    ``charge_many`` x100, each stage alone in a loop (so warmer caches than in the whole call: read
    the shares, and the whole call's row for what a decision costs)."""
    from ducto_redis.connect import lane_of, pack_calls, run_lane

    b = Bench(seconds)
    s = b.store()
    s.add_credits("deny", RICH)
    s.set_spend_cap(SpendCap(user_id="deny", cap_type="daily", limit=RICH, action="deny"))
    reqs = _charges(s, [f"bd-{i}" for i in range(100)])
    lane = lane_of(s.client)
    assert lane is not None, "the breakdown measures the lane (a plain redis.Redis client)"
    call = s.core.debit("deny", 1, operation_type="bench")
    raw = run_lane(lane, s.client, [call])[0]
    calls = charge_calls(s.core, reqs)
    batch = Batch(calls, s.core.scripts)
    replies = run_lane(lane, s.client, batch.calls)

    def fresh() -> None:  # a new call id each time: a repeated one is answered as a replay
        call.args[0] = new_call_id()
        run_lane(lane, s.client, [call])

    def take_all() -> None:
        for k, reply in enumerate(replies):
            batch.take(k, reply)

    stages: list[tuple[str, int, SyncOp]] = [
        ("charge: validate + build the call (core.debit)", 1, lambda: s.core.debit("deny", 1, operation_type="bench")),
        ("charge: pack (hiredis)", 1, lambda: pack_calls([call])),
        ("charge: round trip on the lane (take, write, read, give back; pre-built)", 1, fresh),
        ("charge: parse the reply", 1, lambda: call.parse(raw)),
        ("charge: the whole call", 1, lambda: s.charge("deny", 1, "bench")),
        ("charge_many x100: validate (charge_calls)", 100, lambda: charge_calls(s.core, reqs)),
        ("charge_many x100: validate, group and build every call (charge_calls + Batch)", 100,
         lambda: Batch(charge_calls(s.core, reqs), s.core.scripts)),
        ("charge_many x100: pack (hiredis)", 100, lambda: pack_calls(batch.calls)),
        ("charge_many x100: parse the replies (Batch.take)", 100, take_all),
        ("charge_many x100: the whole call", 100, lambda: s.charge_many(reqs)),
    ]
    lines = ["| stage | client CPU µs per decision |", "|---|---:|"]
    try:
        for label, per, op in stages:
            op = b.guarded(op)
            for _ in range(50):
                op()
            n, end = 0, time.perf_counter() + seconds
            t0 = time.process_time()
            while time.perf_counter() < end:
                op()
                n += 1
            lines.append(f"| {label} | {(time.process_time() - t0) / n / per * 1e6:.2f} |")
            b.trim_ledger()
    finally:
        b.drop()
    return "\n".join(lines)


def timeline(seconds: float) -> str:
    """Where the wall time of one ``charge_many`` x100 goes (median µs per batch): before its first
    write (validation, grouping, the first call built: Redis has nothing to run), writing the calls
    (each piece as soon as it is built, Redis running the ones before), reading and parsing the replies
    (waiting on Redis for most of it), and after the last reply. The lane's ``exchange`` is wrapped
    to take the times; nothing in the library changes."""
    from ducto_redis import connect

    b = Bench(seconds)
    s = b.store()
    reqs = _charges(s, [f"tl-{i}" for i in range(100)])
    marks: dict[str, float] = {}
    original = connect.Lane.exchange

    def exchange(self: Any, client: Any, packed: Any, count: int, each: Any = None) -> list[Any]:
        marks["enter"] = time.perf_counter()

        def pieces() -> Any:
            for piece in packed:
                marks.setdefault("first", time.perf_counter())
                yield piece
            marks["sent"] = time.perf_counter()

        replies = original(self, client, pieces(), count, each)
        marks["read"] = time.perf_counter()
        return replies

    phases: dict[str, list[float]] = {k: [] for k in ("before", "writing", "reading", "after", "whole")}
    connect.Lane.exchange = exchange  # type: ignore[method-assign]
    try:
        for _ in range(50):
            s.charge_many(reqs)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            marks.clear()
            t0 = time.perf_counter()
            s.charge_many(reqs)
            t1 = time.perf_counter()
            for name, value in (("before", marks["first"] - t0), ("writing", marks["sent"] - marks["first"]),
                                ("reading", marks["read"] - marks["sent"]), ("after", t1 - marks["read"]),
                                ("whole", t1 - t0)):
                phases[name].append(value * 1e6)
    finally:
        connect.Lane.exchange = original  # type: ignore[method-assign]
        b.drop()
    labels = {
        "before": "before the first write (validate, group, build the first call): Redis idle",
        "writing": "writing the calls as they are built (Redis runs the first ones)",
        "reading": "reading and parsing the replies as Redis answers them",
        "after": "after the last reply (the results handed back)",
        "whole": "the whole call",
    }
    lines = ["| charge_many x100 (100 users, 64 shards) | median µs per batch |", "|---|---:|"]
    lines += [f"| {labels[k]} | {statistics.median(v):,.0f} |" for k, v in phases.items()]
    return "\n".join(lines)


def main() -> None:
    global URL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per section per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="substrings of section names to run (baseline always runs)")
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    ap.add_argument("--url", default=URL, help=f"Redis to measure (default {URL})")
    ap.add_argument("--timeline", action="store_true",
                    help="where the wall time of one charge_many x100 goes, phase by phase")
    ap.add_argument("--paired", type=int, metavar="PAIRS",
                    help="instead: each timed target's two rows in turn, --seconds each, PAIRS times; "
                         "the ratio pair by pair (median, quartiles, range); --only picks targets and comparisons")
    ap.add_argument("--breakdown", action="store_true",
                    help="print only the client CPU of each stage of charge and charge_many x100")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="N busy-looping processes beside the run, each wanting a core: the machine "
                         "loaded, so the client and Redis share what is left (2 cores here: --busy 1)")
    args = ap.parse_args()
    URL = args.url
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        _main(args)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _main(args: argparse.Namespace) -> None:
    if args.timeline:
        print(timeline(args.seconds))
        return
    if args.breakdown:
        print(breakdown(args.seconds))
        return
    if args.paired:
        print(paired(args.seconds, args.paired, args.only))
        return
    text = table(run(args.seconds, args.rounds, args.only))
    print(text)
    if args.write:
        write_section(
            "Hot path", "python bench/hotpath.py " + " ".join(sys.argv[1:]),
            "Redis 7 on loopback; 2 noisy cores: read the ratios, not the absolute figures. Latency columns "
            "are per call (for x100 rows, per batch of 100); decisions/s counts decisions.", text,
        )


if __name__ == "__main__":
    main()
