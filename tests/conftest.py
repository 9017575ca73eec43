"""One table of stores: every behaviour runs on MemoryStore and on RedisStore over the real Redis.

Each test gets its own namespace on the real Redis, deleted afterwards. ``--slow`` enables the
long runs (marked ``slow``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ducto_redis import MemoryStore, RedisStore

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


def make_store(kind: str, redis_client: redis.Redis, **overrides: Any) -> RedisStore:
    namespace = new_namespace()
    if kind == "memory":
        return MemoryStore(namespace, **overrides)
    return RedisStore.from_url(REDIS_URL, namespace=namespace, **overrides)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Iterator[RedisStore]:
    s = make_store(request.param, redis_client)
    yield s
    if request.param == "redis":
        drop_namespace(redis_client, s.settings.namespace)
        s.close()


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


def advance(store: RedisStore, seconds: float) -> None:
    """Move the scripts' clock forward (the test clock offset)."""
    store.core.clock_offset_ms += int(seconds * 1000)


def ledger_entries(store: RedisStore) -> list[dict[str, str]]:
    """Every ledger entry of every shard, in stream order per shard."""
    out: list[dict[str, str]] = []
    for stream in store.core.keys.all_ledger_streams():
        out.extend(fields for _id, fields in store.client.xrange(stream))
    return out


def event_entries(store: RedisStore) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for stream in store.core.keys.all_events_streams():
        out.extend(fields for _id, fields in store.client.xrange(stream))
    return out
