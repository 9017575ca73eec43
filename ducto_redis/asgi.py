"""CreditMiddleware: rate limits and per-route credit costs for any ASGI app (Starlette, FastAPI).

For each HTTP request it picks the account (an API-key header, or a callable), then, in one
script call, applies the account's request-rate limit, its spend caps and its balance:

- a fixed route cost is charged before the app runs (``charge``); a cost of 0 only applies the rate
  limit (``hit_rate_limit``);
- with ``price_response`` the route is priced from the response: ``estimate`` credits are held
  before the app runs, and the actual price (from the status and headers) is settled when the
  response starts, the rest of the hold returning to the account.

Refusals: 401 without an account, 429 with ``Retry-After`` when rate limited, 402 with a JSON body
``{"error": "<code>"}`` for ``insufficient_credits`` / ``spend_cap_exceeded``. Admitted responses
carry ``X-Credits-Remaining`` and, when the account has a rate limit, ``RateLimit-Remaining``.
An ``Idempotency-Key`` request header makes a retried request cost once.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .aio import AsyncRedisStore

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AccountPicker = Callable[[Scope], "Awaitable[str | None] | str | None"]
PriceHook = Callable[[Scope, int, list[tuple[bytes, bytes]]], int]


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


class CreditMiddleware:
    """ASGI middleware that admits, rate-limits and charges each request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        store: AsyncRedisStore,
        *,
        account: str | AccountPicker = "X-API-Key",
        costs: Mapping[str, int] | None = None,
        default_cost: int = 1,
        price_response: PriceHook | None = None,
        estimate: int = 100,
        operation_type: str = "http",
        exempt_paths: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.store = store
        self.account = account
        self.costs = dict(costs or {})
        self.default_cost = default_cost
        self.price_response = price_response
        self.estimate = estimate
        self.operation_type = operation_type
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        account = await self._account(scope)
        if not account:
            await _json(send, 401, {"error": "missing_account"})
            return
        idem = _header(scope, "Idempotency-Key")
        if self.price_response is not None:
            await self._priced(scope, receive, send, account, idem)
            return
        cost = self.costs.get(scope.get("path", ""), self.default_cost)
        extra: list[tuple[bytes, bytes]] = []
        if cost == 0:
            hit = await self.store.hit_rate_limit(account)
            if not hit.allowed:
                await _too_many(send, hit.retry_after_ms)
                return
            if hit.remaining is not None:
                extra.append((b"ratelimit-remaining", str(hit.remaining).encode()))
        else:
            r = await self.store.charge(account, cost, self.operation_type, idempotency_key=idem)
            if r.error == "rate_limited":
                await _too_many(send, r.retry_after_ms)
                return
            if r.error:
                await _json(send, 402, {"error": r.error})
                return
            extra.append((b"x-credits-remaining", str(r.balance_after).encode()))
            if r.rate_limit_remaining is not None:
                extra.append((b"ratelimit-remaining", str(r.rate_limit_remaining).encode()))
        await self.app(scope, receive, _with_headers(send, extra))

    async def _account(self, scope: Scope) -> str | None:
        if isinstance(self.account, str):
            return _header(scope, self.account)
        picked = self.account(scope)
        if inspect.isawaitable(picked):
            picked = await picked
        return picked

    async def _priced(self, scope: Scope, receive: Receive, send: Send, account: str, idem: str | None) -> None:
        hit = await self.store.hit_rate_limit(account)
        if not hit.allowed:
            await _too_many(send, hit.retry_after_ms)
            return
        hold = await self.store.reserve_credits(account, self.estimate, self.operation_type, min_balance=0)
        if hold.error:
            await _json(send, 402, {"error": hold.error})
            return
        settled = False
        hook = self.price_response
        assert hook is not None

        async def priced_send(message: Message) -> None:
            nonlocal settled
            if message["type"] == "http.response.start" and not settled:
                settled = True
                price = max(0, int(hook(scope, message["status"], list(message.get("headers", [])))))
                r = await self.store.deduct_credits(account, hold.reservation_id, price, idempotency_key=idem)
                headers = list(message.get("headers", []))
                if r.error is None:
                    headers.append((b"x-credits-remaining", str(r.balance_after).encode()))
                else:
                    headers.append((b"x-credits-error", r.error.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, priced_send)
        finally:
            if not settled:  # the app failed before answering: give the hold back
                await self.store.release_reservation(account, hold.reservation_id)


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    if not extra:
        return send

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": data})


async def _too_many(send: Send, retry_after_ms: int) -> None:
    seconds = str(max(1, math.ceil(retry_after_ms / 1000))).encode()
    await _json(send, 429, {"error": "rate_limited", "retry_after_ms": retry_after_ms},
                ((b"retry-after", seconds), (b"ratelimit-remaining", b"0"), (b"ratelimit-reset", seconds)))
