"""The async store is the sync store's twin: same methods, same arguments, same results."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace
from parity_support import comparable, run_sync_and_async

from ducto_redis import CreditMetadata, InvalidInputError, MemoryStore, RedisStore, SpendCap
from ducto_redis.aio import AsyncMemoryStore, AsyncRedisStore

SHARED_PRIVATE = {"close"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in SHARED_PRIVATE
    }


def test_async_store_has_every_sync_method_with_the_same_signature() -> None:
    sync, aio = public_methods(RedisStore), public_methods(AsyncRedisStore)
    # flusher control and analytics are sync-only (they run in threads / against Postgres)
    ledger_only = {n for n in sync if n not in aio and n in {
        "start_flusher", "stop_flusher", "ledger_lag", "spend_by_user", "spend_by_model", "top_users",
        "daily_spend", "aggregate_stats", "spend_by_member", "spend_by_team", "restore_from_ledger",
        "reconcile_with_ledger", "restore_ledger", "reconcile_ledger", "ledger_reader"}}
    missing = set(sync) - set(aio) - ledger_only
    assert not missing, f"AsyncRedisStore lacks {sorted(missing)}"
    for name in set(sync) & set(aio):
        assert list(sync[name].parameters) == list(aio[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncRedisStore, name)), name


def scenario_sync(s: RedisStore) -> list[Any]:
    out: list[Any] = []
    out.append(s.add_credits("u", 1_000, type="purchase", idempotency_key="g1"))
    out.append(s.add_credits("u", 1_000, type="purchase", idempotency_key="g1"))
    s.set_spend_cap(SpendCap(user_id="u", limit=700, action="deny"))
    r = s.reserve_credits("u", 300, "job")
    out.append(r)
    out.append(s.deduct_credits("u", r.reservation_id, 250, metadata=CreditMetadata(model="m")))
    out.append(s.charge("u", 400, "req"))
    out.append(s.charge("u", 100, "req"))
    r2 = s.reserve_credits("u", 50, "job")
    out.append(s.release_reservation("u", r2.reservation_id))
    out.append(s.check_spend_cap("u", amount=50))
    out.append(s.get_balance("u"))
    with pytest.raises(InvalidInputError, match=r"^amount: "):  # out of range: both stores raise alike
        s.charge("u", 0, "x")
    return out


async def scenario_async(s: AsyncRedisStore) -> list[Any]:
    out: list[Any] = []
    out.append(await s.add_credits("u", 1_000, type="purchase", idempotency_key="g1"))
    out.append(await s.add_credits("u", 1_000, type="purchase", idempotency_key="g1"))
    await s.set_spend_cap(SpendCap(user_id="u", limit=700, action="deny"))
    r = await s.reserve_credits("u", 300, "job")
    out.append(r)
    out.append(await s.deduct_credits("u", r.reservation_id, 250, metadata=CreditMetadata(model="m")))
    out.append(await s.charge("u", 400, "req"))
    out.append(await s.charge("u", 100, "req"))
    r2 = await s.reserve_credits("u", 50, "job")
    out.append(await s.release_reservation("u", r2.reservation_id))
    out.append(await s.check_spend_cap("u", amount=50))
    out.append(await s.get_balance("u"))
    with pytest.raises(InvalidInputError, match=r"^amount: "):
        await s.charge("u", 0, "x")
    return out


VOLATILE = {"transaction_id", "reservation_id", "expires_at_ms"}



@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_async_and_sync_stores_give_identical_results(backend: str, redis_client: Any) -> None:
    sync_results, async_results = run_sync_and_async(backend, redis_client, scenario_sync, scenario_async)
    assert comparable(sync_results, VOLATILE) == comparable(async_results, VOLATILE)
    assert async_results[1].idempotent and async_results[5].error == "spend_cap_exceeded"


def test_async_memory_store_shares_data_with_a_sync_memory_store() -> None:
    sync = MemoryStore("shared")
    sync.add_credits("u", 42)
    aio = AsyncMemoryStore("shared", server=sync.server)
    assert asyncio.run(aio.get_balance("u")).balance == 42


def test_async_store_reloads_scripts_after_function_and_script_flush(private_redis: Any) -> None:
    ns = new_namespace()

    async def go() -> int:
        s = AsyncRedisStore.from_url(private_redis.url, namespace=ns)
        try:
            await s.add_credits("u", 10)
            await s.client.function_flush()
            await s.client.script_flush()
            return (await s.charge("u", 3, "x")).balance_after
        finally:
            await s.close()

    assert asyncio.run(go()) == 7


def test_auto_batching_coalesces_concurrent_calls_and_gives_each_its_own_result(redis_client: Any) -> None:
    ns = new_namespace()

    async def go() -> tuple[list[Any], int]:
        s = AsyncRedisStore.from_url(REDIS_URL, namespace=ns, auto_batch_ms=1.0)
        calls = 0
        real = s._run_many

        async def counting(batch_calls: Any) -> Any:
            nonlocal calls
            calls += 1
            return await real(batch_calls)

        s._run_many = counting  # type: ignore[method-assign,assignment]
        try:
            await s.add_credits("u", 100)
            results = await asyncio.gather(*[s.charge("u", 3, "req") for _ in range(40)])
            return list(results), calls
        finally:
            await s.close()

    try:
        results, round_trips = asyncio.run(go())
    finally:
        drop_namespace(redis_client, ns)
    assert round_trips <= 3  # the credit, then the 40 charges in one or two windows
    ok = [r for r in results if r.error is None]
    assert len(ok) == 33 and {r.error for r in results} == {None, "insufficient_credits"}
    assert sorted(r.balance_after for r in ok) == list(range(1, 100, 3))


def test_auto_batching_memory_store_equals_unbatched() -> None:
    async def go(batch_ms: float) -> list[Any]:
        s = AsyncMemoryStore(auto_batch_ms=batch_ms)
        await s.add_credits("u", 50)
        await s.set_spend_cap(SpendCap(user_id="u", limit=30))
        return list(await asyncio.gather(*[s.charge("u", 4, "req") for _ in range(12)]))

    assert comparable(asyncio.run(go(1.0)), VOLATILE) == comparable(asyncio.run(go(0.0)), VOLATILE)
