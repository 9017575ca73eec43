"""Script calls survive functions and the script cache flushed at any moment (another client, a restart,
a failover)."""

from __future__ import annotations

import asyncio
from typing import Any

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
