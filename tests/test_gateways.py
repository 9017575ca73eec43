"""The decision service behind real gateways: Caddy (forward_auth) and NGINX (auth_request), from
Debian's packages, each started once for this module on loopback in front of a small upstream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REDIS_URL
from gateway_support import Caddy, Gateway, Nginx, free_port, funded_user, own_namespace, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ducto_redis import RedisStore, Settings
from ducto_redis.routes import RouteTable
from ducto_redis.service import create_app

TOKEN = "svc-secret"
ROUTES = RouteTable([
    {"method": "GET", "path": "/chat", "cost": 5},
    {"method": "POST", "path": "/llm/{model}", "hold": 50, "model": "{model}"},
    {"method": "GET", "path": "/down/*", "hold": 50},
])


def upstream_app(service_url: str) -> Starlette:
    """Echoes the headers it got; ``/llm/{model}`` settles its hold with the actual cost (``?used=``)."""

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "headers": dict(request.headers)})

    async def llm(request: Request) -> JSONResponse:
        used = int(request.query_params.get("used", "10"))
        async with httpx.AsyncClient() as client:
            r = await client.post(service_url + "/v1/settle", headers={"Authorization": f"Bearer {TOKEN}"}, json={
                "user_id": request.headers["x-ducto-account"],
                "reservation_id": request.headers["x-reservation-id"], "amount": used})
        return JSONResponse({"settled": r.json(), "headers": dict(request.headers)})

    return Starlette(routes=[Route("/llm/{model}", llm, methods=["POST"]),
                             Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def world(redis_client: Any) -> Iterator[dict[str, Any]]:
    gateways: dict[str, Gateway] = {}
    with own_namespace(redis_client) as admin:
        settings = Settings(redis_url=REDIS_URL, namespace=admin.settings.namespace, service_tokens=TOKEN)
        try:
            with serve(create_app(settings, routes=ROUTES)) as service_url, \
                    serve(upstream_app(service_url)) as up_url:
                service_port = int(service_url.rsplit(":", 1)[1])
                up_port = int(up_url.rsplit(":", 1)[1])
                for cls in (Caddy, Nginx):
                    gateways[cls.name] = cls(service_port, up_port, TOKEN, free_port())
                yield {"admin": admin, "gateways": gateways, "service": service_url}
        finally:
            for g in gateways.values():
                g.stop()


@pytest.fixture(params=["caddy", "nginx"])
def gw(request: pytest.FixtureRequest, world: dict[str, Any]) -> tuple[str, RedisStore]:
    return world["gateways"][request.param].url, world["admin"]


def account(admin: RedisStore, name: str, credits: int) -> str:
    return funded_user(admin, credits, name)


def test_admitted_request_reaches_the_upstream_with_the_copied_headers(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "ok", 100)
    admin.set_rate_limit(user, limit=10, period_seconds=1)
    r = httpx.get(url + "/chat", headers={"X-API-Key": user})
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["x-credits-remaining"] == "95"
    assert seen["ratelimit-remaining"] == "9"
    assert seen["x-ducto-account"] == user
    assert seen["x-transaction-id"]
    assert admin.get_balance(user).balance == 95


def test_empty_balance_gives_402_with_the_balance(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "poor", 4)
    r = httpx.get(url + "/chat", headers={"X-API-Key": user})
    assert r.status_code == 402
    assert r.json() == {"error": "insufficient_credits"}
    assert r.headers["x-credits-remaining"] == "4"
    assert admin.get_balance(user).balance == 4


def test_rate_limit_gives_429_with_retry_after(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "busy", 1_000)
    admin.set_rate_limit(user, limit=1, period_seconds=60, burst=1)
    assert httpx.get(url + "/chat", headers={"X-API-Key": user}).status_code == 200
    r = httpx.get(url + "/chat", headers={"X-API-Key": user})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"] == "rate_limited"
    assert admin.get_balance(user).balance == 995


def test_missing_api_key_gives_401(gw: tuple[str, RedisStore]) -> None:
    url, _ = gw
    r = httpx.get(url + "/chat")
    assert r.status_code == 401 and r.json()["error"] == "missing_account"


def test_retried_request_with_the_same_idempotency_key_is_charged_once(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "retry", 100)
    h = {"X-API-Key": user, "Idempotency-Key": "req-1"}
    first = httpx.get(url + "/chat", headers=h)
    second = httpx.get(url + "/chat", headers=h)
    assert first.status_code == second.status_code == 200
    assert first.json()["headers"].get("idempotent-replayed", "") == ""
    assert second.json()["headers"]["idempotent-replayed"] == "true"
    assert admin.get_balance(user).balance == 95


def test_held_estimate_settled_by_the_upstream_leaves_the_right_balance(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "llm", 100)
    r = httpx.post(url + "/llm/gpt-4o?used=12", headers={"X-API-Key": user})
    assert r.status_code == 200
    assert r.json()["headers"]["x-reservation-id"]
    assert r.json()["settled"]["error"] is None
    bal = admin.get_balance(user)
    assert (bal.balance, bal.held) == (88, 0)
    tiny = account(admin, "tiny", 10)
    assert httpx.post(url + "/llm/gpt-4o", headers={"X-API-Key": tiny}).status_code == 402  # cannot hold 50


def test_unlisted_route_is_free_and_needs_no_account(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "free", 10)
    assert httpx.get(url + "/not-priced/anything", headers={"X-API-Key": user}).status_code == 200
    assert httpx.get(url + "/not-priced").status_code == 200
    assert admin.get_balance(user).balance == 10


def test_a_response_the_upstream_never_produced_is_not_charged(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "down", 100)
    r = httpx.get(url + "/down/x", headers={"X-API-Key": user})
    assert r.status_code == 502  # the gateway could not reach the upstream
    bal = admin.get_balance(user)
    assert bal.balance == 100 and bal.held == 50  # only held: it expires unless settled
    with contextlib.suppress(KeyError):
        admin.core.clock_offset_ms += 11 * 60 * 1000
        assert admin.get_balance(user).held == 0
    admin.core.clock_offset_ms = 0


def test_a_client_cannot_forge_the_headers_the_service_gives_the_upstream(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "forger", 100)
    forged = {"X-Reservation-Id": "forged", "X-Ducto-Account": "someone-else", "Idempotent-Replayed": "true"}
    seen = httpx.get(url + "/chat", headers={"X-API-Key": user, **forged}).json()["headers"]
    assert seen["x-ducto-account"] == user
    assert seen.get("x-reservation-id", "") == ""
    assert seen.get("idempotent-replayed", "") == ""


def test_envoy_style_check_requests_carry_the_method_and_path_themselves(world: dict[str, Any]) -> None:
    """Envoy's ext_authz (HTTP) sends the original method, and path_prefix + the original path."""
    admin: RedisStore = world["admin"]
    user = account(admin, "envoy", 100)
    auth = {"X-Ducto-Token": TOKEN, "X-API-Key": user}
    r = httpx.post(world["service"] + "/v1/authorize/llm/gpt-4o", headers=auth)
    assert r.status_code == 200 and r.headers["x-reservation-id"]
    assert httpx.get(world["service"] + "/v1/authorize/chat", headers=auth).status_code == 200
    assert httpx.post(world["service"] + "/v1/authorize/chat", headers=auth).headers["x-transaction-id"] == ""
    bal = admin.get_balance(user)
    assert (bal.balance, bal.held) == (95, 50)
