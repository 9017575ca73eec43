"""The decision service: a Starlette app over ``AsyncRedisStore`` (``ducto-redis serve``).

``create_app()`` builds it from the one settings model (``DUCTO_*``): the JSON API under ``/v1/``
(bearer tokens from ``service_tokens``), forward-auth at ``/v1/authorize`` (routes from
``routes_file``) and its ``/v1/void`` (``voids.py``), ``/healthz``, ``/metrics`` and
``/openapi.json``. The HTTP plumbing of the hot endpoints (no router walk, one header dict, raw
responses) is ``http.py``. See docs/service.md.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..aio import AsyncRedisStore
from ..connect import async_client
from ..errors import InvalidInputError
from ..gate import (
    ACCOUNT_HEADER_UPSTREAM,
    FAIL_OPEN_HEADER,
    REPLAYED_HEADER,
    UPSTREAM_HEADERS,
    VOID_HEADER,
    Gate,
    Unavailable,
    Verdict,
    rate_limited_headers,
    status_of,
)
from ..metrics import LedgerLagCollector, decision_metrics, scrape
from ..routes import RouteTable
from ..settings import Settings
from . import api
from .http import (
    JSON_TYPE,
    Handler,
    HeaderMap,
    RawResponse,
    ServiceApp,
    encode_headers,
    header_name,
    json_response,
    model_json,
    read_body,
)
from .voids import VoidSigner, gateway_status

log = logging.getLogger("ducto_redis.service")

B = TypeVar("B", bound=BaseModel)

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class BadRequest(Exception):
    """A request body that is not JSON or not the endpoint's shape; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


IDEMPOTENCY = "idempotency-key"
# every header an admitted forward-auth answer carries, empty until the decision fills it
_UPSTREAM_EMPTY = {header_name(k): b"" for k in UPSTREAM_HEADERS}
_ACCOUNT = header_name(ACCOUNT_HEADER_UPSTREAM)
_VOID = header_name(VOID_HEADER)


def result_response(result: BaseModel) -> Response:
    """A store result as JSON, with the status of its error code, ``Retry-After`` and ``RateLimit-*``
    on 429 and ``Idempotent-Replayed`` on a replay."""
    data, text = model_json(result)
    error = data.get("error")
    if error is None and not data.get("idempotent"):  # the common case, kept short
        return RawResponse(text.encode(), 200, [JSON_TYPE])
    headers: list[tuple[str, str]] = []
    status = status_of(error)
    if status == 429:
        headers.extend(rate_limited_headers(int(data.get("retry_after_ms") or 0), data.get("rate_limit_limit")))
    elif status == 503:
        headers.append(("Retry-After", "1"))
    if data.get("idempotent"):
        headers.append((REPLAYED_HEADER, "true"))
    raw = encode_headers(headers)
    raw.append(JSON_TYPE)
    return RawResponse(text.encode(), status, raw)


def verdict_response(v: Verdict, deny_status: int | None = None) -> Response:
    """A refusal as forward-auth answers it; with ``deny_status`` (NGINX) it uses that status and
    says the real one in ``X-Ducto-Status`` / ``X-Ducto-Error``. (An admitted verdict: ``authorize``.)"""
    headers = dict(v.headers)
    status = v.status
    if deny_status is not None:
        headers["X-Ducto-Status"] = str(v.status)
        headers["X-Ducto-Error"] = v.error or ""
        status = deny_status
    return json_response(v.body(), status, headers)


async def parse_body(request: Request, model: type[B]) -> B:
    """The request's JSON body as ``model``, or :class:`BadRequest` naming the field."""
    raw = await read_body(request)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        e = exc.errors()[0]
        if e["type"] == "json_invalid":
            raise BadRequest("body", "the body is not valid JSON") from None
        field = ".".join(str(p) for p in e["loc"]) or "body"
        raise BadRequest(field, e["msg"]) from None


class Service:
    """The handlers, bound to one store, gate and route table."""

    def __init__(self, settings: Settings, store: AsyncRedisStore, routes: RouteTable) -> None:
        self.settings = settings
        self.store = store
        self.routes = routes
        self.tokens = [t.encode() for t in settings.bearer_tokens()]
        self.account_header = settings.account_header.lower()
        self.metrics = decision_metrics()
        self.gate = Gate(store, metrics=self.metrics)
        self.signer = VoidSigner(settings)
        self._lag: LedgerLagCollector | None = None

    # ── plumbing ──────────────────────────────────────────────────────

    def authorized(self, h: HeaderMap) -> bool:
        """Whether the request carries a service token (always, when none is configured)."""
        if not self.tokens:
            return True
        given = h.get("x-ducto-token")
        if given is None:
            auth = h.get("authorization") or ""
            if auth[:7].lower() != "bearer ":
                return False
            given = auth[7:].strip()
        g = given.encode()
        return any(hmac.compare_digest(g, t) for t in self.tokens)

    def endpoint(
        self, operation: str, run: Callable[[Request, HeaderMap], Awaitable[BaseModel]], admission: bool = False
    ) -> Handler:
        """An API handler: token check, bad input as 400, Redis failures by the fail mode."""

        async def handler(request: Request) -> Response:
            h = HeaderMap(request.scope)
            if not self.authorized(h):
                return json_response({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
            try:
                return result_response(await self.gate.guard(operation, run(request, h)))
            except BadRequest as exc:
                return json_response({"error": "invalid_input", "field": exc.field, "message": exc.message}, 400)
            except InvalidInputError as exc:
                return json_response({"error": "invalid_input", "field": exc.field, "message": exc.message}, 400)
            except Unavailable:
                if admission and self.gate.fail_open:
                    self.metrics.passed_open(operation)
                    return json_response({"error": None, "fail_open": True}, 200, {FAIL_OPEN_HEADER: "1"})
                return json_response({"error": "unavailable", "message": "the credit store is not answering"},
                                     503, {"Retry-After": "1"})

        return handler

    # ── the JSON API ──────────────────────────────────────────────────

    async def charge(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.ChargeBody)
        return await self.store.charge(b.user_id, b.amount, b.operation_type, h.get(IDEMPOTENCY), b.metadata,
                                       b.min_balance, quantities=b.quantities)

    async def reserve(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.ReserveBody)
        return await self.store.reserve_credits(b.user_id, b.amount, b.operation_type, b.metadata, b.min_balance,
                                                h.get(IDEMPOTENCY), b.ttl_seconds, quantities=b.quantities,
                                                rate_limit=b.rate_limit)

    async def settle(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.SettleBody)
        return await self.store.deduct_credits(b.user_id, b.reservation_id, b.amount, h.get(IDEMPOTENCY),
                                               b.metadata, quantities=b.quantities)

    async def release(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.ReleaseBody)
        return await self.store.release_reservation(b.user_id, b.reservation_id, h.get(IDEMPOTENCY))

    async def credits(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.CreditsBody)
        return await self.store.add_credits(b.user_id, b.amount, b.type, b.metadata, b.expires_at,
                                            h.get(IDEMPOTENCY))

    async def charge_many(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.ChargeManyBody)
        idem = h.get(IDEMPOTENCY)
        reqs = [{**item.model_dump(), "idempotency_key": item.idempotency_key
                 or (None if idem is None else f"{idem}:{i}")} for i, item in enumerate(b.requests)]
        return api.ChargeManyResult(results=await self.store.charge_many(reqs))

    async def team_deduct(self, request: Request, h: HeaderMap) -> BaseModel:
        b = await parse_body(request, api.TeamDeductBody)
        return await self.store.deduct_team(request.path_params["team_id"], b.user_id, b.amount, b.metadata,
                                            h.get(IDEMPOTENCY))

    async def balance(self, request: Request, h: HeaderMap) -> BaseModel:
        return await self.store.get_balance(request.path_params["user_id"])

    # ── forward-auth ──────────────────────────────────────────────────

    async def authorize(self, request: Request) -> Response:
        """Admit, charge or hold for the gateway's original request (see docs/service.md)."""
        deny = request.query_params.get("deny_status") if request.scope["query_string"] else None
        deny_status = int(deny) if deny in ("401", "403") else None
        h = HeaderMap(request.scope)
        if not self.authorized(h):
            return verdict_response(Verdict(401, "unauthorized"), deny_status)
        method = h.get("x-forwarded-method") or h.get("x-original-method") or request.method
        uri = h.get("x-forwarded-uri") or h.get("x-original-uri") or request.url.path[len("/v1/authorize"):] or "/"
        match = self.routes.match(method, uri)
        if match is None:
            if self.routes.denies_unlisted:
                return verdict_response(Verdict(403, "route_not_allowed"), deny_status)
            return RawResponse(b"", 200, list(_UPSTREAM_EMPTY.items()))  # unlisted: free
        account = h.get(self.account_header)
        if not account:
            return verdict_response(Verdict(401, "missing_account"), deny_status)
        verdict = await self.gate.admit(account, match, h.get(IDEMPOTENCY), match.quantities(h.get))
        if not verdict.admitted:
            return verdict_response(verdict, deny_status)
        headers = dict(_UPSTREAM_EMPTY)  # every one present, so a client's own can't pass upstream
        for k, v in verdict.headers:
            headers[header_name(k)] = v.encode("latin-1")
        headers[_ACCOUNT] = account.encode("latin-1")
        if (verdict.transaction_id or verdict.reservation_id) and not verdict.replayed:
            headers[_VOID] = self.signer.sign(account, verdict.transaction_id, verdict.reservation_id).encode()
        return RawResponse(b"", 200, list(headers.items()))

    async def void(self, request: Request) -> Response:
        """Give back the decision of a request the upstream never answered; answer the client the
        gateway's status (see voids.py and docs/service.md)."""
        h = HeaderMap(request.scope)
        if not self.authorized(h):
            return json_response({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
        status = gateway_status(h.get("x-ducto-gateway-status"))
        signature = h.get("x-ducto-void") or ""
        if not signature:  # nothing decided (unlisted, rate limit only, fail-open), or a replay: nothing to give back
            return json_response({"error": "upstream_unavailable", "charged": False}, status)
        account = h.get("x-ducto-account") or ""
        tx, rid = h.get("x-transaction-id") or "", h.get("x-reservation-id") or ""
        why = self.signer.check(signature, account, tx, rid)
        if why == "invalid":
            return json_response({"error": "invalid_void", "message": "X-Ducto-Void does not sign this decision"},
                                 403)
        voided = False
        if why is None:
            try:
                voided = await self.gate.void(account, tx, rid, h.get(IDEMPOTENCY))
            except Unavailable:
                log.warning("could not give back %s of %s: the credit store is not answering", tx or rid, account)
        else:
            log.warning("not giving back %s of %s: the void came after hold_ttl_seconds", tx or rid, account)
        return json_response({"error": "upstream_unavailable", "charged": not voided}, status)

    # ── operations ────────────────────────────────────────────────────

    async def healthz(self, request: Request) -> Response:
        try:
            ok = await self.gate.guard("health", self.store.health())
        except Unavailable:
            ok = False
        return json_response({"ok": ok}, 200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        if self._lag is None:
            from ..connect import sync_client
            from ..store import RedisStore

            timeout = self.settings.decision_timeout_ms / 1000
            lag_store = RedisStore(sync_client(self.settings.redis_url, socket_timeout=timeout,
                                               socket_connect_timeout=timeout), self.settings)
            self._lag = LedgerLagCollector(self.settings.namespace, lag_store.ledger_lag)
        body = await run_in_threadpool(scrape, self._lag)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return json_response(api.openapi_schema())

    def routes_list(self) -> list[Route]:
        e = self.endpoint
        return [
            Route("/v1/charge", e("charge", self.charge, admission=True), methods=["POST"]),
            Route("/v1/reserve", e("reserve", self.reserve, admission=True), methods=["POST"]),
            Route("/v1/settle", e("settle", self.settle), methods=["POST"]),
            Route("/v1/release", e("release", self.release), methods=["POST"]),
            Route("/v1/credits", e("add_credits", self.credits), methods=["POST"]),
            Route("/v1/charge_many", e("charge_many", self.charge_many, admission=True), methods=["POST"]),
            Route("/v1/teams/{team_id}/deduct", e("deduct_team", self.team_deduct, admission=True), methods=["POST"]),
            Route("/v1/balance/{user_id}", e("balance", self.balance), methods=["GET"]),
            Route("/v1/void", self.void, methods=["GET", "POST"]),
            Route("/v1/authorize", self.authorize, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
            Route("/v1/authorize/{path:path}", self.authorize,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]


def service_store(settings: Settings) -> AsyncRedisStore:
    """The service's async store. A connection attempt gives up after ``decision_timeout_ms``; every
    call is bounded by the gate (one timer per decision, which also disconnects a connection left
    mid-reply), so the client has no socket timeout of its own: redis-py 8 sets one (5 s) unless
    told not to, and it costs a task and a timer per write and a timeout per read, ~12 µs a call."""
    client = async_client(settings.redis_url, socket_connect_timeout=settings.decision_timeout_ms / 1000,
                          socket_timeout=None)
    return AsyncRedisStore(client, settings)


def create_app(
    settings: Settings | None = None, *, routes: RouteTable | None = None, store: AsyncRedisStore | None = None
) -> Starlette:
    """The service app (``uvicorn --factory ducto_redis.service.app:create_app`` builds it from the
    environment). ``routes`` default to ``settings.routes_file`` (none: every route is unlisted)."""
    settings = settings or Settings()
    if routes is None:
        if settings.routes_file:
            routes = RouteTable.from_file(settings.routes_file)
        else:
            routes = RouteTable()
            log.warning("no routes file (DUCTO_ROUTES_FILE): forward-auth admits every request for free")
    store = store or service_store(settings)
    service = Service(settings, store, routes)
    if not service.tokens:
        log.warning("no service tokens (DUCTO_SERVICE_TOKENS): the API is open to anyone who can reach it; "
                    "ducto-redis serve listens on loopback only")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await store.close()

    app = ServiceApp(service.routes_list(), lifespan=lifespan)
    app.state.service = service
    return app
