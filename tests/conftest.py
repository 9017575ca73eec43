"""One table of stores: every behaviour runs on MemoryStore, on RedisStore over the real Redis (and a
Redis Cluster), and on their async twins AsyncMemoryStore and AsyncRedisStore (through
``async_facade.AsyncStoreFacade``: the same test, the async store's coroutines).

The table's parameters are marked by backend: ``pytest -m memory`` runs the embedded stores only
(no Redis needed), ``-m redis`` the real Redis ones, ``-m async`` the async stores. Each test gets
its own namespace on the real Redis, deleted afterwards. ``--slow`` enables the long runs (marked
``slow``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from async_facade import AsyncStoreFacade

from ducto_redis import MemoryStore, RedisStore
from ducto_redis.ledger.copy_text import entry_rows

REDIS_URL = os.environ.get("DUCTO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DUCTO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="run the long tests too")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow"):
        os.environ["DUCTO_SLOW"] = "1"  # long profiles (model-based test: many more examples)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long run: pass --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


def drop_namespace(client: Any, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{{{namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # CI starts Redis; a developer without one is told how
        pytest.fail(f"Redis is not answering at {REDIS_URL} ({exc}); start it or run .ci/run")
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def shared_redis_is_never_flushed() -> Iterator[None]:
    """The shared Redis may serve others: a sentinel function library and script, loaded at the start,
    must still be there at the end (FUNCTION FLUSH or SCRIPT FLUSH anywhere in the run fails it)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        yield  # the redis_client fixture says why the real-Redis tests cannot run
        return
    name = "sentinel_" + uuid.uuid4().hex[:12]
    client.function_load(f"#!lua name={name}\nredis.register_function('{name}', function() return 1 end)")
    sha = client.script_load(f"return '{name}'")
    yield
    try:
        functions_kept = bool(client.function_list(library=name))
        scripts_kept = client.script_exists(sha) == [True]
        with contextlib.suppress(redis.ResponseError):
            client.function_delete(name)
    finally:
        client.close()
    assert functions_kept and scripts_kept, "a test flushed functions or scripts on the shared Redis"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        # cluster bus ports are port + 10000: keep them below 65536
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    if any(p + 10000 > 65535 for p in ports):
        return _free_ports(n)
    return ports


class LocalCluster:
    """A real 3-primary Redis Cluster on loopback, in a temporary folder."""

    def __init__(self, primaries: int = 3) -> None:
        self.dir = tempfile.mkdtemp(prefix="ducto-cluster-")
        self.ports = _free_ports(primaries)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true"

    def _start(self) -> None:
        for p in self.ports:
            subprocess.run(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{p}.conf", "--save", "", "--appendonly", "no",
                 "--daemonize", "yes", "--dir", self.dir, "--logfile", f"{self.dir}/{p}.log"],
                check=True,
            )
        for p in self.ports:
            self._wait(lambda p=p: redis.Redis(port=p).ping())
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL,
        )
        for p in self.ports:
            self._wait(lambda p=p: redis.Redis(port=p).cluster("INFO").get("cluster_state") == "ok")

    @staticmethod
    def _wait(check: Any, seconds: float = 20) -> None:
        deadline = time.time() + seconds
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.time() > deadline:
                raise RuntimeError("Redis Cluster did not come up")
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.ports:
            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=p).shutdown(nosave=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A plain redis-server of the tests' own on a free loopback port, in a temporary folder.

    Tests that flush server-wide state (FUNCTION FLUSH, SCRIPT FLUSH) run here: the shared Redis
    may serve other users and other test runs at the same time.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ducto-redis-")
        (self.port,) = _free_ports(1)
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--dir", self.dir, "--logfile", f"{self.dir}/redis.log"],
            check=True,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        LocalCluster._wait(lambda: redis.Redis(port=self.port).ping())

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=self.port).shutdown(nosave=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server started for this test session only (see :class:`PrivateRedis`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on this machine: tests that flush a private Redis are skipped")
    server = PrivateRedis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("no redis-server/redis-cli binary on this machine: the Redis Cluster backend is skipped")
    c = LocalCluster()
    yield c
    c.stop()


def make_store(kind: str, redis_client: Any, **overrides: Any) -> RedisStore:
    namespace = new_namespace()
    if kind == "memory":
        return MemoryStore(namespace, **overrides)
    if kind.endswith("-async"):  # the async store, called like the sync one (tests/async_facade.py)
        if kind == "memory-async":
            facade = AsyncStoreFacade.memory(namespace, **overrides)
        else:
            url = os.environ["DUCTO_TEST_PRIVATE_URL"] if kind == "private-async" else REDIS_URL
            facade = AsyncStoreFacade.redis(url, namespace, **overrides)
        return facade  # type: ignore[return-value]  # the sync store's methods, run on the async store
    if kind == "cluster":
        url = os.environ["DUCTO_TEST_CLUSTER_URL"]
        return RedisStore.from_url(url, namespace=namespace, **overrides)
    if kind == "private":
        return RedisStore.from_url(os.environ["DUCTO_TEST_PRIVATE_URL"], namespace=namespace, **overrides)
    return RedisStore.from_url(REDIS_URL, namespace=namespace, **overrides)


ASYNC = getattr(pytest.mark, "async")  # "async" is a keyword: pytest.mark.async cannot be written


def backend(kind: str) -> Any:
    """A parameter of the table, marked with its backend (``-m memory``, ``-m redis``, ``-m async``)."""
    marks = [pytest.mark.memory if kind.startswith("memory") else pytest.mark.redis]
    if kind.endswith("-async"):
        marks.append(ASYNC)
    return pytest.param(kind, marks=marks)


def embedded(store: Any) -> bool:
    """Whether a store of the table runs on the in-process server (MemoryStore, AsyncMemoryStore)."""
    return isinstance(getattr(store, "twin", store), MemoryStore)


def _table_store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    kind = request.param
    if kind == "cluster":
        os.environ["DUCTO_TEST_CLUSTER_URL"] = request.getfixturevalue("cluster").url
    if kind.startswith("private"):
        os.environ["DUCTO_TEST_PRIVATE_URL"] = request.getfixturevalue("private_redis").url
    redis_client = None if kind.startswith("memory") else request.getfixturevalue("redis_client")
    s = make_store(kind, redis_client)
    yield s
    if not kind.startswith("memory"):
        drop_namespace(s.client, s.settings.namespace)
    if kind != "memory":
        s.close()


@pytest.fixture(params=[backend(k) for k in ("memory", "redis", "cluster", "memory-async", "redis-async")])
def store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """Each store of the table (the memory ones need no Redis)."""
    yield from _table_store(request)


@pytest.fixture(params=[backend(k) for k in ("memory", "private", "cluster", "memory-async", "private-async")])
def flushable_store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """The store table for tests that flush functions or scripts: the real Redis backend is a private
    server of the tests' own, never the shared one."""
    yield from _table_store(request)


@pytest.fixture
def ledger_store(redis_client: Any) -> Iterator[RedisStore]:
    """A RedisStore with its own namespace and its own Postgres ledger schema (dropped afterwards)."""
    import psycopg

    try:
        psycopg.connect(DATABASE_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering at {DATABASE_URL} ({exc}); start it or run .ci/run")
    schema = "t_" + uuid.uuid4().hex[:10]
    store = RedisStore.from_url(REDIS_URL, namespace=new_namespace(), ledger_schema=schema,
                                database_url=DATABASE_URL)
    assert store.setup().success
    yield store
    store.stop_flusher()
    drop_namespace(redis_client, store.settings.namespace)
    with psycopg.connect(DATABASE_URL, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def snapshot(store: RedisStore) -> dict[str, Any]:
    """Every key of the store's namespace with its type, value and TTL presence."""
    c = store.client
    out: dict[str, Any] = {}
    for key in sorted(c.scan_iter(match=f"{{{store.settings.namespace}:*", count=1000)):
        t = c.type(key)
        if t == "hash":
            v: Any = c.hgetall(key)
        elif t == "string":
            v = c.get(key)
        elif t == "zset":
            v = c.zrange(key, 0, -1, withscores=True)
        elif t == "stream":
            v = c.xrange(key)
        elif t == "set":
            v = sorted(c.smembers(key))
        else:
            v = t
        out[key] = (t, v)
    return out


_ACCOUNT_KEY = re.compile(r"\{[^}]*\}:([ut]):[^:]*")


def restorable_state(store: RedisStore, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a restore must bring back: every key of the namespace but streams and idempotency keys (not
    restored by design) and keys ending with ``skip``;
    account hashes by what they mean (ducto_redis.ledger.restore.account_meaning: balances, spend,
    caps, holds, members, plans...; not the ring of recent calls, the rate limiter's position, or how
    a rolled-over window is written down), other values exactly (JSON decoded)."""
    from ducto_redis.layout import Account
    from ducto_redis.ledger.restore import account_meaning

    sec, usec = store.client.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000 + store.core.clock_offset_ms
    out: dict[str, Any] = {}
    for key, (t, v) in snapshot(store).items():
        if t == "stream" or ":i:" in key or ":ri:" in key or key.endswith(skip or ("\0",)):
            continue
        account = _ACCOUNT_KEY.fullmatch(key)
        if t == "hash" and account:
            team = account.group(1) == "t"
            v = account_meaning(Account.decode(v, team), now_ms, team)
        elif t == "hash":
            v = {f: (json.loads(x) if x.startswith("{") else x) for f, x in v.items()}
        out[key] = (t, v)
    return out


def advance(store: RedisStore, seconds: float) -> None:
    """Move the scripts' clock forward (the test clock offset)."""
    store.core.clock_offset_ms += int(seconds * 1000)


def ledger_entries(store: RedisStore) -> list[dict[str, str]]:
    """Every ledger row of every shard, in stream order per shard (a batch's rows share an entry)."""
    out: list[dict[str, str]] = []
    for shard, stream in enumerate(store.core.keys.all_ledger_streams()):
        for sid, fields in store.client.xrange(stream):
            out.extend(entry_rows(shard, sid, fields))
    return out


def event_entries(store: RedisStore) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for stream in store.core.keys.all_events_streams():
        out.extend(fields for _id, fields in store.client.xrange(stream))
    return out


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many operations the model-based tests made (tests/INVARIANTS.md quotes it)."""
    support = sys.modules.get("model_support")
    counts = getattr(support, "OPERATIONS", None)
    if counts:
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"model-based operations: {sum(counts.values()):,} ({parts})")
