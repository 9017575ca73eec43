"""The admission decision of a gateway request, shared by ``CreditMiddleware`` and ``/v1/authorize``.

:class:`Gate` turns (account, route, idempotency key) into a :class:`Verdict`: an HTTP status, the
headers for the upstream (admitted) or the client (refused), and the body of a refusal. One script
call decides (rate limit, caps, balance, debit or hold together). Every Redis call goes through
:meth:`Gate.guard`: bounded by ``decision_timeout_ms``, counted in the metrics, and a Redis that
cannot be reached becomes :class:`Unavailable`, which the fail mode turns into a 503 (``closed``)
or an admitted request (``open``).

Statuses: 200 admitted, 400 bad input (``field`` named), 401 no account, 402
``insufficient_credits`` / ``spend_cap_exceeded``, 403 an unlisted route under ``unlisted: deny``,
429 ``rate_limited`` (``Retry-After``), 503 Redis unavailable (fail-closed) or ``ledger_backlog_full``.

``RateLimit-Limit`` is the account's request-rate limit: requests per period (the IETF RateLimit
draft's quota); ``RateLimit-Remaining`` is how many more requests would pass at once now (GCRA: at
most the burst). A 429 adds ``RateLimit-Reset`` (seconds until a request passes again, as
``Retry-After``); an admitted answer does not (the decision does not say when the whole burst is back).

:meth:`Gate.void` gives back the decision of a request whose response was never produced (the
middleware's app failed, or a gateway could not reach its upstream).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis

from . import errors as E
from .errors import InvalidInputError
from .routes import RouteMatch

T = TypeVar("T")

FAIL_OPEN_HEADER = "X-Ducto-Fail-Open"
REPLAYED_HEADER = "Idempotent-Replayed"
BALANCE_HEADER = "X-Credits-Remaining"
RESERVATION_HEADER = "X-Reservation-Id"
TRANSACTION_HEADER = "X-Transaction-Id"
ACCOUNT_HEADER_UPSTREAM = "X-Ducto-Account"
RATE_HEADER = "RateLimit-Remaining"
RATE_LIMIT_HEADER = "RateLimit-Limit"
VOID_HEADER = "X-Ducto-Void"  # forward-auth's signature of the decision, for /v1/void (service/voids.py)
# what forward-auth answers on an admitted request, for the gateway to copy onto the upstream
# request: every one is always present (empty when it does not apply), so a gateway that copies a
# header the answer lacks (Caddy 2.6 copies its placeholder) or keeps the client's own can't be fooled
UPSTREAM_HEADERS = (BALANCE_HEADER, RATE_LIMIT_HEADER, RATE_HEADER, RESERVATION_HEADER, TRANSACTION_HEADER,
                    ACCOUNT_HEADER_UPSTREAM, REPLAYED_HEADER, VOID_HEADER)
# the reason and idempotency key of the refund that gives back a request's charge (a refund's key is
# scoped to its transaction), and the prefix of a released hold's key (keys are per account)
VOID_REASON = "no_response"
VOID_KEY = "void"

_REDIS_FAILURES = (redis.RedisError, OSError, TimeoutError, asyncio.TimeoutError)

_STATUS = {
    E.RATE_LIMITED: 429,
    E.INSUFFICIENT_CREDITS: 402,
    E.INSUFFICIENT_TEAM_BALANCE: 402,
    E.SPEND_CAP_EXCEEDED: 402,
    E.INVALID_AMOUNT: 400,
    E.LEDGER_BACKLOG_FULL: 503,
    E.RESERVATION_NOT_FOUND: 404,
    E.TRANSACTION_NOT_FOUND: 404,
    E.TEAM_NOT_FOUND: 404,
    E.USER_NOT_FOUND: 404,
    E.USER_NOT_IN_TEAM: 403,
    E.ALREADY_REFUNDED: 409,
}


def status_of(error: str | None) -> int:
    """The HTTP status of a result's error code (None: 200)."""
    if error is None:
        return 200
    return _STATUS.get(error, 400)


def retry_after_seconds(retry_after_ms: int) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(retry_after_ms / 1000)))


class MetricsSink(Protocol):
    """What the gate reports (``ducto_redis.metrics.DecisionMetrics`` is one)."""

    def observe(self, operation: str, outcome: str, seconds: float) -> None: ...
    def redis_error(self, operation: str) -> None: ...
    def passed_open(self, operation: str) -> None: ...


class NoMetrics:
    """A sink that records nothing (prometheus_client absent, or metrics turned off)."""

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        return None

    def redis_error(self, operation: str) -> None:
        return None

    def passed_open(self, operation: str) -> None:
        return None


def default_metrics() -> MetricsSink:
    """The process's Prometheus metrics when prometheus_client is installed, else :class:`NoMetrics`."""
    try:
        from .metrics import decision_metrics
    except ImportError:
        return NoMetrics()
    return decision_metrics()


class Unavailable(Exception):
    """Redis could not be reached or did not answer in time; nothing is known about the call."""


@dataclass(slots=True)
class Verdict:
    """The answer to one request: status, headers, and what a refusal says (see the module docstring)."""

    status: int
    error: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    reservation_id: str = ""
    transaction_id: str = ""
    replayed: bool = False
    retry_after_ms: int = 0
    field: str | None = None
    message: str | None = None

    @property
    def admitted(self) -> bool:
        return self.status < 300

    def body(self) -> dict[str, Any]:
        """The JSON body of a refusal: ``{"error": code, ...}``."""
        out: dict[str, Any] = {"error": self.error}
        if self.retry_after_ms:
            out["retry_after_ms"] = self.retry_after_ms
        if self.field is not None:
            out["field"] = self.field
        if self.message is not None:
            out["message"] = self.message
        return out


async def _bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable``, cancelled after ``seconds`` (:class:`TimeoutError`): one timer handle, a
    third of what ``asyncio.timeout`` costs per call on the hot path."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not fired:
            raise
        if sys.version_info >= (3, 11):
            task.uncancel()
        raise TimeoutError(f"no answer within {seconds:g} s") from None
    finally:
        timer.cancel()


class Gate:
    """Admission decisions over an ``AsyncRedisStore`` (see the module docstring)."""

    def __init__(
        self,
        store: Any,
        *,
        fail_mode: str | None = None,
        timeout_ms: int | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.store = store
        settings = store.settings
        self.fail_open = (fail_mode or settings.fail_mode) == "open"
        self.timeout = (timeout_ms or settings.decision_timeout_ms) / 1000
        self.metrics: MetricsSink = metrics if metrics is not None else NoMetrics()

    async def guard(self, operation: str, awaitable: Awaitable[T]) -> T:
        """Await a store call within the decision timeout, counting it; a Redis failure raises
        :class:`Unavailable` (the call may or may not have run: retry with the same idempotency key)."""
        start = time.perf_counter()
        try:
            result = await _bounded(awaitable, self.timeout)
        except _REDIS_FAILURES as exc:
            self.metrics.redis_error(operation)
            self.metrics.observe(operation, "unavailable", time.perf_counter() - start)
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        outcome = getattr(result, "error", None) or "ok"
        self.metrics.observe(operation, outcome, time.perf_counter() - start)
        return result

    def unavailable(self, operation: str) -> Verdict:
        """The verdict when Redis failed: 503 (fail-closed) or admitted and counted (fail-open)."""
        if self.fail_open:
            self.metrics.passed_open(operation)
            return Verdict(200, headers=[(FAIL_OPEN_HEADER, "1")])
        return Verdict(503, "unavailable", [("Retry-After", "1")], message="the credit store is not answering")

    async def admit(
        self,
        account: str,
        match: RouteMatch,
        idempotency_key: str | None = None,
        quantities: dict[str, int] | None = None,
    ) -> Verdict:
        """Decide one request of ``account`` on a matched route: charge, hold or rate-limit only;
        ``quantities`` (the request's estimate, see ``RouteMatch.quantities``) are checked against
        the account's quantity limits in the same script call."""
        route = match.route
        model = match.model
        meta = {"model": model} if model else None
        operation = "hold" if route.hold is not None else "charge" if route.cost else "rate_limit"
        try:
            if route.hold is not None:
                return await self._hold(account, route.hold, route.operation_type, meta, idempotency_key, quantities)
            if operation == "rate_limit":
                hit = await self.guard("rate_limit", self.store.hit_rate_limit(account))
                if not hit.allowed:
                    return limited(hit.retry_after_ms, hit.limit)
                return Verdict(200, headers=_rate_headers(hit.remaining, hit.limit))
            r = await self.guard("charge", self.store.charge(
                account, route.cost, route.operation_type, idempotency_key=idempotency_key, metadata=meta,
                quantities=quantities))
        except Unavailable:
            return self.unavailable(operation)
        except InvalidInputError as exc:
            return Verdict(400, "invalid_input", field=exc.field, message=exc.message)
        if r.error == E.RATE_LIMITED:
            return limited(r.retry_after_ms, r.rate_limit_limit)
        headers = [(BALANCE_HEADER, str(r.balance_after))]
        if r.error:
            return refused(r.error, headers)
        headers.append((TRANSACTION_HEADER, r.transaction_id))
        headers.extend(_rate_headers(r.rate_limit_remaining, r.rate_limit_limit))
        if r.idempotent:
            headers.append((REPLAYED_HEADER, "true"))
        return Verdict(200, headers=headers, transaction_id=r.transaction_id, replayed=r.idempotent)

    async def _hold(
        self, account: str, estimate: int, operation_type: str, meta: dict[str, Any] | None, idem: str | None,
        quantities: dict[str, int] | None,
    ) -> Verdict:
        """A hold of ``estimate`` credits; rate limit and quantity limits in the same script call."""
        h = await self.guard("reserve", self.store.reserve_credits(
            account, estimate, operation_type, metadata=meta, min_balance=0, idempotency_key=idem,
            quantities=quantities, rate_limit=True))
        if h.error == E.RATE_LIMITED:
            return limited(h.retry_after_ms, h.rate_limit_limit)
        headers = [(BALANCE_HEADER, str(h.balance))]
        if h.error:
            return refused(h.error, headers)
        headers.append((RESERVATION_HEADER, h.reservation_id))
        headers.extend(_rate_headers(h.rate_limit_remaining, h.rate_limit_limit))
        if h.idempotent:
            headers.append((REPLAYED_HEADER, "true"))
        return Verdict(200, headers=headers, reservation_id=h.reservation_id, replayed=h.idempotent)

    async def void(
        self, account: str, transaction_id: str = "", reservation_id: str = "", idempotency_key: str | None = None
    ) -> bool:
        """Give back the decision of a request whose response was never produced: refund its charge
        (``transaction_id``, only a debit of ``account``) or release its hold (``reservation_id``), each
        at most once however often this is called, then forget the request's ``idempotency_key`` so
        that a retry is decided afresh (a replay of a decision given back would pass for free). Never
        for a replayed decision (it belongs to an earlier request). True when nothing of the request
        stays charged: given back now or by an earlier void. Redis failing raises :class:`Unavailable`.
        """
        if reservation_id:
            released = await self.guard("void", self.store.release_reservation(
                account, reservation_id, idempotency_key=f"{VOID_KEY}:{reservation_id}"))
            voided = released.error is None  # reservation_not_found: settled (the work was done) or expired
        elif transaction_id:
            refunded = await self.guard("void", self.store.refund_credits(
                transaction_id, reason=VOID_REASON, idempotency_key=VOID_KEY, user_id=account))
            voided = refunded.error is None  # already_refunded: by someone else, maybe in part
        else:
            return True  # nothing was decided
        if voided and idempotency_key:
            key = self.store.core.keys.user(account).idempotency(idempotency_key)
            await self.guard("void", self.store.client.delete(key))
        return voided


def _rate_headers(remaining: int | None, limit: int | None) -> list[tuple[str, str]]:
    if remaining is None or limit is None:  # both or neither: the account's rate limit
        return []
    return [(RATE_LIMIT_HEADER, str(limit)), (RATE_HEADER, str(remaining))]


def rate_limited_headers(retry_after_ms: int, limit: int | None) -> list[tuple[str, str]]:
    """A 429's headers: ``Retry-After`` and ``RateLimit-Reset`` (whole seconds), ``RateLimit-Remaining: 0``
    and, when the account has a request-rate limit, ``RateLimit-Limit``."""
    seconds = retry_after_seconds(retry_after_ms)
    headers = [("Retry-After", seconds), (RATE_HEADER, "0"), ("RateLimit-Reset", seconds)]
    if limit is not None:
        headers.append((RATE_LIMIT_HEADER, str(limit)))
    return headers


def limited(retry_after_ms: int, limit: int | None = None) -> Verdict:
    """429 with ``Retry-After`` (whole seconds) and the ``RateLimit-*`` headers."""
    return Verdict(429, E.RATE_LIMITED, rate_limited_headers(retry_after_ms, limit), retry_after_ms=retry_after_ms)


def refused(error: str, headers: list[tuple[str, str]]) -> Verdict:
    """A refusal by error code (402 for credits and caps), keeping ``headers`` (the balance)."""
    status = status_of(error)
    if status == 503:
        headers = [*headers, ("Retry-After", "1")]
    return Verdict(status, error, headers)
