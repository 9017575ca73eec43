"""The service's JSON API: request bodies (validated, the bad field named) and its OpenAPI schema.

Every body model forbids unknown fields and takes integers strictly (``"12"`` and ``1.5`` are
refused naming the field); range rules (amounts ≥ 1, at most 2**53−1, ...) stay with the store's
core, which answers them as result values or :class:`~ducto_redis.errors.InvalidInputError`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .. import __version__
from ..models import (
    AddCreditsResult,
    BalanceResult,
    DeductionResult,
    ReleaseResult,
    ReserveResult,
    TeamDeductionResult,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChargeBody(_Body):
    """``POST /v1/charge``: caps, rate limit and balance checked and debited in one script call."""

    user_id: StrictStr
    amount: StrictInt
    operation_type: StrictStr = "api"
    metadata: dict[str, Any] | None = None
    min_balance: StrictInt = 0
    quantities: dict[str, StrictInt] | None = None


class ReserveBody(ChargeBody):
    """``POST /v1/reserve``: hold an estimate; settle it with ``/v1/settle``. ``rate_limit``: apply
    the account's request-rate limit in the same call (a gateway admitting a request)."""

    ttl_seconds: StrictInt | None = None
    rate_limit: bool = False


class SettleBody(_Body):
    """``POST /v1/settle``: spend the actual amount of a hold (the rest returns)."""

    user_id: StrictStr
    reservation_id: StrictStr
    amount: StrictInt
    metadata: dict[str, Any] | None = None
    quantities: dict[str, StrictInt] | None = None


class ReleaseBody(_Body):
    """``POST /v1/release``: give a hold back untouched."""

    user_id: StrictStr
    reservation_id: StrictStr


class CreditsBody(_Body):
    """``POST /v1/credits``: add credits (a purchase, a grant; ``expires_at`` for expiring credits)."""

    user_id: StrictStr
    amount: StrictInt
    type: StrictStr = "adjustment"
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None


class ChargeItem(ChargeBody):
    """One decision of ``/v1/charge_many``."""

    idempotency_key: StrictStr | None = None


class ChargeManyBody(_Body):
    """``POST /v1/charge_many``: many charges, one script call per shard, results in order."""

    requests: list[ChargeItem] = Field(max_length=10_000)


class TeamDeductBody(_Body):
    """``POST /v1/teams/{team_id}/deduct``: a member spends from the team's pool."""

    user_id: StrictStr
    amount: StrictInt
    metadata: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """A refusal or a bad request: ``error`` is ducto's code, or ``invalid_input`` naming ``field``."""

    error: str
    field: str | None = None
    message: str | None = None
    retry_after_ms: int | None = None


class ChargeManyResult(BaseModel):
    """The results of ``/v1/charge_many``, in request order."""

    results: list[DeductionResult]


# path, method, summary, body, result, mutation (takes Idempotency-Key)
ENDPOINTS: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel], bool]] = [
    ("/v1/charge", "post", "Charge without a hold", ChargeBody, DeductionResult, True),
    ("/v1/reserve", "post", "Hold an estimate", ReserveBody, ReserveResult, True),
    ("/v1/settle", "post", "Settle a hold with the actual amount", SettleBody, DeductionResult, True),
    ("/v1/release", "post", "Release a hold", ReleaseBody, ReleaseResult, True),
    ("/v1/credits", "post", "Add credits", CreditsBody, AddCreditsResult, True),
    ("/v1/charge_many", "post", "Many charges in one round trip", ChargeManyBody, ChargeManyResult, True),
    ("/v1/teams/{team_id}/deduct", "post", "Deduct from a team pool", TeamDeductBody, TeamDeductionResult, True),
    ("/v1/balance/{user_id}", "get", "A user's balance", None, BalanceResult, False),
]

_REFUSALS = {
    "400": "Bad input (the field is named: docs/input-rules.md) or invalid_amount (a refund above what is left)",
    "401": "No or wrong bearer token",
    "402": "insufficient_credits, insufficient_team_balance or spend_cap_exceeded",
    "404": "reservation_not_found, team_not_found, user_not_found",
    "429": "rate_limited (Retry-After, RateLimit-Reset, RateLimit-Remaining: 0, RateLimit-Limit)",
    "503": "Redis unavailable (fail-closed) or ledger_backlog_full (Retry-After)",
}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service, built from the pydantic models above."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"content": {"application/json": {"schema": ref(ErrorBody)}}}
    paths: dict[str, Any] = {}
    for path, method, summary, body, result, mutation in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "Done", "content": {"application/json": {"schema": ref(result)}}},
                          **{code: {"description": text, **error} for code, text in _REFUSALS.items()}},
        }
        params: list[dict[str, Any]] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in ("team_id", "user_id") if "{" + p + "}" in path]
        if mutation:
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": 1024},
                           "description": "A retry with the same key returns the first result and changes nothing"})
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
        paths.setdefault(path, {})[method] = op
    paths["/v1/authorize"] = {"get": {
        "summary": "Forward-auth: admit, charge or hold for the original request (Caddy, NGINX, Envoy, Traefik)",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "X-Forwarded-Method", "in": "header", "schema": {"type": "string"}},
            {"name": "X-Forwarded-Uri", "in": "header", "schema": {"type": "string"}},
            {"name": "X-API-Key", "in": "header", "schema": {"type": "string"},
             "description": "The account (the header's name is the account_header setting)"},
            {"name": "deny_status", "in": "query", "schema": {"type": "integer", "enum": [401, 403]},
             "description": "NGINX auth_request: answer refusals with this status and X-Ducto-Status"}],
        "responses": {"200": {"description": "Admitted; headers for the upstream, each always present: "
                                             "X-Credits-Remaining, RateLimit-Limit, RateLimit-Remaining, "
                                             "X-Reservation-Id, X-Transaction-Id, X-Ducto-Account, "
                                             "Idempotent-Replayed, X-Ducto-Void"},
                      **{code: {"description": text, **error} for code, text in _REFUSALS.items()}},
    }}
    void_header = [{"name": n, "in": "header", "schema": {"type": "string"}, "description": d} for n, d in (
        ("X-Ducto-Account", "as /v1/authorize answered it"),
        ("X-Transaction-Id", "as /v1/authorize answered it (a cost route's charge)"),
        ("X-Reservation-Id", "as /v1/authorize answered it (a hold route's hold)"),
        ("X-Ducto-Void", "as /v1/authorize answered it: its signature of the decision"),
        ("X-Ducto-Gateway-Status", "the gateway's own status, 502 (default), 503 or 504: the status answered"),
        ("Idempotency-Key", "the original request's: forgotten once the decision is given back"))]
    gone = {"description": "The gateway's status; {error: upstream_unavailable, charged: whether this request "
                           "still costs anything}",
            "content": {"application/json": {"schema": {"type": "object", "properties": {
                "error": {"const": "upstream_unavailable"}, "charged": {"type": "boolean"}}}}}}
    void_op = {
        "summary": "Give back a forward-auth decision whose request the upstream never answered (the gateway's "
                   "own 502/503/504): refund the charge or release the hold, once (GET too: Caddy sends no body then)",
        "security": [{"bearer": []}],
        "parameters": void_header,
        "responses": {"502": gone, "503": gone, "504": gone,
                      "401": {"description": "No or wrong bearer token", **error},
                      "403": {"description": "invalid_void: X-Ducto-Void does not sign this decision", **error}},
    }
    paths["/v1/void"] = {"post": void_op, "get": void_op}
    paths["/healthz"] = {"get": {"summary": "A real script call on every shard",
                                 "responses": {"200": {"description": "ok"}, "503": {"description": "failing"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ducto-redis decision service", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
