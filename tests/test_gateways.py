"""The decision service behind real gateways: Caddy (forward_auth) and NGINX (auth_request), from
Debian's packages, each started for this module on loopback with the configuration docs/service.md
shows, twice: in front of a small upstream, and in front of a port where nothing listens (an
upstream the gateway cannot reach)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REDIS_URL
from gateway_support import COPIED, Caddy, Gateway, Nginx, doc_config, free_port, funded_user, own_namespace, serve
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
                    gateways[cls.name] = cls(service_port, up_port, TOKEN)
                    gateways[cls.name + "-down"] = cls(service_port, free_port(), TOKEN)
                yield {"admin": admin, "gateways": gateways, "service": service_url}
        finally:
            for g in gateways.values():
                g.stop()


@pytest.fixture(params=["caddy", "nginx"])
def gw(request: pytest.FixtureRequest, world: dict[str, Any]) -> tuple[str, RedisStore]:
    return world["gateways"][request.param].url, world["admin"]


@pytest.fixture(params=["caddy", "nginx"])
def pair(request: pytest.FixtureRequest, world: dict[str, Any]) -> tuple[str, str, RedisStore]:
    """One kind of gateway: its URL in front of the upstream, in front of nothing, and the admin store."""
    g = world["gateways"]
    return g[request.param].url, g[request.param + "-down"].url, world["admin"]


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
    assert (seen["ratelimit-limit"], seen["ratelimit-remaining"]) == ("10", "9")
    assert seen["x-ducto-account"] == user
    assert seen["x-transaction-id"]
    assert "x-ducto-void" not in seen  # kept between the gateway and the service
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
    assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-reset"] == r.headers["retry-after"]
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("1", "0")
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


def test_a_charge_whose_upstream_never_answered_is_given_back_and_a_retry_is_charged_once(
        pair: tuple[str, str, RedisStore]) -> None:
    url, down, admin = pair
    user = account(admin, "down", 100)
    h = {"X-API-Key": user, "Idempotency-Key": "try-1"}
    r = httpx.get(down + "/chat", headers=h)
    assert r.status_code == 502  # the gateway could not reach the upstream
    assert r.json() == {"error": "upstream_unavailable", "charged": False}
    assert admin.get_balance(user).balance == 100
    again = httpx.get(url + "/chat", headers=h)  # the same request, retried once the upstream is back
    assert again.status_code == 200
    assert again.json()["headers"].get("idempotent-replayed", "") == ""  # decided afresh, not a free replay
    assert admin.get_balance(user).balance == 95
    assert httpx.get(url + "/chat", headers=h).json()["headers"]["idempotent-replayed"] == "true"
    assert admin.get_balance(user).balance == 95  # and a further retry is a replay: charged once


def test_a_hold_whose_upstream_never_answered_is_released_at_once(pair: tuple[str, str, RedisStore]) -> None:
    _, down, admin = pair
    user = account(admin, "down-llm", 100)
    r = httpx.post(down + "/llm/gpt-4o", headers={"X-API-Key": user}, content=b'{"prompt": "hi"}')
    assert r.status_code == 502 and r.json()["charged"] is False
    bal = admin.get_balance(user)
    assert (bal.balance, bal.held) == (100, 0)  # released, not left to expire


def test_a_request_the_upstream_answered_is_charged_once_whatever_its_status(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "answered", 100)
    assert httpx.get(url + "/chat", headers={"X-API-Key": user}).status_code == 200
    assert httpx.get(url + "/nothing-here/chat", headers={"X-API-Key": user}).status_code == 200  # unlisted
    assert admin.get_balance(user).balance == 95


def test_a_client_cannot_forge_the_headers_the_service_gives_the_upstream(gw: tuple[str, RedisStore]) -> None:
    url, admin = gw
    user = account(admin, "forger", 100)
    forged = {"X-Reservation-Id": "forged", "X-Ducto-Account": "someone-else", "Idempotent-Replayed": "true",
              "X-Ducto-Void": "1.forged"}
    seen = httpx.get(url + "/chat", headers={"X-API-Key": user, **forged}).json()["headers"]
    assert seen["x-ducto-account"] == user
    assert seen.get("x-reservation-id", "") == ""
    assert seen.get("idempotent-replayed", "") == ""
    assert "x-ducto-void" not in seen


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


def test_the_documented_configurations_copy_every_header_the_service_gives(world: dict[str, Any]) -> None:
    caddy, nginx = doc_config("### Caddy"), doc_config("### NGINX")
    copied = next(line for line in caddy.splitlines() if "copy_headers" in line).split()[1:]
    assert copied == COPIED
    assert all(f"proxy_set_header {h} " in nginx for h in COPIED)  # X-Ducto-Void: set empty for the upstream
    assert all(f"auth_request_set $ducto_{n} " in nginx for n in ("account", "tx", "rid", "void"))


VOIDED = ("x-ducto-account", "x-transaction-id", "x-reservation-id", "x-ducto-void")


def decision(world: dict[str, Any], user: str, path: str = "/chat", **headers: str) -> dict[str, str]:
    """The headers forward-auth answers a gateway for one admitted request (as a gateway asks it)."""
    r = httpx.get(world["service"] + "/v1/authorize", headers={
        "X-Ducto-Token": TOKEN, "X-Forwarded-Method": "POST" if path.startswith("/llm") else "GET",
        "X-Forwarded-Uri": path, "X-API-Key": user, **headers})
    assert r.status_code == 200
    return {k: r.headers[k] for k in VOIDED}


def void(world: dict[str, Any], headers: dict[str, str], token: str = TOKEN) -> httpx.Response:
    return httpx.post(world["service"] + "/v1/void", headers={**headers, "X-Ducto-Token": token})


def test_a_void_gives_a_charge_back_once_and_needs_the_token(world: dict[str, Any]) -> None:
    admin: RedisStore = world["admin"]
    user = account(admin, "void-twice", 100)
    seen = decision(world, user)
    assert seen["x-ducto-void"] and admin.get_balance(user).balance == 95
    assert void(world, seen, token="wrong").status_code == 401
    assert admin.get_balance(user).balance == 95
    first, second = void(world, seen), void(world, {**seen, "X-Ducto-Gateway-Status": "504"})
    assert (first.status_code, first.json()) == (502, {"error": "upstream_unavailable", "charged": False})
    assert (second.status_code, second.json()["charged"]) == (504, False)
    assert admin.get_balance(user).balance == 100  # refunded once


def test_a_void_cannot_give_back_another_accounts_decision(world: dict[str, Any]) -> None:
    admin: RedisStore = world["admin"]
    mallory, victim = account(admin, "mallory", 100), account(admin, "victim", 100)
    mine, theirs = decision(world, mallory), decision(world, victim)
    for forged in ({**mine, "x-ducto-account": victim}, {**mine, "x-transaction-id": theirs["x-transaction-id"]},
                   {**theirs, "x-ducto-void": mine["x-ducto-void"]}, {**mine, "x-ducto-void": "1.00"}):
        r = void(world, forged)
        assert (r.status_code, r.json()["error"]) == (403, "invalid_void")
    assert (admin.get_balance(mallory).balance, admin.get_balance(victim).balance) == (95, 95)


def test_a_replayed_decision_is_never_given_back(world: dict[str, Any]) -> None:
    admin: RedisStore = world["admin"]
    user = account(admin, "replayed", 100)
    first = decision(world, user, **{"Idempotency-Key": "r-1"})
    replay = decision(world, user, **{"Idempotency-Key": "r-1"})
    assert replay["x-transaction-id"] == first["x-transaction-id"] and replay["x-ducto-void"] == ""
    assert void(world, replay).json()["charged"] is False  # this request charged nothing itself
    assert admin.get_balance(user).balance == 95  # the first request's charge stays


def test_a_void_after_the_upstream_settled_its_hold_gives_nothing_back(world: dict[str, Any]) -> None:
    admin: RedisStore = world["admin"]
    user = account(admin, "settled", 100)
    seen = decision(world, user, "/llm/gpt-4o")
    assert seen["x-reservation-id"] and seen["x-ducto-void"]
    settled = httpx.post(world["service"] + "/v1/settle", headers={"X-Ducto-Token": TOKEN}, json={
        "user_id": user, "reservation_id": seen["x-reservation-id"], "amount": 12})  # as the upstream does
    assert settled.json()["error"] is None
    r = void(world, seen)
    assert (r.status_code, r.json()["charged"]) == (502, True)  # the work was done and settled
    bal = admin.get_balance(user)
    assert (bal.balance, bal.held) == (88, 0)
