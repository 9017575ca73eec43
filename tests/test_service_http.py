"""The service's lean HTTP plumbing (service/http.py) answers exactly what Starlette and json.dumps
would: the exact-path shortcut past the router, the header map, the hand-written JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, computed_field
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ducto_redis import Settings
from ducto_redis.core import deduction_result
from ducto_redis.routes import RouteTable
from ducto_redis.service import create_app
from ducto_redis.service.http import HeaderMap, flat_json, model_json, plain_fields

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
flat = st.one_of(st.text(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.none())


@given(st.dictionaries(st.text(), flat))
def test_flat_json_writes_what_json_dumps_writes(data: dict[str, Any]) -> None:
    assert flat_json(data) == json.dumps(data, separators=(",", ":"))


@pytest.mark.parametrize("value", [1.5, [1], {"a": 1}, ("t",)])
def test_flat_json_leaves_anything_else_to_json_dumps(value: Any) -> None:
    assert flat_json({"a": 1, "b": value}) is None


@given(st.text(), st.text(), st.integers(min_value=-(2**53), max_value=2**53), st.booleans(),
       st.one_of(st.none(), st.text()), st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)))
def test_a_result_is_written_as_pydantic_dumps_it(
    tx: str, user: str, balance: int, replayed: bool, error: str | None, rate: int | None
) -> None:
    r = deduction_result(tx, user, -1, balance, replayed, error, error, 5, rate, rate)
    data = r.model_dump(mode="json")
    assert model_json(r) == (data, json.dumps(data, separators=(",", ":")))


class _Computed(BaseModel):
    a: int = 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def b(self) -> int:
        return self.a + 1


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int = 1


@pytest.mark.parametrize("model", [_Computed(), _Extra(c=3)])
def test_a_model_with_more_than_its_fields_is_dumped_by_pydantic(model: BaseModel) -> None:
    assert plain_fields(model) is None
    data = model.model_dump(mode="json")
    assert model_json(model) == (data, json.dumps(data, separators=(",", ":")))


def test_the_header_map_reads_any_case_and_the_first_of_a_repeated_header() -> None:
    raw = [(b"x-api-key", b"first"), (b"host", b"h"), (b"x-api-key", b"second"), (b"x-latin", "é".encode("latin-1"))]
    h, ref = HeaderMap({"headers": raw}), Headers(raw=raw)
    for name in ("x-api-key", "X-API-Key", "HOST", "x-latin", "absent"):
        assert h.get(name) == ref.get(name)


def _app() -> Starlette:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", namespace="http-plumbing", service_tokens=TOKEN)
    return create_app(settings, routes=RouteTable([{"method": "GET", "path": "/chat", "cost": 1}]))


class _ThroughStarlette:
    """The same app, every request through Starlette's middleware stack and router."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(self.app, scope, receive, send)


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/charge", {"json": {"user_id": "u", "amount": 1}}),                      # no token: 401
    ("POST", "/v1/charge", {"json": {"user_id": "u", "amount": "1"}, "headers": AUTH}),   # bad input: 400
    ("POST", "/v1/charge", {"content": b"{nope", "headers": AUTH}),
    ("POST", "/v1/settle", {"json": {"user_id": "u"}, "headers": AUTH}),
    ("GET", "/v1/charge", {"headers": AUTH}),                                               # 405
    ("POST", "/v1/charge/", {"json": {}, "headers": AUTH}),                                 # redirect
    ("GET", "/nowhere", {}),                                                                # 404
    ("GET", "/v1/authorize", {"headers": {"X-Forwarded-Uri": "/free", "X-Ducto-Token": TOKEN}}),  # unlisted
    ("GET", "/v1/authorize", {"headers": {"X-Forwarded-Uri": "/chat", "X-Ducto-Token": TOKEN}}),  # no account
    ("GET", "/v1/authorize?deny_status=403", {"headers": {"X-Forwarded-Uri": "/chat"}}),   # no token, NGINX
    ("HEAD", "/v1/authorize", {"headers": {"X-Original-Uri": "/elsewhere", "X-Ducto-Token": TOKEN}}),
    ("GET", "/v1/authorize/free", {"headers": AUTH}),
    ("POST", "/v1/void", {"headers": {**AUTH, "X-Ducto-Gateway-Status": "504"}}),
    ("GET", "/openapi.json", {}),
]


def _request(app: ASGIApp, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            return await client.request(method, path, **kw)
    return asyncio.run(go())


@pytest.mark.parametrize(("method", "path", "kw"), REQUESTS)
def test_exact_paths_are_answered_as_through_the_router(method: str, path: str, kw: dict[str, Any]) -> None:
    app = _app()
    fast = _request(app, method, path, **kw)
    routed = _request(_ThroughStarlette(app), method, path, **kw)
    assert (fast.status_code, sorted(fast.headers.multi_items()), fast.content) == (
        routed.status_code, sorted(routed.headers.multi_items()), routed.content)


def test_middleware_added_to_the_service_sees_every_request() -> None:
    app = _app()
    seen: list[str] = []

    def middleware(inner: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope.get("path", scope["type"]))
            await inner(scope, receive, send)
        return wrapped

    app.add_middleware(middleware)
    assert _request(app, "POST", "/v1/charge", json={"user_id": "u", "amount": 1}).status_code == 401
    assert _request(app, "GET", "/v1/authorize", headers={"X-Forwarded-Uri": "/chat"}).status_code == 401
    assert seen == ["/v1/charge", "/v1/authorize"]
