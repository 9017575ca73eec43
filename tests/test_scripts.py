"""Script calls survive a script cache flushed at any moment (another client, a restart, a failover)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from conftest import REDIS_URL

from ducto_redis.scripts import prelude_for, scripts

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


# ── each script carries only the lib.lua definitions it uses ─────────────────────────────────────

LIB = """-- header
local MAX = 5

-- used by b
local function a(x)
  return x + MAX
end
local function b(x)
  return a(x)
end
local unused_t = { 1, 2 }
local p, q = 1, 2
local function c()
  return q
end
"""


def test_a_prelude_keeps_what_the_body_uses_directly_or_through_others_in_lib_order() -> None:
    kept = prelude_for("return b(1)", LIB)
    assert [line for line in kept.splitlines() if line.startswith("local")] == [
        "local MAX = 5", "local function a(x)", "local function b(x)"]
    assert "-- used by b" in kept and "-- header" in kept
    assert "local p, q = 1, 2" in prelude_for("return c()", LIB)
    assert "local function a" not in prelude_for("return c()", LIB)


def test_a_top_level_statement_that_defines_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="defines nothing"):
        prelude_for("return 1", LIB + "redis.call('SET', 'k', 'v')\n")


def test_scripts_leave_out_helpers_they_never_reach() -> None:
    every = scripts()
    assert "local function user_debit" in every["debit"].source
    assert "local function user_debit" not in every["sweep_due"].source
    assert "local function team_debit" not in every["add_credits"].source
    assert len(every["pricing_read"].source) < len(every["debit"].source) / 5
