"""Run one scenario on a sync store and on its async twin (fresh namespaces) and compare the results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import MemoryStore, RedisStore
from ducto_redis.aio import AsyncMemoryStore, AsyncRedisStore


def run_sync_and_async(
    backend: str, redis_client: Any,
    scenario_sync: Callable[[RedisStore], list[Any]],
    scenario_async: Callable[[AsyncRedisStore], Coroutine[Any, Any, list[Any]]],
) -> tuple[list[Any], list[Any]]:
    """(sync results, async results) of the same scenario on MemoryStore or the real Redis."""
    if backend == "memory":
        return scenario_sync(MemoryStore()), asyncio.run(scenario_async(AsyncMemoryStore()))
    ns1, ns2 = new_namespace(), new_namespace()
    try:
        sync_results = scenario_sync(RedisStore.from_url(REDIS_URL, namespace=ns1))

        async def go() -> list[Any]:
            s = AsyncRedisStore.from_url(REDIS_URL, namespace=ns2)
            try:
                return await scenario_async(s)
            finally:
                await s.close()

        return sync_results, asyncio.run(go())
    finally:
        drop_namespace(redis_client, ns1)
        drop_namespace(redis_client, ns2)


def comparable(results: list[Any], volatile: set[str]) -> list[dict[str, Any]]:
    """Each result as a dict without its volatile fields (fresh ids, times)."""
    return [{k: v for k, v in r.model_dump().items() if k not in volatile} for r in results]
