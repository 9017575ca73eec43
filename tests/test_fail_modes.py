"""When Redis cannot be reached (a closed port) or does not answer (a port that accepts and never
replies), the service and the middleware answer by the fail mode: 503 with Retry-After (closed,
the default) or the request let through and counted (open); never a hung request."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import free_port, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ducto_redis import Settings
from ducto_redis.aio import AsyncRedisStore
from ducto_redis.asgi import CreditMiddleware
from ducto_redis.metrics import decision_metrics
from ducto_redis.routes import RouteTable
from ducto_redis.service import create_app
from ducto_redis.service.app import service_store

ROUTES = RouteTable([{"path": "/chat", "cost": 5}])
LIMIT = httpx.Timeout(10.0)  # a hung request fails the test


@pytest.fixture(scope="module", params=["refused", "silent"])
def dead_redis(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL where nothing answers: a closed port, or a socket that accepts and never replies."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)  # connections complete in the kernel's backlog; nothing is ever read or written
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"


def settings(url: str, mode: str) -> Settings:
    return Settings(redis_url=url, namespace="dead", fail_mode=mode, decision_timeout_ms=300)


def test_service_fails_closed_with_503_and_retry_after(dead_redis: str) -> None:
    with serve(create_app(settings(dead_redis, "closed"), routes=ROUTES)) as url:
        r = httpx.post(url + "/v1/charge", json={"user_id": "u", "amount": 1}, timeout=LIMIT)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "unavailable"
        r = httpx.get(url + "/v1/authorize", headers={"X-Forwarded-Uri": "/chat", "X-API-Key": "u"}, timeout=LIMIT)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert httpx.get(url + "/healthz", timeout=LIMIT).status_code == 503
        text = httpx.get(url + "/metrics", timeout=LIMIT).text
        assert 'ducto_redis_errors_total{operation="charge"}' in text


def test_service_fails_open_lets_decisions_through_and_counts_them(dead_redis: str) -> None:
    before = _fail_open_total()
    with serve(create_app(settings(dead_redis, "open"), routes=ROUTES)) as url:
        r = httpx.get(url + "/v1/authorize", headers={"X-Forwarded-Uri": "/chat", "X-API-Key": "u"}, timeout=LIMIT)
        assert r.status_code == 200 and r.headers["x-ducto-fail-open"] == "1"
        r = httpx.post(url + "/v1/charge", json={"user_id": "u", "amount": 1}, timeout=LIMIT)
        assert r.status_code == 200 and r.json()["fail_open"] is True
        # moving money is never pretended: a settlement or a credit still fails closed
        r = httpx.post(url + "/v1/credits", json={"user_id": "u", "amount": 1}, timeout=LIMIT)
        assert r.status_code == 503
    assert _fail_open_total() == before + 2


def _fail_open_total() -> float:
    return sum(s.value for m in decision_metrics().fail_open.collect() for s in m.samples if s.name.endswith("_total"))


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_middleware_answers_by_the_fail_mode(dead_redis: str, mode: str) -> None:
    store: AsyncRedisStore = service_store(settings(dead_redis, mode))
    app = CreditMiddleware(Starlette(routes=[Route("/chat", ok)]), store, routes=ROUTES)
    with serve(app) as url:
        r = httpx.get(url + "/chat", headers={"X-API-Key": "u"}, timeout=LIMIT)
    if mode == "closed":
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    else:
        assert r.status_code == 200 and r.json() == {"ok": True} and r.headers["x-ducto-fail-open"] == "1"


def test_the_decision_timeout_bounds_a_call_even_on_a_store_without_client_timeouts() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
        store = AsyncRedisStore.from_url(url, namespace="dead", decision_timeout_ms=200)  # no socket timeout
        app = CreditMiddleware(Starlette(routes=[Route("/chat", ok)]), store, routes=ROUTES)
        with serve(app) as base:
            r = httpx.get(base + "/chat", headers={"X-API-Key": "u"}, timeout=LIMIT)
        assert r.status_code == 503



def test_the_service_stores_connections_wait_on_the_decision_timeout_alone() -> None:
    # redis-py 8 gives every connection a 5 s socket timeout unless told otherwise: a task and a
    # timer per call that the gate's own bound makes useless (the silent Redis above is bounded by it)
    store = service_store(settings("redis://127.0.0.1:6379/0", "closed"))
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] is None
    assert store.client.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.3
