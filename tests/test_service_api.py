"""The service's JSON API over HTTP (uvicorn on loopback, the real Redis): statuses, idempotency,
bad input naming the field, bearer tokens, OpenAPI, health and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REDIS_URL, new_namespace
from gateway_support import funded_user as user
from gateway_support import own_namespace, serve

from ducto_redis import RedisStore, Settings, SpendCap
from ducto_redis.service import create_app
from ducto_redis.service.voids import VoidSigner

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api(redis_client: Any) -> Iterator[tuple[httpx.Client, RedisStore]]:
    with own_namespace(redis_client) as admin:
        settings = Settings(redis_url=REDIS_URL, namespace=admin.settings.namespace, service_tokens=f"other,{TOKEN}")
        with serve(create_app(settings)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
            yield client, admin


def test_charge_debits_and_a_retry_with_the_same_key_is_charged_once(api: Any) -> None:
    client, admin = api
    uid = user(admin, 100)
    body = {"user_id": uid, "amount": 7, "operation_type": "chat", "metadata": {"model": "gpt-4o"}}
    first = client.post("/v1/charge", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/charge", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert first.json()["balance_after"] == 93 and first.json()["error"] is None
    assert again.json()["idempotent"] is True and again.headers["idempotent-replayed"] == "true"
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    assert admin.get_balance(uid).balance == 93


def test_denials_are_json_with_ductos_code_and_their_status(api: Any) -> None:
    client, admin = api
    poor = user(admin, 3)
    r = client.post("/v1/charge", json={"user_id": poor, "amount": 5})
    assert r.status_code == 402 and r.json()["error"] == "insufficient_credits"
    capped = user(admin, 100)
    admin.set_spend_cap(SpendCap(user_id=capped, limit=4))
    r = client.post("/v1/charge", json={"user_id": capped, "amount": 5})
    assert r.status_code == 402 and r.json()["error"] == "spend_cap_exceeded"
    busy = user(admin, 100)
    admin.set_rate_limit(busy, limit=1, period_seconds=60, burst=1)
    assert client.post("/v1/charge", json={"user_id": busy, "amount": 1}).status_code == 200
    r = client.post("/v1/charge", json={"user_id": busy, "amount": 1})
    assert r.status_code == 429 and r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    assert r.json()["rate_limit_limit"] == 1
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) == ("1", "0")
    assert r.headers["ratelimit-reset"] == r.headers["retry-after"]
    r = client.post("/v1/reserve", json={"user_id": busy, "amount": 1, "rate_limit": True})
    assert r.status_code == 429 and r.headers["ratelimit-limit"] == "1"


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u", "amount": "12"}, "amount"),
    ({"user_id": "u", "amount": 1.5}, "amount"),
    ({"user_id": 7, "amount": 1}, "user_id"),
    ({"amount": 1}, "user_id"),
    ({"user_id": "u", "amount": 1, "surprise": 1}, "surprise"),
    ({"user_id": "", "amount": 1}, "user_id"),
])
def test_bad_input_is_a_400_naming_the_field(api: Any, body: dict[str, Any], field: str) -> None:
    client, _ = api
    r = client.post("/v1/charge", json=body)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_input" and r.json()["field"] == field


def test_a_body_that_is_not_json_is_a_400(api: Any) -> None:
    client, _ = api
    r = client.post("/v1/charge", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"


def test_out_of_range_amount_is_a_400_naming_the_field(api: Any) -> None:
    client, admin = api  # out of range is bad input like a wrong type (docs/input-rules.md): one answer
    r = client.post("/v1/charge", json={"user_id": user(admin, 10), "amount": 0})
    assert r.status_code == 400 and (r.json()["error"], r.json()["field"]) == ("invalid_input", "amount")


def test_reserve_settle_release_and_balance(api: Any) -> None:
    client, admin = api
    uid = user(admin, 100)
    hold = client.post("/v1/reserve", json={"user_id": uid, "amount": 40, "operation_type": "job"}).json()
    assert hold["error"] is None
    r = client.post("/v1/settle", json={"user_id": uid, "reservation_id": hold["reservation_id"], "amount": 25})
    assert r.status_code == 200 and r.json()["balance_after"] == 75
    r = client.post("/v1/settle", json={"user_id": uid, "reservation_id": hold["reservation_id"], "amount": 25})
    assert r.status_code == 404 and r.json()["error"] == "reservation_not_found"
    other = client.post("/v1/reserve", json={"user_id": uid, "amount": 10}).json()
    r = client.post("/v1/release", json={"user_id": uid, "reservation_id": other["reservation_id"]})
    assert r.status_code == 200 and r.json()["amount"] == 10
    bal = client.get(f"/v1/balance/{uid}").json()
    assert (bal["balance"], bal["held"]) == (75, 0)


def test_credits_charge_many_and_team_deduct(api: Any) -> None:
    client, admin = api
    uid = "u-" + new_namespace()
    r = client.post("/v1/credits", json={"user_id": uid, "amount": 50, "type": "purchase"},
                    headers={"Idempotency-Key": "buy-1"})
    assert r.status_code == 200 and r.json()["new_balance"] == 50
    client.post("/v1/credits", json={"user_id": uid, "amount": 50, "type": "purchase"},
                headers={"Idempotency-Key": "buy-1"})
    assert admin.get_balance(uid).balance == 50
    many = {"requests": [{"user_id": uid, "amount": 10}, {"user_id": uid, "amount": 100}]}
    r = client.post("/v1/charge_many", json=many, headers={"Idempotency-Key": "batch-1"})
    assert [x["error"] for x in r.json()["results"]] == [None, "insufficient_credits"]
    client.post("/v1/charge_many", json=many, headers={"Idempotency-Key": "batch-1"})  # replayed item by item
    assert admin.get_balance(uid).balance == 40
    team = admin.create_team("T", initial_balance=100)
    admin.add_team_member(team.team_id, uid)
    r = client.post(f"/v1/teams/{team.team_id}/deduct", json={"user_id": uid, "amount": 30})
    assert r.status_code == 200 and r.json()["team_balance_after"] == 70
    r = client.post(f"/v1/teams/{team.team_id}/deduct", json={"user_id": uid, "amount": 300})
    assert r.status_code == 402 and r.json()["error"] == "insufficient_team_balance"


def test_the_api_needs_a_bearer_token(api: Any) -> None:
    client, _ = api
    base = str(client.base_url)
    assert httpx.post(base + "/v1/charge", json={"user_id": "x", "amount": 1}).status_code == 401
    assert httpx.post(base + "/v1/charge", json={"user_id": "x", "amount": 1},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(base + "/v1/balance/x", headers={"X-Ducto-Token": TOKEN}).status_code == 200
    assert httpx.get(base + "/v1/balance/x", headers={"Authorization": "Bearer other"}).status_code == 200


def test_openapi_health_and_metrics(api: Any) -> None:
    client, admin = api
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/charge", "/v1/reserve", "/v1/settle", "/v1/release", "/v1/credits", "/v1/charge_many",
            "/v1/teams/{team_id}/deduct", "/v1/balance/{user_id}", "/v1/authorize", "/v1/void"} <= set(doc["paths"])
    assert set(doc["paths"]["/v1/void"]) == {"get", "post"}
    assert doc["components"]["schemas"]["DeductionResult"]["properties"]["rate_limit_limit"]
    assert "ChargeBody" in doc["components"]["schemas"]
    assert client.get("/healthz").json() == {"ok": True}
    client.post("/v1/charge", json={"user_id": user(admin, 5), "amount": 1})
    text = client.get("/metrics").text
    assert 'ducto_decisions_total{operation="charge",outcome="ok"}' in text
    assert "ducto_decision_seconds_bucket" in text
    assert f'ducto_ledger_backlog_entries{{namespace="{admin.settings.namespace}"}}' in text
    assert "ducto_ledger_oldest_unflushed_seconds" in text


def test_a_void_signature_signs_one_decision_for_the_hold_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    old = VoidSigner(Settings(service_tokens="old", hold_ttl_seconds=60))
    signer = VoidSigner(Settings(service_tokens="new,old", hold_ttl_seconds=60))
    sig = signer.sign("acct", "tx-1", "")
    assert signer.check(sig, "acct", "tx-1", "") is None
    assert signer.check(old.sign("acct", "tx-1", ""), "acct", "tx-1", "") is None  # a token being rotated out
    assert [signer.check(sig, *d) for d in (("acct2", "tx-1", ""), ("acct", "tx-2", ""), ("acct", "", "tx-1"))] == [
        "invalid"] * 3
    assert VoidSigner(Settings(service_tokens="other")).check(sig, "acct", "tx-1", "") == "invalid"
    assert signer.check("", "acct", "tx-1", "") == signer.check("x.y", "acct", "tx-1", "") == "invalid"
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert signer.check(sig, "acct", "tx-1", "") == "expired"
