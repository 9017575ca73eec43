"""The async store's plan, allowance and pricing methods give the sync store's results."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import MemoryStore, PlanDefinition, PricingConfigData, RedisStore
from ducto_redis.aio import AsyncMemoryStore, AsyncRedisStore

CONFIG = PricingConfigData(models={"_default": "input_tokens * 0.001"},
                           plans={"pro": PlanDefinition(id="pro", name="Pro", free_allowance=50)})
VOLATILE = {"transaction_id", "id", "period_start", "period_end", "created_at"}


def scenario_sync(s: RedisStore) -> list[Any]:
    s.set_active_pricing(CONFIG, label="a")
    s.add_credits("u", 100)
    out: list[Any] = [s.set_user_plan("u", "pro"), s.get_user_plan("u"), s.check_allowance("u")]
    s.increment_usage_window("u", "pro", 20)
    out += [s.check_allowance("u"), s.charge_with_allowance("u", 40, "chat", idempotency_key="k"),
            s.charge_with_allowance("u", 40, "chat", idempotency_key="k"), s.charge_with_allowance("u", 200, "chat"),
            s.get_active_pricing(), *s.get_pricing_history(), s.get_balance("u")]
    return out


async def scenario_async(s: AsyncRedisStore) -> list[Any]:
    await s.set_active_pricing(CONFIG, label="a")
    await s.add_credits("u", 100)
    out: list[Any] = [await s.set_user_plan("u", "pro"), await s.get_user_plan("u"), await s.check_allowance("u")]
    await s.increment_usage_window("u", "pro", 20)
    out += [await s.check_allowance("u"), await s.charge_with_allowance("u", 40, "chat", idempotency_key="k"),
            await s.charge_with_allowance("u", 40, "chat", idempotency_key="k"),
            await s.charge_with_allowance("u", 200, "chat"),
            await s.get_active_pricing(), *await s.get_pricing_history(), await s.get_balance("u")]
    return out


def comparable(results: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.model_dump().items() if k not in VOLATILE} for r in results]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_async_plan_methods_equal_the_sync_ones(backend: str, redis_client: Any) -> None:
    if backend == "memory":
        sync_results = scenario_sync(MemoryStore())
        async_results = asyncio.run(scenario_async(AsyncMemoryStore()))
    else:
        ns1, ns2 = new_namespace(), new_namespace()
        try:
            sync_results = scenario_sync(RedisStore.from_url(REDIS_URL, namespace=ns1))

            async def go() -> list[Any]:
                s = AsyncRedisStore.from_url(REDIS_URL, namespace=ns2)
                try:
                    return await scenario_async(s)
                finally:
                    await s.close()

            async_results = asyncio.run(go())
        finally:
            drop_namespace(redis_client, ns1)
            drop_namespace(redis_client, ns2)
    assert comparable(sync_results) == comparable(async_results)
    charged = async_results[4]
    assert (charged.allowance_used, charged.amount, async_results[5].idempotent) == (30, -10, True)
    assert async_results[6].error == "insufficient_credits"
