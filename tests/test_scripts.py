"""Script calls survive a script cache flushed at any moment (another client, a restart, a failover)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aredis
from conftest import REDIS_URL

from ducto_redis.scripts import scripts

KEYS = ["{zz:0}:u:x", "{zz:0}:u:x:holds", "{zz:0}:u:x:hexp", "{zz:0}:u:x:grants"]  # balance.lua's


class FlushBeforeEveryEvalsha:
    """A client on which every EVALSHA finds the script cache just flushed (the worst race)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def evalsha(self, *args: Any) -> Any:
        self.inner.script_flush()
        return self.inner.evalsha(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AsyncFlushBeforeEveryEvalsha(FlushBeforeEveryEvalsha):
    async def evalsha(self, *args: Any) -> Any:
        await self.inner.script_flush()
        return await self.inner.evalsha(*args)


def test_a_call_succeeds_even_when_the_cache_is_flushed_again_after_reloading(redis_client: Any) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        reply = scripts()["balance"].run(FlushBeforeEveryEvalsha(client), KEYS, ["0"])
        assert reply[0] == "ok"
    finally:
        client.close()


def test_an_async_call_succeeds_even_when_the_cache_is_flushed_again_after_reloading(redis_client: Any) -> None:
    async def go() -> Any:
        client = aredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            return await scripts()["balance"].run_async(
                AsyncFlushBeforeEveryEvalsha(client), KEYS, ["0"])
        finally:
            await client.aclose()

    assert asyncio.run(go())[0] == "ok"
