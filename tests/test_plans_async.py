"""The async store's plan, allowance and pricing methods give the sync store's results."""

from __future__ import annotations

from typing import Any

import pytest
from parity_support import comparable, run_sync_and_async

from ducto_redis import PlanDefinition, PricingConfigData, RedisStore
from ducto_redis.aio import AsyncRedisStore

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



@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_async_plan_methods_equal_the_sync_ones(backend: str, redis_client: Any) -> None:
    sync_results, async_results = run_sync_and_async(backend, redis_client, scenario_sync, scenario_async)
    assert comparable(sync_results, VOLATILE) == comparable(async_results, VOLATILE)
    charged = async_results[4]
    assert (charged.allowance_used, charged.amount, async_results[5].idempotent) == (30, -10, True)
    assert async_results[6].error == "insufficient_credits"
