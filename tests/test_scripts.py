"""Script calls survive functions and the script cache flushed at any moment (another client, a restart,
a failover)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from ducto_redis.scripts import scripts

KEYS = ["{zz:0}:u:x", "{zz:0}:u:x:grants"]  # balance.lua's
ARGS = ["0|86400|100000|0|closed"]  # the configuration (lua/lib/01_base.lua config)


class FlushBeforeEveryCall:
    """A client on which every FCALL finds the functions just flushed, and every EVALSHA the
    script cache (the worst race: the library is gone again right after it was loaded)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fcalls = 0

    def fcall(self, *args: Any) -> Any:
        self.fcalls += 1
        self.inner.function_flush()
        return self.inner.fcall(*args)

    def evalsha(self, *args: Any) -> Any:
        self.inner.script_flush()
        return self.inner.evalsha(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AsyncFlushBeforeEveryCall(FlushBeforeEveryCall):
    async def fcall(self, *args: Any) -> Any:
        self.fcalls += 1
        await self.inner.function_flush()
        return await self.inner.fcall(*args)

    async def evalsha(self, *args: Any) -> Any:
        await self.inner.script_flush()
        return await self.inner.evalsha(*args)


def test_a_call_succeeds_even_when_the_cache_is_flushed_again_after_reloading(private_redis: Any) -> None:
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        flushing = FlushBeforeEveryCall(client)
        reply = scripts()["balance"].run(flushing, KEYS, ARGS)
        assert reply[0] == "ok" and flushing.fcalls == 2  # missing, loaded, missing again: EVAL
    finally:
        client.close()


def test_an_async_call_succeeds_even_when_the_cache_is_flushed_again_after_reloading(private_redis: Any) -> None:
    async def go() -> Any:
        client = aredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:
            return await scripts()["balance"].run_async(
                AsyncFlushBeforeEveryCall(client), KEYS, ARGS)
        finally:
            await client.aclose()

    assert asyncio.run(go())[0] == "ok"


def test_a_store_call_loads_the_library_when_it_is_missing_and_runs_once(private_redis: Any) -> None:
    from ducto_redis import RedisStore

    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store = RedisStore(client, namespace="loads")
    try:
        store.add_credits("u", 100, type="purchase")
        client.function_flush()  # a private server: nobody else's functions
        r = store.charge("u", 10, "chat")
        assert (r.error, r.balance_after) == (None, 90)
        assert client.function_list()  # loaded again by the call
    finally:
        client.close()


def test_a_store_call_falls_back_to_eval_when_the_library_is_gone_again_after_loading(
        private_redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducto_redis import RedisStore
    from ducto_redis.scripts import Library

    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store = RedisStore(client, namespace="evals")
    try:
        store.add_credits("u", 100, type="purchase")
        client.function_flush()
        monkeypatch.setattr(Library, "load", lambda self, c: True)  # "loaded", and flushed at once
        before = client.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)
        r = store.charge("u", 10, "chat")
        assert (r.error, r.balance_after) == (None, 90)
        assert client.info("commandstats")["cmdstat_eval"]["calls"] == before + 1
    finally:
        client.close()
