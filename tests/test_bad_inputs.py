"""Table-driven bad input over every public method: one clear error naming the field, nothing written.

One rule per kind of input (``ducto_redis/validation.py``): every bad value — wrong type, out of
range, too long, text PostgreSQL cannot store (NUL, lone surrogates), metadata too big or too
deep — raises ``InvalidInputError`` whose ``field`` names it (``metadata.note``,
``requests[0].amount``), on every method, single calls and batches alike; and a snapshot of every
key of the namespace is identical before and after. No pydantic ``ValidationError``, no
``TypeError``, no result code for bad input: a result code is an answer about the state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import ledger_entries, snapshot

from ducto_redis import CreditManager, CreditMetadata, InvalidInputError, PricingConfigData, RedisStore, SpendCap
from ducto_redis.cli import main as cli
from ducto_redis.models import PlanDefinition
from ducto_redis.pricing import UsageMetrics

NOT_INTS = [1.0, 0.5, math.nan, math.inf, -math.inf, True, False, "10", None, b"1", [1], {"a": 1}]
NO_NONE = [x for x in NOT_INTS if x is not None]
OUT_OF_RANGE = [-1, 2**53, 2**63]
BAD_TEXT = ["nul\x00inside", "lone\ud800surrogate", "\udcff"]  # PostgreSQL stores neither
BAD_IDS = ["", "x" * 1025, "é" * 513, None, 7, b"bytes", ["u"], *BAD_TEXT]  # ids: at most 1 024 UTF-8 bytes
LABELS = ["", None, 5, "l" * 257, *BAD_TEXT]
KEYS = ["", 5, "k" * 1025, *BAD_TEXT]
PERIOD_NAMES = ["weekly", "", None, 5]


def nested(depth: int) -> dict[str, Any]:
    d: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        d = {"n": d}
    return d


BAD_METADATA: list[Any] = [
    "gpt-4", 5, {"input_tokens": "many"}, {"model": "m\x00"}, {"model": "m" * 257}, {"note": "a\ud800b"},
    {"k\x00": 1}, {1: "a"}, {"x": math.nan}, {"x": math.inf}, {"x": 10**30}, {"x": "a" * 9000},
    {"x": ["y" * 5000, "z" * 5000]}, nested(9), {"x": [[[[[[[["deep"]]]]]]]]},
    CreditMetadata(reference_id="r\x00"), CreditMetadata(model="\ud800"), CreditMetadata(note="n" * 9000),
]
QUANTITIES: list[Any] = [[("tokens", 1)], "tokens", {"to ken": 1}, {"tok\x00": 1}, {"tokens": -1}, {"tokens": 1.5},
                         {"tokens": 2**53}, {"tokens": None}, {f"q{i}": 1 for i in range(17)}]
HUGE_PLAN = {"id": "p", "name": "P", "free_allowance": 10**30}
TTLS = [*NO_NONE, 0, -1, 30 * 86400 + 1, 2**53 - 1]



class Prepared(RedisStore):
    """A store after :func:`prepared`: the ids it made, for the cases to use (a type; never instantiated)."""

    _credit: str  # a credit of u's
    _rid: str  # a hold of u's
    _tid: str  # a team with members u and v
    _trid: str  # a hold of u's on the team
    _tx: str  # a debit of u's (10 credits)


Case = tuple[str, Callable[[Prepared, Any], Any], list[Any], str]

# (method, call with the bad value, bad values, field the error must name)
CASES: list[Case] = [
    ("add_credits.amount", lambda s, v: s.add_credits("u", v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("add_credits.user_id", lambda s, v: s.add_credits(v, 1), BAD_IDS, "user_id"),
    ("add_credits.type", lambda s, v: s.add_credits("u", 1, type=v), LABELS, "type"),
    ("add_credits.idempotency_key", lambda s, v: s.add_credits("u", 1, idempotency_key=v), KEYS, "idempotency_key"),
    ("add_credits.metadata", lambda s, v: s.add_credits("u", 1, metadata=v), BAD_METADATA, "metadata"),
    ("add_credits.metadata.idempotency_key", lambda s, v: s.add_credits("u", 1, metadata={"idempotency_key": v}),
     [*BAD_TEXT, "k" * 1025, ""], "metadata.idempotency_key"),
    ("add_credits.expires_at", lambda s, v: s.add_credits("u", 1, expires_at=v), ["2030-01-01", 5], "expires_at"),
    ("get_balance.user_id", lambda s, v: s.get_balance(v), BAD_IDS, "user_id"),
    ("reserve_credits.amount", lambda s, v: s.reserve_credits("u", v, "op"), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("reserve_credits.user_id", lambda s, v: s.reserve_credits(v, 1, "op"), BAD_IDS, "user_id"),
    ("reserve_credits.operation_type", lambda s, v: s.reserve_credits("u", 1, v), LABELS, "operation_type"),
    ("reserve_credits.min_balance", lambda s, v: s.reserve_credits("u", 1, "op", min_balance=v),
     NO_NONE + OUT_OF_RANGE, "min_balance"),  # None: the settings' default_min_balance
    ("reserve_credits.ttl_seconds", lambda s, v: s.reserve_credits("u", 1, "op", ttl_seconds=v), TTLS, "ttl_seconds"),
    ("reserve_credits.metadata", lambda s, v: s.reserve_credits("u", 1, "op", metadata=v), BAD_METADATA, "metadata"),
    ("reserve_credits.idempotency_key", lambda s, v: s.reserve_credits("u", 1, "op", idempotency_key=v), KEYS,
     "idempotency_key"),
    ("deduct_credits.amount", lambda s, v: s.deduct_credits("u", s._rid, v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("deduct_credits.user_id", lambda s, v: s.deduct_credits(v, s._rid, 1), BAD_IDS, "user_id"),
    ("deduct_credits.reservation_id", lambda s, v: s.deduct_credits("u", v, 1), BAD_IDS, "reservation_id"),
    ("deduct_credits.metadata", lambda s, v: s.deduct_credits("u", s._rid, 1, metadata=v), BAD_METADATA, "metadata"),
    ("deduct_credits.idempotency_key", lambda s, v: s.deduct_credits("u", s._rid, 1, idempotency_key=v), KEYS,
     "idempotency_key"),
    ("release_reservation.user_id", lambda s, v: s.release_reservation(v, s._rid), BAD_IDS, "user_id"),
    ("release_reservation.reservation_id", lambda s, v: s.release_reservation("u", v), BAD_IDS, "reservation_id"),
    ("release_reservation.idempotency_key", lambda s, v: s.release_reservation("u", s._rid, idempotency_key=v), KEYS,
     "idempotency_key"),
    ("charge.amount", lambda s, v: s.charge("u", v, "op"), NOT_INTS + OUT_OF_RANGE + [0, -5], "amount"),
    ("charge.user_id", lambda s, v: s.charge(v, 1, "op"), BAD_IDS, "user_id"),
    ("charge.operation_type", lambda s, v: s.charge("u", 1, v), LABELS, "operation_type"),
    ("charge.idempotency_key", lambda s, v: s.charge("u", 1, "op", idempotency_key=v), KEYS, "idempotency_key"),
    ("charge.metadata", lambda s, v: s.charge("u", 1, "op", metadata=v), BAD_METADATA, "metadata"),
    ("charge.min_balance", lambda s, v: s.charge("u", 1, "op", min_balance=v), NOT_INTS + OUT_OF_RANGE,
     "min_balance"),
    ("charge_many.amount", lambda s, v: s.charge_many([{"user_id": "u", "amount": v, "operation_type": "op"}]),
     NOT_INTS + OUT_OF_RANGE + [0], "requests[0].amount"),
    ("charge_many.user_id", lambda s, v: s.charge_many([{"user_id": v, "amount": 1, "operation_type": "op"}]),
     BAD_IDS, "requests[0].user_id"),
    ("charge_many.metadata", lambda s, v: s.charge_many([{"user_id": "u", "amount": 1, "operation_type": "op",
                                                          "metadata": v}]), BAD_METADATA, "requests[0].metadata"),
    ("charge_many.requests", lambda s, v: s.charge_many(v), [[{"user_id": "u", "amount": 1}], "u", [7], None],
     "requests"),
    ("check_spend_cap.amount", lambda s, v: s.check_spend_cap("u", amount=v), NO_NONE + OUT_OF_RANGE, "amount"),
    ("check_spend_cap.user_id", lambda s, v: s.check_spend_cap(v), BAD_IDS, "user_id"),
    ("check_spend_cap.model", lambda s, v: s.check_spend_cap("u", model=v), [5, "m" * 257, *BAD_TEXT], "model"),
    ("set_spend_cap.cap", lambda s, v: s.set_spend_cap(v), [None, {"user_id": "u", "limit": 5}, "cap"], "cap"),
    ("set_spend_cap.user_id", lambda s, v: s.set_spend_cap(SpendCap(user_id=v, limit=5)), ["", *BAD_TEXT, "x" * 1025],
     "user_id"),
    ("set_spend_cap.model", lambda s, v: s.set_spend_cap(SpendCap(user_id="u", model=v, limit=5)),
     ["m" * 257, *BAD_TEXT], "model"),
    ("SpendCap.cap_type", lambda s, v: s.set_spend_cap(SpendCap(user_id="u", cap_type=v, limit=5)), PERIOD_NAMES,
     "cap_type"),
    ("SpendCap.action", lambda s, v: s.set_spend_cap(SpendCap(user_id="u", action=v, limit=5)),
     ["block", "", None, 5], "action"),
    ("SpendCap.limit", lambda s, v: s.set_spend_cap(SpendCap(user_id="u", limit=v)), NOT_INTS + OUT_OF_RANGE, "limit"),
    ("remove_spend_cap.cap_type", lambda s, v: s.remove_spend_cap("u", v), PERIOD_NAMES, "cap_type"),
    ("remove_spend_cap.user_id", lambda s, v: s.remove_spend_cap(v), BAD_IDS, "user_id"),
    ("set_rate_limit.limit", lambda s, v: s.set_rate_limit("u", v), NO_NONE + OUT_OF_RANGE + [0], "limit"),
    ("set_rate_limit.user_id", lambda s, v: s.set_rate_limit(v, 5), BAD_IDS, "user_id"),
    ("set_rate_limit.period_seconds", lambda s, v: s.set_rate_limit("u", 5, v),
     [math.nan, math.inf, 0, -1, 0.0001, 400 * 86400, "1", True, None], "period_seconds"),
    ("set_rate_limit.burst", lambda s, v: s.set_rate_limit("u", 5, 1, v), NO_NONE + OUT_OF_RANGE + [0], "burst"),
    ("hit_rate_limit.user_id", lambda s, v: s.hit_rate_limit(v), BAD_IDS, "user_id"),
    ("set_quantity_limit.quantity", lambda s, v: s.set_quantity_limit("u", v, 100),
     ["", "to ken", "q" * 65, None, 5, "tok\x00", "tok\ud800"], "quantity"),
    ("set_quantity_limit.limit", lambda s, v: s.set_quantity_limit("u", "tokens", v), NO_NONE + OUT_OF_RANGE + [0],
     "limit"),
    ("set_quantity_limit.period_seconds", lambda s, v: s.set_quantity_limit("u", "tokens", 100, v),
     [math.nan, math.inf, 0, -1, 400 * 86400, "60", True, None], "period_seconds"),
    ("set_quantity_limit.model", lambda s, v: s.set_quantity_limit("u", "tokens", 100, model=v),
     ["m" * 257, *BAD_TEXT, "a|b", "a;b"], "model"),
    ("set_quantity_limit.user_id", lambda s, v: s.set_quantity_limit(v, "tokens", 100), BAD_IDS, "user_id"),
    ("charge.quantities", lambda s, v: s.charge("u", 1, "op", quantities=v), QUANTITIES, "quantities"),
    ("reserve_credits.quantities", lambda s, v: s.reserve_credits("u", 1, "op", quantities=v), QUANTITIES,
     "quantities"),
    ("charge_many.quantities", lambda s, v: s.charge_many([{"user_id": "u", "amount": 1, "operation_type": "op",
                                                            "quantities": v}]), QUANTITIES, "requests[0].quantities"),
    ("refund_credits.amount", lambda s, v: s.refund_credits(s._tx, v), NO_NONE + OUT_OF_RANGE + [0], "amount"),
    ("refund_credits.transaction_id", lambda s, v: s.refund_credits(v), BAD_IDS, "transaction_id"),
    ("refund_credits.reason", lambda s, v: s.refund_credits(s._tx, 1, reason=v), [x for x in LABELS if x is not None],
     "reason"),
    ("refund_credits.idempotency_key", lambda s, v: s.refund_credits(s._tx, 1, idempotency_key=v), KEYS,
     "idempotency_key"),
    ("refund_credits.metadata", lambda s, v: s.refund_credits(s._tx, 1, metadata=v), BAD_METADATA, "metadata"),
    ("sweep_expired_credits.dry_run", lambda s, v: s.sweep_expired_credits(dry_run=v), [None, 1, "yes"], "dry_run"),
    ("set_user_plan.user_id", lambda s, v: s.set_user_plan(v, "pro"), BAD_IDS, "user_id"),
    ("set_user_plan.plan_id", lambda s, v: s.set_user_plan("u", v), LABELS, "plan_id"),
    ("get_user_plan.user_id", lambda s, v: s.get_user_plan(v), BAD_IDS, "user_id"),
    ("check_allowance.user_id", lambda s, v: s.check_allowance(v), BAD_IDS, "user_id"),
    ("increment_usage_window.plan_id", lambda s, v: s.increment_usage_window("u", v, 1), LABELS, "plan_id"),
    ("increment_usage_window.amount", lambda s, v: s.increment_usage_window("u", "pro", v), NOT_INTS + OUT_OF_RANGE,
     "amount"),
    ("charge_with_allowance.amount", lambda s, v: s.charge_with_allowance("u", v, "op", allowances={"pro": 5}),
     NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("charge_with_allowance.allowances", lambda s, v: s.charge_with_allowance("u", 1, "op", allowances=v),
     [[("pro", 5)], {"pro": -1}, {"pro": 2**53}, {"pro": 1.5}, {"p\x00": 5}, {"": 5}, {5: 5}], "allowances"),
    ("charge_with_allowance.metadata", lambda s, v: s.charge_with_allowance("u", 1, "op", allowances={}, metadata=v),
     BAD_METADATA, "metadata"),
    ("set_active_pricing.config", lambda s, v: s.set_active_pricing(v),
     [{"models": {"m\x00": "1"}}, {"models": {"m": "1"}, "plans": {"p": HUGE_PLAN}},
      {"models": {"m": "1"}, "min_balance": 10**30}, {"models": {"m": "1"}, "fixed": {"job": 10**30}},
      PricingConfigData(models={"m": "1"}, plans={"p": PlanDefinition(id="p", name="n\ud800")}), "config"], "config"),
    ("set_active_pricing.label", lambda s, v: s.set_active_pricing(PricingConfigData(models={"m": "1"}), label=v),
     [x for x in LABELS if x is not None], "label"),
]

# the team methods; s._tid is a team with member "u", s._trid a hold of u's on it
TEAM_CASES: list[Case] = [
    ("create_team.initial_balance", lambda s, v: s.create_team("T", initial_balance=v), NOT_INTS + OUT_OF_RANGE,
     "initial_balance"),
    ("create_team.name", lambda s, v: s.create_team(v), LABELS, "name"),
    ("create_team.idempotency_key", lambda s, v: s.create_team("T", idempotency_key=v), KEYS, "idempotency_key"),
    ("get_team_balance.team_id", lambda s, v: s.get_team_balance(v), BAD_IDS, "team_id"),
    ("get_team_members.team_id", lambda s, v: s.get_team_members(v), BAD_IDS, "team_id"),
    ("team_spend_report.team_id", lambda s, v: s.team_spend_report(v), BAD_IDS, "team_id"),
    ("top_up_team.amount", lambda s, v: s.top_up_team(s._tid, v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("top_up_team.team_id", lambda s, v: s.top_up_team(v, 5), BAD_IDS, "team_id"),
    ("top_up_team.type", lambda s, v: s.top_up_team(s._tid, 5, type=v), LABELS, "type"),
    ("top_up_team.metadata", lambda s, v: s.top_up_team(s._tid, 5, metadata=v), BAD_METADATA, "metadata"),
    ("add_team_member.user_id", lambda s, v: s.add_team_member(s._tid, v), BAD_IDS, "user_id"),
    ("add_team_member.team_id", lambda s, v: s.add_team_member(v, "u"), BAD_IDS, "team_id"),
    ("add_team_member.spend_cap", lambda s, v: s.add_team_member(s._tid, "u", spend_cap=v), NO_NONE + OUT_OF_RANGE,
     "spend_cap"),
    ("add_team_member.role", lambda s, v: s.add_team_member(s._tid, "u", role=v), LABELS, "role"),
    ("add_team_member.cap_period", lambda s, v: s.add_team_member(s._tid, "u", spend_cap=5, cap_period=v),
     PERIOD_NAMES, "cap_period"),
    ("set_member_cap.spend_cap", lambda s, v: s.set_member_cap(s._tid, "u", v), NO_NONE + OUT_OF_RANGE, "spend_cap"),
    ("set_member_cap.cap_period", lambda s, v: s.set_member_cap(s._tid, "u", 5, cap_period=v),
     [p for p in PERIOD_NAMES if p is not None], "cap_period"),
    ("set_member_role.role", lambda s, v: s.set_member_role(s._tid, "u", v), LABELS, "role"),
    ("remove_team_member.user_id", lambda s, v: s.remove_team_member(s._tid, v), BAD_IDS, "user_id"),
    ("set_team_spend_cap.team_id", lambda s, v: s.set_team_spend_cap(v, "daily", 5), BAD_IDS, "team_id"),
    ("set_team_spend_cap.limit", lambda s, v: s.set_team_spend_cap(s._tid, "daily", v), NOT_INTS + OUT_OF_RANGE,
     "limit"),
    ("set_team_spend_cap.cap_type", lambda s, v: s.set_team_spend_cap(s._tid, v, 5), PERIOD_NAMES, "cap_type"),
    ("set_team_spend_cap.action", lambda s, v: s.set_team_spend_cap(s._tid, "daily", 5, v), ["block", "", None, 5],
     "action"),
    ("set_team_spend_cap.model", lambda s, v: s.set_team_spend_cap(s._tid, "daily", 5, "deny", v),
     ["m" * 257, *BAD_TEXT], "model"),
    ("deduct_team.amount", lambda s, v: s.deduct_team(s._tid, "u", v), NOT_INTS + OUT_OF_RANGE + [0, -5], "amount"),
    ("deduct_team.team_id", lambda s, v: s.deduct_team(v, "u", 1), BAD_IDS, "team_id"),
    ("deduct_team.user_id", lambda s, v: s.deduct_team(s._tid, v, 1), BAD_IDS, "user_id"),
    ("deduct_team.idempotency_key", lambda s, v: s.deduct_team(s._tid, "u", 1, idempotency_key=v), KEYS,
     "idempotency_key"),
    ("deduct_team.metadata", lambda s, v: s.deduct_team(s._tid, "u", 1, metadata=v), BAD_METADATA, "metadata"),
    ("deduct_team_many.amount", lambda s, v: s.deduct_team_many([{"team_id": s._tid, "user_id": "u", "amount": v}]),
     NOT_INTS + OUT_OF_RANGE + [0], "requests[0].amount"),
    ("deduct_team_many.team_id", lambda s, v: s.deduct_team_many([{"team_id": v, "user_id": "u", "amount": 1}]),
     BAD_IDS, "requests[0].team_id"),
    ("reserve_team.amount", lambda s, v: s.reserve_team(s._tid, "u", v), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("reserve_team.ttl_seconds", lambda s, v: s.reserve_team(s._tid, "u", 1, ttl_seconds=v), TTLS, "ttl_seconds"),
    ("reserve_team.operation_type", lambda s, v: s.reserve_team(s._tid, "u", 1, operation_type=v), LABELS,
     "operation_type"),
    ("settle_team_reservation.amount", lambda s, v: s.settle_team_reservation(s._tid, "u", s._trid, v),
     NOT_INTS + OUT_OF_RANGE, "amount"),
    ("settle_team_reservation.reservation_id", lambda s, v: s.settle_team_reservation(s._tid, "u", v, 1), BAD_IDS,
     "reservation_id"),
    ("release_team_reservation.reservation_id", lambda s, v: s.release_team_reservation(s._tid, "u", v), BAD_IDS,
     "reservation_id"),
]

UNKNOWN: list[tuple[str, Callable[[Prepared], Any], str]] = [
    ("deduct_credits unknown reservation", lambda s: s.deduct_credits("u", "nope", 1), "reservation_not_found"),
    ("release unknown reservation", lambda s: s.release_reservation("u", "nope"), "reservation_not_found"),
    ("deduct for unknown user", lambda s: s.deduct_credits("ghost", s._rid, 1), "reservation_not_found"),
    ("charge unknown user", lambda s: s.charge("ghost", 1, "op"), "insufficient_credits"),
    ("reserve unknown user", lambda s: s.reserve_credits("ghost", 1, "op"), "insufficient_credits"),
    ("settle unknown team hold", lambda s: s.settle_team_reservation(s._tid, "u", "nope", 1), "reservation_not_found"),
    ("settle another member's team hold", lambda s: s.settle_team_reservation(s._tid, "v", s._trid, 1),
     "reservation_not_found"),
    ("release unknown team hold", lambda s: s.release_team_reservation(s._tid, "u", "nope"), "reservation_not_found"),
    ("deduct_team by a non-member", lambda s: s.deduct_team(s._tid, "ghost", 1), "user_not_in_team"),
    ("reserve_team by a non-member", lambda s: s.reserve_team(s._tid, "ghost", 1), "user_not_in_team"),
    ("remove a non-member", lambda s: s.remove_team_member(s._tid, "ghost"), "user_not_in_team"),
    ("cap a non-member", lambda s: s.set_member_cap(s._tid, "ghost", 5), "user_not_in_team"),
    ("add a member to an unknown team", lambda s: s.add_team_member("no-team", "u"), "team_not_found"),
    ("deduct_team on an unknown team", lambda s: s.deduct_team("no-team", "u", 1), "team_not_found"),
    ("refund unknown transaction", lambda s: s.refund_credits("0badc0de-0000-4000-8000-000000000000"),
     "transaction_not_found"),
    ("refund a credit's id", lambda s: s.refund_credits(s._credit), "transaction_not_found"),
    ("refund more than the debit", lambda s: s.refund_credits(s._tx, 11), "invalid_amount"),  # valid, not for the state
]


def prepared(store: RedisStore) -> Prepared:
    s = cast(Prepared, store)  # the same object, with the ids set below
    s._credit = s.add_credits("u", 1_000).transaction_id
    s._rid = s.reserve_credits("u", 10, "op").reservation_id
    s.add_credits("v", 0)
    tid = s.create_team("T", initial_balance=1_000).team_id
    s.add_team_member(tid, "u")
    s.add_team_member(tid, "v")
    s._tid = tid
    s._trid = s.reserve_team(tid, "u", 10).reservation_id
    s._tx = s.charge("u", 10, "op").transaction_id
    return s


def names_field(exc: InvalidInputError, field: str) -> bool:
    """The error names ``field`` itself or a part of it (``metadata.note``, ``metadata[0]``)."""
    return exc.field == field or exc.field.startswith((field + ".", field + "["))


def refused(store: RedisStore, call: Callable[[], Any], field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        call()
    assert names_field(info.value, field), (value, info.value.field, info.value)


@pytest.mark.parametrize("case", CASES + TEAM_CASES, ids=[c[0] for c in CASES + TEAM_CASES])
def test_bad_values_are_refused_naming_the_field_and_nothing_is_written(store: RedisStore, case: Case) -> None:
    _, call, values, field = case
    s = prepared(store)
    before = snapshot(store)
    for value in values:
        refused(store, lambda value=value: call(s, value), field, value)  # type: ignore[misc]
    # once per case: a refused call writes nothing, and no call here deletes what another wrote, so
    # any value that wrote anything leaves the namespace changed (a snapshot per value SCANs the
    # whole shared keyspace ~10 times as often for the same proof)
    assert snapshot(store) == before


@pytest.mark.parametrize("case", UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_unknown_things_give_an_error_code_and_write_nothing(store: RedisStore, case: Any) -> None:
    _, call, code = case
    s = prepared(store)
    before = snapshot(store)
    assert call(s).error == code
    assert snapshot(store) == before


@pytest.mark.parametrize("kwargs", [
    {"limit": -1}, {"limit": 1.5}, {"limit": "5"}, {"limit": True}, {"limit": 2**53},
    {"limit": 5, "cap_type": "weekly"}, {"limit": 5, "type": "weekly"}, {"limit": 5, "action": "block"},
    {"limit": 5, "model": 7},
])
def test_wrong_spend_cap_fields_raise_invalid_input_naming_the_field(kwargs: dict[str, Any]) -> None:
    """Not pydantic's raw ValidationError (issue 14): the same error type as every other bad input."""
    with pytest.raises(InvalidInputError) as info:
        SpendCap(user_id="u", **kwargs)
    assert info.value.field == next(iter(kwargs.keys() - {"limit"}), "limit")


def test_an_int_subclass_is_taken_as_its_value_whatever_its_str_says(store: RedisStore) -> None:
    class Lying(int):
        def __str__(self) -> str:
            return "999"

        __repr__ = __format__ = lambda self, *_: "999"  # type: ignore[assignment]

    store.add_credits("u", Lying(50))
    assert store.charge("u", Lying(7), "op").balance_after == 43
    h = store.reserve_credits("u", Lying(3), "op", min_balance=Lying(0), ttl_seconds=Lying(60))
    assert store.deduct_credits("u", h.reservation_id, Lying(2)).balance_after == 41
    assert [e["amount"] for e in ledger_entries(store) if e["kind"] != "hold"] == ["50", "-7", "-2"]
    assert store.get_balance("u").balance == 41


def test_ids_and_metadata_up_to_the_limits_are_accepted(store: RedisStore) -> None:
    uid = "é" * 512  # 1 024 bytes
    meta = {"note": "n" * 8000}
    assert len(json.dumps(meta)) <= 8192
    assert store.add_credits(uid, 5, metadata=meta, idempotency_key="k" * 1024).new_balance == 5
    assert store.charge(uid, 1, "o" * 256, metadata=nested(8)).error is None


@pytest.mark.parametrize("kind", ["add_credits", "deduct"])
def test_the_manager_refuses_bad_text_naming_the_field_and_writes_nothing(store: RedisStore, kind: str) -> None:
    manager = CreditManager(store)
    manager.publish_pricing_from_dict({"models": {"_default": "input_tokens * 1"}})
    manager.add_credits("u", 100)
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as info:
        if kind == "add_credits":
            manager.add_credits("u", 5, tx_type="top\x00up")
        else:
            manager.deduct("u", UsageMetrics(model="gpt\x00", input_tokens=3), metadata={"note": "\ud800"})
    assert info.value.field.startswith(("tx_type", "type", "metadata"))
    assert snapshot(store) == before


# ── the command line: the same rules, one line naming the input and an exit code, never a traceback ──


def cli_refuses(capsys: Any, argv: list[str], field: str, code: int = 2) -> None:
    assert cli(argv) == code, argv
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err, err


def test_the_command_line_refuses_bad_input_naming_it_and_runs_nothing(capsys: Any, tmp_path: Path) -> None:
    base = ["--redis-url", "redis://127.0.0.1:6379/0", "--namespace", "tbadcli"]
    cli_refuses(capsys, [*base, "balance", "x" * 5000], "user_id")  # was a traceback
    cli_refuses(capsys, [*base, "balance", "\udcff"], "user_id")  # an undecodable byte in argv
    cli_refuses(capsys, [*base, "--ledger-schema", "x; DROP TABLE y", "--database-url", "postgresql://nowhere/x",
                         "migrate"], "ledger_schema", code=3)  # was pasted into SQL unchecked
    cli_refuses(capsys, ["--namespace", "a b", "balance", "u"], "namespace", code=3)
    for option in (["--batch", "0"], ["--processes", "0"], ["--claim-idle-ms", "-1"], ["--batch", "2000000"]):
        cli_refuses(capsys, [*base, "--database-url", "postgresql://nowhere/x", "flush", *option],
                    option[0].lstrip("-").replace("-", "_") if option[1] == "2000000" else option[0])
    big = tmp_path / "pricing.json"
    big.write_text(json.dumps({"models": {"m": "1"}, "plans": {"p": HUGE_PLAN}}))
    assert cli(["pricing", "validate", str(big)]) == 1  # was "valid", then every allowance charge raised
    assert "free_allowance" in capsys.readouterr().err
