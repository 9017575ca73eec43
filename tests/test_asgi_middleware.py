"""CreditMiddleware through a real ASGI server (uvicorn on loopback) against the real Redis."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace
from gateway_support import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ducto_redis import RedisStore, SpendCap
from ducto_redis.aio import AsyncRedisStore
from ducto_redis.asgi import CreditMiddleware


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def tokens(request: Request) -> Response:
    used = request.query_params.get("used", "7")
    return JSONResponse({"ok": True}, headers={"x-tokens-used": used})


def price_from_tokens(scope: MutableMapping[str, Any], status: int, headers: list[tuple[bytes, bytes]]) -> int:
    return int(dict(headers).get(b"x-tokens-used", b"0"))


@pytest.fixture
def gateway(redis_client: Any) -> Iterator[tuple[str, RedisStore]]:
    ns = new_namespace()
    admin = RedisStore.from_url(REDIS_URL, namespace=ns)
    store = AsyncRedisStore.from_url(REDIS_URL, namespace=ns)
    app = Starlette(routes=[Route("/chat", ok), Route("/health", ok), Route("/llm", tokens)])
    fixed = CreditMiddleware(app, store, costs={"/chat": 5, "/health": 0})
    priced = CreditMiddleware(app, store, price_response=price_from_tokens, estimate=50)

    async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
        target = priced if scope.get("path") == "/llm" else fixed
        await target(scope, receive, send)

    try:
        with serve(router) as base:
            yield base, admin
    finally:
        drop_namespace(redis_client, ns)


def test_admitted_request_is_charged_and_carries_credit_headers(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.add_credits("key-1", 100)
    admin.set_rate_limit("key-1", limit=10, period_seconds=1)
    r = httpx.get(base + "/chat", headers={"X-API-Key": "key-1"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert r.headers["x-credits-remaining"] == "95"
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("10", "9")
    assert admin.get_balance("key-1").balance == 95


def test_no_credits_answers_402_with_a_json_error(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.add_credits("poor", 4)
    r = httpx.get(base + "/chat", headers={"X-API-Key": "poor"})
    assert r.status_code == 402 and r.json() == {"error": "insufficient_credits"}
    admin.add_credits("capped", 100)
    admin.set_spend_cap(SpendCap(user_id="capped", limit=4))
    r = httpx.get(base + "/chat", headers={"X-API-Key": "capped"})
    assert r.status_code == 402 and r.json() == {"error": "spend_cap_exceeded"}
    assert admin.get_balance("poor").balance == 4


def test_over_the_rate_answers_429_with_retry_after(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.add_credits("busy", 1_000)
    admin.set_rate_limit("busy", limit=2, period_seconds=60, burst=2)
    codes = [httpx.get(base + "/chat", headers={"X-API-Key": "busy"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = httpx.get(base + "/chat", headers={"X-API-Key": "busy"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["error"] == "rate_limited"
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("2", "0")
    assert r.headers["ratelimit-reset"] == r.headers["retry-after"]
    assert admin.get_balance("busy").balance == 990


def test_free_route_applies_only_the_rate_limit(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.set_rate_limit("free", limit=1, period_seconds=60, burst=1)
    assert httpx.get(base + "/health", headers={"X-API-Key": "free"}).status_code == 200
    assert httpx.get(base + "/health", headers={"X-API-Key": "free"}).status_code == 429


def test_missing_api_key_answers_401(gateway: tuple[str, RedisStore]) -> None:
    base, _ = gateway
    assert httpx.get(base + "/chat").status_code == 401


def test_retried_request_with_idempotency_key_costs_once(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.add_credits("k", 100)
    h = {"X-API-Key": "k", "Idempotency-Key": "req-1"}
    assert httpx.get(base + "/chat", headers=h).status_code == 200
    assert httpx.get(base + "/chat", headers=h).status_code == 200
    assert admin.get_balance("k").balance == 95


def test_route_priced_from_the_response_settles_the_actual_price(gateway: tuple[str, RedisStore]) -> None:
    base, admin = gateway
    admin.add_credits("llm", 100)
    admin.set_rate_limit("llm", limit=5, period_seconds=60)
    r = httpx.get(base + "/llm?used=12", headers={"X-API-Key": "llm"})
    assert r.status_code == 200 and r.headers["x-credits-remaining"] == "88"
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("5", "4")  # a hold route too
    bal = admin.get_balance("llm")
    assert (bal.balance, bal.held) == (88, 0)
    admin.add_credits("tiny", 10)
    assert httpx.get(base + "/llm", headers={"X-API-Key": "tiny"}).status_code == 402  # cannot hold 50
