"""CreditMiddleware: rate limits and per-route credit costs for any ASGI app (Starlette, FastAPI).

Each HTTP request is matched against a route table (``ducto_redis.routes``: exact paths,
templates such as ``/v1/chat/{model}``, prefixes such as ``/files/*``; methods). A request no
route matches is free: the app runs, nothing is charged, no account is needed (a 404 costs
nothing). A matched request's account comes from a header (``X-API-Key``) or a callable, then ONE
script call decides (see ``ducto_redis.gate``):

- a fixed ``cost`` is charged before the app runs (``cost: 0`` applies only the rate limit); if the
  app then raises or answers a server error (5xx), the charge is refunded;
- a ``hold`` route holds its estimate before the app runs and settles the actual price when the
  response starts: ``price_response(scope, status, headers)`` if given, else the response's
  ``X-Credits-Used`` header (taken off the response), else the estimate. A server error priced at
  0 (the default for a 5xx that says nothing) and an app that raises before answering have their
  hold released.

A refunded charge or released hold also forgets the request's ``Idempotency-Key`` (``Gate.void``),
so a retry is decided and charged afresh rather than answered, for free, with the decision given back.

A route with a ``quantity`` (e.g. tokens) also checks the account's quantity limits against the
request's estimate in the same script call; on a hold route, the response's ``X-Quantity-Used``
header (taken off the response) corrects the estimate when the hold is settled.

Refusals: 401 without an account, 402 with ``{"error": "insufficient_credits" | "spend_cap_exceeded"}``
and ``X-Credits-Remaining``, 429 with ``Retry-After`` and ``RateLimit-*``, 503 when Redis fails under
``fail_mode=closed`` (``open`` lets the request through). Admitted responses carry
``X-Credits-Remaining`` and, when the account has a rate limit, ``RateLimit-Limit`` and
``RateLimit-Remaining``. An ``Idempotency-Key`` request header makes a
retried request cost once; the replay is marked with ``Idempotent-Replayed: true``, on the request
the app sees and on the response.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from .aio import AsyncRedisStore
from .gate import REPLAYED_HEADER, Gate, MetricsSink, Unavailable, Verdict, default_metrics
from .routes import RouteSpec, RouteTable

log = logging.getLogger("ducto_redis.asgi")

Scope = MutableMapping[str, Any]  # as ASGI servers and frameworks (Starlette) type them
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AccountPicker = Callable[[Scope], "Awaitable[str | None] | str | None"]
PriceHook = Callable[[Scope, int, list[tuple[bytes, bytes]]], int]

COST_HEADER = b"x-credits-used"
QUANTITY_HEADER = b"x-quantity-used"


def _used_quantity(route: RouteSpec, headers: list[tuple[bytes, bytes]]) -> dict[str, int] | None:
    """The actual quantity the app reports (``X-Quantity-Used``) for a route with a quantity limit."""
    if route.quantity is None:
        return None
    for k, v in headers:
        if k.lower() == QUANTITY_HEADER and v.strip().isdigit() and len(v.strip()) <= 15:
            return {route.quantity: int(v)}
    return None  # as estimated


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _route_table(
    routes: RouteTable | Sequence[RouteSpec | Mapping[str, Any]] | str | Path | None,
    costs: Mapping[str, int] | None,
    default_cost: int | None,
    price_response: PriceHook | None,
    estimate: int,
    operation_type: str,
) -> RouteTable:
    if isinstance(routes, RouteTable):
        return routes
    if isinstance(routes, (str, Path)):
        return RouteTable.from_file(routes)
    if routes is not None:
        return RouteTable(routes, "free" if default_cost is None else default_cost)
    if costs is None and price_response is not None:  # every path priced from its response
        return RouteTable([RouteSpec(path="/*", hold=estimate, operation_type=operation_type)])
    specs = [RouteSpec(path=p, cost=c, operation_type=operation_type) for p, c in (costs or {}).items()]
    return RouteTable(specs, "free" if default_cost is None else default_cost)


class CreditMiddleware:
    """ASGI middleware that admits, rate-limits and charges each priced request (module docstring).

    ``routes``: a :class:`RouteTable`, a list of route dicts, or a routes file path; or, as before,
    ``costs`` (exact path -> fixed cost, any method) with ``default_cost`` for other paths (None, the
    default: free). ``fail_mode`` / ``timeout_ms`` default to the store's settings; ``metrics``
    True records Prometheus metrics when prometheus_client is installed.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: AsyncRedisStore,
        *,
        account: str | AccountPicker = "X-API-Key",
        routes: RouteTable | Sequence[RouteSpec | Mapping[str, Any]] | str | Path | None = None,
        costs: Mapping[str, int] | None = None,
        default_cost: int | None = None,
        price_response: PriceHook | None = None,
        estimate: int = 100,
        operation_type: str = "http",
        exempt_paths: tuple[str, ...] = (),
        fail_mode: str | None = None,
        timeout_ms: int | None = None,
        metrics: bool | MetricsSink = True,
    ) -> None:
        self.app = app
        self.store = store
        self.account = account
        self.routes = _route_table(routes, costs, default_cost, price_response, estimate, operation_type)
        self.price_response = price_response
        self.exempt_paths = exempt_paths
        sink = (default_metrics() if metrics else None) if isinstance(metrics, bool) else metrics
        self.gate = Gate(store, fail_mode=fail_mode, timeout_ms=timeout_ms, metrics=sink)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        match = self.routes.match(scope.get("method", "GET"), scope.get("path", "/"))
        if match is None:
            if self.routes.denies_unlisted:
                await _json(send, 403, {"error": "route_not_allowed"})
                return
            await self.app(scope, receive, send)  # unlisted: free
            return
        account = await self._account(scope)
        if not account:
            await _json(send, 401, {"error": "missing_account"})
            return
        idem = _header(scope, "Idempotency-Key")
        verdict = await self.gate.admit(account, match, idem, match.quantities(lambda name: _header(scope, name)))
        if not verdict.admitted:
            await _json(send, verdict.status, verdict.body(), _encode(verdict.headers))
            return
        if verdict.replayed:  # the app can tell a retried request
            scope = {**scope, "headers": [*scope.get("headers", []), (b"idempotent-replayed", b"true")]}
        if verdict.reservation_id:
            await self._settled(scope, receive, send, account, verdict, idem, match.route)
        else:
            await self._charged(scope, receive, send, account, verdict, idem)

    async def _account(self, scope: Scope) -> str | None:
        if isinstance(self.account, str):
            return _header(scope, self.account)
        picked = self.account(scope)
        if inspect.isawaitable(picked):
            picked = await picked
        return picked

    async def _charged(
        self, scope: Scope, receive: Receive, send: Send, account: str, verdict: Verdict, idem: str | None
    ) -> None:
        extra = _encode(verdict.headers)
        refundable = bool(verdict.transaction_id) and not verdict.replayed
        answered = False

        async def wrapped(message: Message) -> None:
            nonlocal answered, refundable
            if message["type"] == "http.response.start":
                answered = True
                if message["status"] >= 500 and refundable:  # a server error is not charged
                    refundable = False
                    await self._void(account, verdict, idem)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, wrapped)
            failed = False
        finally:
            if (failed or not answered) and refundable:  # raised, or answered nothing: not charged
                await self._void(account, verdict, idem)

    async def _void(self, account: str, verdict: Verdict, idem: str | None) -> None:
        """Give back the charge or hold of a request the app failed (it expires on its own, a hold)."""
        what = verdict.transaction_id or verdict.reservation_id
        try:
            if not await self.gate.void(account, verdict.transaction_id, verdict.reservation_id, idem):
                log.warning("could not give back %s of a request without response", what)
        except Exception as exc:
            log.warning("could not give back %s of a request without response: %s", what, exc)

    async def _settled(
        self, scope: Scope, receive: Receive, send: Send, account: str, verdict: Verdict, idem: str | None,
        route: RouteSpec,
    ) -> None:
        settled = False
        rid = verdict.reservation_id
        replay = [(REPLAYED_HEADER.lower().encode(), b"true")] if verdict.replayed else []
        rate = [h for h in _encode(verdict.headers) if h[0].startswith(b"ratelimit-")]

        async def priced_send(message: Message) -> None:
            nonlocal settled
            if message["type"] == "http.response.start" and not settled:
                settled = True
                headers = list(message.get("headers", []))
                price = self._price(scope, message["status"], headers, route.hold or 0)
                used = _used_quantity(route, headers)
                headers = [(k, v) for k, v in headers if k.lower() not in (COST_HEADER, QUANTITY_HEADER)]
                if price == 0 and message["status"] >= 500 and not verdict.replayed:
                    await self._void(account, verdict, idem)  # a server error costing nothing: given back
                    message = {**message, "headers": [*headers, *rate]}
                    await send(message)
                    return
                try:
                    r = await self.gate.guard("settle", self.store.deduct_credits(
                        account, rid, price, idempotency_key=None if idem is None else idem + ":settle",
                        quantities=used))
                    error = r.error
                except Unavailable:  # the hold expires on its own: the request costs nothing
                    error = "unavailable"
                if error is None:
                    headers.append((b"x-credits-remaining", str(r.balance_after).encode()))
                else:
                    headers.append((b"x-credits-error", error.encode()))
                message = {**message, "headers": [*headers, *rate, *replay]}
            await send(message)

        try:
            await self.app(scope, receive, priced_send)
        finally:
            if not settled and not verdict.replayed:  # the app failed before answering: give the hold back
                await self._void(account, verdict, idem)

    def _price(self, scope: Scope, status: int, headers: list[tuple[bytes, bytes]], estimate: int) -> int:
        if self.price_response is not None:
            return max(0, int(self.price_response(scope, status, headers)))
        for k, v in headers:
            if k.lower() == COST_HEADER:
                try:
                    return max(0, int(v))
                except ValueError:
                    log.warning("ignoring a malformed X-Credits-Used header: %r", v)
        return 0 if status >= 500 else estimate  # a server error that says nothing costs nothing


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _json(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": data})
