"""CreditMiddleware with a route table (issue 17): unlisted routes free, templates, prefixes and
methods, the balance on 402, replays marked, no charge for a response the app never produced."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REDIS_URL
from gateway_support import funded_user as user
from gateway_support import own_namespace, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ducto_redis import RedisStore, SpendCap
from ducto_redis.aio import AsyncRedisStore
from ducto_redis.asgi import CreditMiddleware
from ducto_redis.metrics import metrics_app

ROUTES = [
    {"method": "POST", "path": "/v1/chat/{model}", "cost": 5, "model": "{model}"},
    {"path": "/files/*", "cost": 2},
    {"method": "POST", "path": "/jobs", "hold": 40},
    {"method": "GET", "path": "/boom", "cost": 3},
    {"method": "GET", "path": "/flaky", "cost": 3},
    {"method": "POST", "path": "/flaky-job", "hold": 40},
]


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"replayed": request.headers.get("idempotent-replayed")})


async def job(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"X-Credits-Used": request.query_params.get("used", "0")})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("the app failed before answering")


async def flaky(request: Request) -> JSONResponse:
    """Fails before answering when asked to (``?fail=1``), else answers (and reports 12 credits used)."""
    if request.query_params.get("fail"):
        raise RuntimeError("the app failed before answering")
    return JSONResponse({"replayed": request.headers.get("idempotent-replayed")}, headers={"X-Credits-Used": "12"})


@pytest.fixture(scope="module")
def site(redis_client: Any) -> Iterator[tuple[str, RedisStore]]:
    app = Starlette(routes=[Route("/v1/chat/{model}", echo, methods=["POST", "GET"]),
                            Route("/files/{rest:path}", echo), Route("/filesystem", echo),
                            Route("/jobs", job, methods=["POST"]), Route("/boom", boom),
                            Route("/flaky", flaky), Route("/flaky-job", flaky, methods=["POST"]),
                            Route("/metrics", metrics_app())])
    with own_namespace(redis_client) as admin:
        store = AsyncRedisStore.from_url(REDIS_URL, namespace=admin.settings.namespace)
        with serve(CreditMiddleware(app, store, routes=ROUTES)) as url:
            yield url, admin


def test_unlisted_paths_are_free_and_a_404_costs_nothing(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 10)
    assert httpx.get(url + "/nowhere", headers={"X-API-Key": uid}).status_code == 404
    assert httpx.get(url + "/nowhere").status_code == 404  # no account needed either
    assert httpx.get(url + "/filesystem", headers={"X-API-Key": uid}).status_code == 200  # not under /files/
    assert admin.get_balance(uid).balance == 10


def test_templates_match_one_segment_and_feed_the_model(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    admin.set_spend_cap(SpendCap(user_id=uid, limit=4, model="gpt-4o"))  # this model only
    r = httpx.post(url + "/v1/chat/gpt-4o", headers={"X-API-Key": uid})
    assert r.status_code == 402 and r.json()["error"] == "spend_cap_exceeded"
    assert httpx.post(url + "/v1/chat/mini", headers={"X-API-Key": uid}).status_code == 200
    assert httpx.post(url + "/v1/chat/a/b", headers={"X-API-Key": uid}).status_code == 404  # not one segment
    assert httpx.get(url + "/v1/chat/mini", headers={"X-API-Key": uid}).status_code == 200  # POST only: GET free
    assert admin.get_balance(uid).balance == 95


def test_prefixes_price_everything_below_them(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    for path in ("/files/a", "/files/a/b/c.txt"):
        assert httpx.get(url + path, headers={"X-API-Key": uid}).status_code == 200
    assert admin.get_balance(uid).balance == 96


def test_402_carries_the_balance(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 3)
    r = httpx.post(url + "/v1/chat/mini", headers={"X-API-Key": uid})
    assert r.status_code == 402 and r.json() == {"error": "insufficient_credits"}
    assert r.headers["x-credits-remaining"] == "3"


def test_replays_are_marked_for_the_app_and_the_client(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    h = {"X-API-Key": uid, "Idempotency-Key": "once"}
    first = httpx.post(url + "/v1/chat/mini", headers=h)
    again = httpx.post(url + "/v1/chat/mini", headers=h)
    assert first.json() == {"replayed": None} and "idempotent-replayed" not in first.headers
    assert again.json() == {"replayed": "true"} and again.headers["idempotent-replayed"] == "true"
    assert admin.get_balance(uid).balance == 95


def test_a_hold_route_settles_what_the_app_says_it_used(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    r = httpx.post(url + "/jobs?used=12", headers={"X-API-Key": uid})
    assert r.status_code == 200 and r.headers["x-credits-remaining"] == "88"
    assert "x-credits-used" not in r.headers  # the app's internal header is not passed on
    bal = admin.get_balance(uid)
    assert (bal.balance, bal.held) == (88, 0)


def test_a_request_the_app_never_answered_is_not_charged(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    assert httpx.get(url + "/boom", headers={"X-API-Key": uid}).status_code == 500
    assert admin.get_balance(uid).balance == 100  # charged, then refunded


@pytest.mark.parametrize(("method", "path", "cost"), [("GET", "/flaky", 3), ("POST", "/flaky-job", 12)])
def test_a_retry_of_a_request_the_app_never_answered_is_charged_once(site: tuple[str, RedisStore], method: str,
                                                                     path: str, cost: int) -> None:
    url, admin = site
    uid = user(admin, 100)
    h = {"X-API-Key": uid, "Idempotency-Key": "flaky-1"}
    assert httpx.request(method, url + path + "?fail=1", headers=h).status_code == 500
    bal = admin.get_balance(uid)
    assert (bal.balance, bal.held) == (100, 0)  # given back
    again = httpx.request(method, url + path, headers=h)  # the same request, retried
    assert again.status_code == 200 and again.json() == {"replayed": None}  # decided afresh, not a free replay
    assert admin.get_balance(uid).balance == 100 - cost


def test_the_middleware_records_decision_metrics_a_mounted_endpoint_serves(site: tuple[str, RedisStore]) -> None:
    url, admin = site
    uid = user(admin, 100)
    assert httpx.get(url + "/files/x", headers={"X-API-Key": uid}).status_code == 200
    text = httpx.get(url + "/metrics").text  # unlisted: free, no account
    assert 'ducto_decisions_total{operation="charge",outcome="ok"}' in text
    assert 'ducto_decision_seconds_count{operation="charge"}' in text
