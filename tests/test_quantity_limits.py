"""Token-weighted limits: a limit on a quantity requests carry (tokens per period, optionally per
model), checked in the same script call as rate limit, caps and balance, against an estimate at
reserve time and corrected at settlement; from the library, the middleware and the service."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import REDIS_URL
from gateway_support import own_namespace, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ducto_redis import InvalidInputError, RedisStore, Settings
from ducto_redis.aio import AsyncRedisStore
from ducto_redis.asgi import CreditMiddleware
from ducto_redis.routes import RouteTable
from ducto_redis.service import create_app

DAY = 86_400

def test_a_charge_past_the_token_limit_is_refused_with_retry_after(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=DAY)  # no token comes back mid-test
    assert store.charge("u", 1, "chat", quantities={"tokens": 600}).error is None
    r = store.charge("u", 1, "chat", quantities={"tokens": 600})
    assert r.error == "rate_limited" and 0 < r.retry_after_ms <= 200 * DAY  # 200 tokens' time (ms)
    assert store.get_balance("u").balance == 999  # the refusal took nothing
    assert store.charge("u", 1, "chat", quantities={"tokens": 400}).error is None  # ... nor any tokens
    assert store.charge("u", 1, "chat", quantities={"tokens": 1}).error == "rate_limited"
    assert store.charge("u", 1, "chat").error is None  # a request without the quantity is not limited by it


def test_the_limit_refills_with_time(store: RedisStore) -> None:
    from conftest import advance

    store.add_credits("u", 1_000)
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=60)
    assert store.charge("u", 1, "chat", quantities={"tokens": 1_000}).error is None
    assert store.charge("u", 1, "chat", quantities={"tokens": 500}).error == "rate_limited"
    advance(store, 30)
    assert store.charge("u", 1, "chat", quantities={"tokens": 500}).error is None


def test_a_refusal_for_credits_counts_no_tokens(store: RedisStore) -> None:
    store.add_credits("u", 5)
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=60)
    assert store.charge("u", 10, "chat", quantities={"tokens": 900}).error == "insufficient_credits"
    assert store.charge("u", 5, "chat", quantities={"tokens": 900}).error is None


def test_a_per_model_limit_counts_that_models_requests_only(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_quantity_limit("u", "tokens", 100, period_seconds=DAY, model="gpt-4o")
    gpt, mini = {"model": "gpt-4o"}, {"model": "mini"}
    assert store.charge("u", 1, "chat", metadata=gpt, quantities={"tokens": 100}).error is None
    assert store.charge("u", 1, "chat", metadata=gpt, quantities={"tokens": 1}).error == "rate_limited"
    assert store.charge("u", 1, "chat", metadata=mini, quantities={"tokens": 10_000}).error is None


def test_a_holds_estimate_is_corrected_at_settlement_and_given_back_on_release(store: RedisStore) -> None:
    # a day's period: the limit gives back ~1 token per 86 s, so a slow machine between two steps
    # cannot free the token a step expects to be refused (a minute's period gave one back per 60 ms)
    store.add_credits("u", 1_000)
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=DAY)
    hold = store.reserve_credits("u", 50, "llm", quantities={"tokens": 800})
    assert hold.error is None
    assert store.charge("u", 1, "chat", quantities={"tokens": 300}).error == "rate_limited"  # 800 counted
    assert store.deduct_credits("u", hold.reservation_id, 20, quantities={"tokens": 200}).error is None
    assert store.charge("u", 1, "chat", quantities={"tokens": 800}).error is None  # 200 + 800
    assert store.charge("u", 1, "chat", quantities={"tokens": 1}).error == "rate_limited"
    store.set_quantity_limit("u", "tokens", None)  # removed: nothing limits any more
    assert store.charge("u", 1, "chat", quantities={"tokens": 5_000}).error is None
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=DAY)
    hold = store.reserve_credits("u", 50, "llm", quantities={"tokens": 1_000})
    r = store.reserve_credits("u", 50, "llm", quantities={"tokens": 1})
    assert r.error == "rate_limited" and r.retry_after_ms > 0
    store.release_reservation("u", hold.reservation_id)
    assert store.reserve_credits("u", 50, "llm", quantities={"tokens": 1_000}).error is None


def test_a_reserve_can_apply_the_request_rate_limit_in_the_same_call(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_rate_limit("u", limit=1, period_seconds=60, burst=1)
    assert store.reserve_credits("u", 10, "llm").error is None  # a library hold is not rate limited
    first = store.reserve_credits("u", 10, "llm", rate_limit=True)
    assert first.error is None and first.rate_limit_remaining == 0
    r = store.reserve_credits("u", 10, "llm", rate_limit=True)
    assert r.error == "rate_limited" and r.retry_after_ms > 0


@pytest.mark.parametrize(("quantities", "field"), [
    ({"tok ens": 1}, "quantities"), ({"tokens": -1}, "quantities.tokens"), ({"tokens": 1.5}, "quantities.tokens"),
    ([("tokens", 1)], "quantities"),
])
def test_bad_quantities_are_refused_naming_the_field(store: RedisStore, quantities: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        store.charge("u", 1, "chat", quantities=quantities)
    assert e.value.field == field


def test_quantity_limits_through_the_middleware_and_forward_auth(redis_client: Any) -> None:
    routes = RouteTable([{"method": "POST", "path": "/llm", "hold": 10, "quantity": "tokens",
                          "quantity_estimate": 500, "quantity_header": "X-Token-Estimate"}])

    async def llm(request: Request) -> JSONResponse:
        return JSONResponse({}, headers={"X-Credits-Used": "3", "X-Quantity-Used": request.query_params["used"]})

    with own_namespace(redis_client) as admin:
        ns = admin.settings.namespace
        app = CreditMiddleware(Starlette(routes=[Route("/llm", llm, methods=["POST"])]),
                               AsyncRedisStore.from_url(REDIS_URL, namespace=ns), routes=routes)
        admin.add_credits("mw", 100)
        admin.add_credits("fa", 100)
        for u in ("mw", "fa"):
            admin.set_quantity_limit(u, "tokens", 1_000, period_seconds=60)
        with serve(app) as url:
            h = {"X-API-Key": "mw"}
            assert httpx.post(url + "/llm?used=100", headers=h).status_code == 200  # 500 held, 100 settled
            assert httpx.post(url + "/llm?used=100", headers={**h, "X-Token-Estimate": "900"}).status_code == 200
            r = httpx.post(url + "/llm?used=600", headers=h)  # 200 used + 500 estimated fits: 800 after
            assert r.status_code == 200
            r = httpx.post(url + "/llm?used=1", headers=h)  # 800 + 500 estimated does not
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert admin.get_balance("mw").balance == 91
        with serve(create_app(Settings(redis_url=REDIS_URL, namespace=ns), routes=routes)) as svc:
            fwd = {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/llm", "X-API-Key": "fa",
                   "X-Token-Estimate": "800"}
            first = httpx.get(svc + "/v1/authorize", headers=fwd)
            assert first.status_code == 200
            assert httpx.get(svc + "/v1/authorize", headers=fwd).status_code == 429
            settle = {"user_id": "fa", "reservation_id": first.headers["x-reservation-id"], "amount": 4,
                      "quantities": {"tokens": 100}}
            assert httpx.post(svc + "/v1/settle", json=settle).json()["error"] is None
            assert httpx.get(svc + "/v1/authorize", headers=fwd).status_code == 200  # 100 + 800


def test_batched_charges_apply_quantity_limits_as_one_by_one(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_quantity_limit("u", "tokens", 1_000, period_seconds=60)
    results = store.charge_many([{"user_id": "u", "amount": 1, "operation_type": "b", "quantities": {"tokens": 400}}
                                 for _ in range(3)])
    assert [r.error for r in results] == [None, None, "rate_limited"]
    assert store.get_balance("u").balance == 998
