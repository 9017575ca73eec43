"""The package as a user installs it: typed (mypy sees the result types), light to import,
extras that match the docs, stores usable with `with` / `async with`, the FastAPI example."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace

import ducto_redis
from ducto_redis import AsyncMemoryStore, AsyncRedisStore, MemoryStore, RedisStore

ROOT = Path(__file__).resolve().parent.parent

USER_SCRIPT = '''
from ducto_redis import AsyncRedisStore, CreditManager, MemoryStore, RedisStore, UsageMetrics

store = MemoryStore()
reveal_type(store.charge("u", 1, "chat"))
reveal_type(store.get_balance("u").available)
reveal_type(store.create_team("t").team_id)
with RedisStore.from_url() as rs:
    reveal_type(rs)
reveal_type(CreditManager(store).deduct("u", UsageMetrics(model="m")))


async def worker() -> None:
    async with AsyncRedisStore.from_url() as s:
        reveal_type(await s.reserve_credits("u", 5, "job"))
'''


def test_mypy_on_a_user_script_sees_the_result_types(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                        "--no-incremental", str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    revealed = re.findall(r'Revealed type is "([^"]+)"', r.stdout)
    assert revealed == [
        "ducto_redis.models.DeductionResult",
        "int",
        "str",
        "ducto_redis.store.RedisStore",
        "ducto_redis.models.UsageDeductionResult",
        "ducto_redis.models.ReserveResult",
    ], r.stdout
    assert "Any" not in r.stdout and "py.typed" not in r.stdout


def test_the_package_says_it_is_typed() -> None:
    assert (Path(ducto_redis.__file__).parent / "py.typed").exists()
    meta = importlib.metadata.metadata("ducto-redis")
    assert "Typing :: Typed" in meta.get_all("Classifier", [])
    assert meta["Version"] == ducto_redis.__version__
    assert meta.get_all("Keywords") or meta["Keywords"]
    urls = {u.split(",")[0] for u in meta.get_all("Project-URL", [])}
    assert urls >= {"Homepage", "Documentation", "Source", "Issues"}


def test_every_extra_the_docs_name_exists() -> None:
    extras = set(importlib.metadata.metadata("ducto-redis").get_all("Provides-Extra", []))
    named = set()
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]:
        for spec in re.findall(r"pip install[^\n`]*?'\.\[([\w,]+)\]'", page.read_text(encoding="utf-8")):
            named |= set(spec.split(","))
    assert {"postgres", "asgi"} <= named, named
    assert named <= extras, named - extras


def test_importing_the_package_does_not_load_the_embedded_store() -> None:
    code = ("import sys, ducto_redis\n"
            "loaded = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'fakeredis', 'lupa'})\n"
            "print(loaded())\n"
            "ducto_redis.MemoryStore().charge('u', 1, 'x')\n"
            "print(loaded())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "['fakeredis', 'lupa']"]


def test_importing_the_package_or_the_command_does_not_load_the_service_extra() -> None:
    code = ("import sys, ducto_redis, ducto_redis.cli, ducto_redis.routes, ducto_redis.gate\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', 'prometheus_client'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]"]


def test_stores_close_themselves_in_a_with_block(redis_client: Any) -> None:
    with MemoryStore() as m:
        assert m.add_credits("u", 3).new_balance == 3
    ns = new_namespace()
    try:
        with RedisStore.from_url(REDIS_URL, namespace=ns) as store:
            store.add_credits("u", 3)
            pool = store.client.connection_pool
            # idle in the pool, or kept by the store's lane (connect.Lane: in use for the pool)
            every = [*pool._available_connections, *pool._in_use_connections]
            assert any(c._sock is not None for c in every)
        every = [*pool._available_connections, *pool._in_use_connections]
        assert every and all(c._sock is None for c in every)  # closed on the way out
    finally:
        drop_namespace(redis_client, ns)


def test_async_stores_close_themselves_in_an_async_with_block(redis_client: Any) -> None:
    ns = new_namespace()

    async def main() -> None:
        async with AsyncMemoryStore() as m:
            assert (await m.add_credits("u", 3)).new_balance == 3
        async with AsyncRedisStore.from_url(REDIS_URL, namespace=ns) as store:
            await store.add_credits("u", 3)
            pool = store.client.connection_pool
            assert any(c.is_connected for c in pool._available_connections)
        assert not any(c.is_connected for c in pool._available_connections)  # closed on the way out

    try:
        asyncio.run(main())
    finally:
        drop_namespace(redis_client, ns)


def test_from_url_takes_the_namespace_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUCTO_NAMESPACE", "from-env")
    assert RedisStore.from_url(REDIS_URL).settings.namespace == "from-env"
    assert RedisStore.from_url(REDIS_URL, namespace="given").settings.namespace == "given"


def test_the_fastapi_example_charges_per_request_through_its_dependency(monkeypatch: pytest.MonkeyPatch,
                                                                      redis_client: Any) -> None:
    from fastapi.testclient import TestClient

    ns = new_namespace()
    monkeypatch.setenv("DUCTO_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DUCTO_NAMESPACE", ns)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.fastapi_app import app

    try:
        with TestClient(app) as client:  # runs the lifespan: the store opens, and closes at the end
            key = {"X-API-Key": "ana"}
            assert client.post("/chat", headers=key).status_code == 402  # no credits yet
            assert client.post("/credits?amount=12", headers=key).json() == {"balance": 12}
            first = client.post("/chat", headers={**key, "Idempotency-Key": "q-1"})
            again = client.post("/chat", headers={**key, "Idempotency-Key": "q-1"})
            assert (first.status_code, first.json()) == (200, {"answer": "42", "balance": 7, "replayed": False})
            assert again.json() == {"answer": "42", "balance": 7, "replayed": True}
            assert client.post("/chat", headers=key).json()["balance"] == 2
            refused = client.post("/chat", headers=key)
            assert (refused.status_code, refused.json()) == (402, {"detail": "insufficient_credits"})
            assert client.get("/balance", headers=key).json()["balance"] == 2
            assert client.get("/balance").status_code == 422  # no key: FastAPI says which header
        assert os.environ["DUCTO_NAMESPACE"] == ns
    finally:
        drop_namespace(redis_client, ns)
