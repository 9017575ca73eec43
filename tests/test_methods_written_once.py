"""Each store method is written once (ducto_redis/methods.py): the four stores run the same definition,
typed for each (a sync result, or a coroutine of it), and setup's arguments mean the same on all."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace

from ducto_redis import AsyncMemoryStore, AsyncRedisStore, MemoryStore, RedisStore
from ducto_redis.methods import Operation
from ducto_redis.operations import StoreOps

STORES = (RedisStore, AsyncRedisStore, MemoryStore, AsyncMemoryStore)


def operations() -> dict[str, Operation[Any, Any]]:
    """Every store method's one definition, by name."""
    return {name: op for name in dir(StoreOps) if isinstance(op := inspect.getattr_static(StoreOps, name), Operation)}


def test_every_store_runs_the_one_definition_of_each_method() -> None:
    ops = operations()
    assert {"charge", "refund_credits", "add_team_member", "set_member_cap", "set_user_plan", "setup",
            "sweep_expired_credits", "charge_many", "health"} <= set(ops)
    for name, op in ops.items():
        for cls in STORES:
            method = getattr(cls, name)
            assert method.__wrapped__ is op.build, (cls.__name__, name)
            assert method.__doc__ == op.build.__doc__ and method.__doc__, (cls.__name__, name)
            assert inspect.iscoroutinefunction(method) == issubclass(cls, AsyncRedisStore), (cls.__name__, name)
            assert list(inspect.signature(method).parameters) == list(inspect.signature(op.build).parameters)


def test_a_method_shows_the_result_type_of_its_store_not_the_call() -> None:
    charge: Any = RedisStore.charge  # the class attribute: mypy types it as the Operation descriptor
    refund: Any = AsyncRedisStore.refund_credits
    assert inspect.signature(charge).return_annotation == "DeductionResult"
    assert inspect.signature(refund).return_annotation == "RefundResult"
    memory_charge: Any = MemoryStore.charge
    assert "def charge(" in inspect.getsource(memory_charge)  # the definition, where it is written


def test_mypy_sees_sync_results_and_async_coroutines_of_the_one_definition(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(
        "from ducto_redis import AsyncMemoryStore, MemoryStore\n"
        "reveal_type(MemoryStore().refund_credits('tx'))\n"
        "async def go(s: AsyncMemoryStore) -> None:\n"
        "    reveal_type(await s.charge('u', 1, 'x'))\n"
        "    reveal_type(s.sweep_expired_credits())\n"
        "    s.charge('u', 1, 'x')\n"
        "    await s.charge('u', '1', 'x')\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                        "--no-incremental", str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert re.findall(r'Revealed type is "([^"]+)"', r.stdout) == [
        "ducto_redis.models.RefundResult",
        "ducto_redis.models.DeductionResult",
        "typing.Coroutine[Any, Any, ducto_redis.models.SweepResult]",
    ], r.stdout
    assert 'Value of type "Coroutine[Any, Any, DeductionResult]" must be used' in r.stdout  # a missing await
    assert 'Argument 2 has incompatible type "str"; expected "int"' in r.stdout


def test_a_definition_does_not_run_outside_a_store() -> None:
    with pytest.raises(AttributeError, match="runs on a store"):
        StoreOps().charge("u", 1, "x")  # type: ignore[call-overload]


def test_async_setup_creates_the_ledger_schema_at_the_database_url_given() -> None:
    schema = "t_" + uuid.uuid4().hex[:10]
    ns = new_namespace()

    async def go() -> Any:
        s = AsyncRedisStore.from_url(REDIS_URL, namespace=ns, ledger_schema=schema)
        try:
            assert s.settings.database_url is None
            return await s.setup(DATABASE_URL)
        finally:
            await s.close()

    try:
        result = asyncio.run(go())
        assert result.success and result.tables_created == [f"{schema}.ledger"]
        with psycopg.connect(DATABASE_URL) as c:
            assert c.execute("SELECT to_regclass(%s)", (f"{schema}.ledger",)).fetchone() == (f"{schema}.ledger",)
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        import redis

        drop_namespace(redis.Redis.from_url(REDIS_URL, decode_responses=True), ns)


def test_the_embedded_stores_say_where_their_ledger_is_in_setup() -> None:
    assert MemoryStore().setup().tables_created == ["ledger (SQLite, in memory)"]
    assert asyncio.run(AsyncMemoryStore().setup()).tables_created == ["ledger (SQLite, in memory)"]


def test_health_is_true_on_every_store_of_the_table(store: RedisStore) -> None:
    assert store.health() is True
