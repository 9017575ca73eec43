"""Table-driven bad input over every public method: a clear error naming the field, nothing written.

Each case must either raise ``InvalidInputError`` (a ``ValueError``) or a pydantic
``ValidationError`` naming the field, or return a result whose ``.error`` is a code; and a
snapshot of every key of the namespace must be identical before and after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from conftest import snapshot
from pydantic import ValidationError

from ducto_redis import InvalidInputError, RedisStore, SpendCap

NOT_INTS = [1.0, 0.5, math.nan, math.inf, -math.inf, True, False, "10", None, b"1", [1], {"a": 1}]
OUT_OF_RANGE = [-1, 2**53, 2**63]
BAD_IDS = ["", "x" * 10_241, None, 7, b"bytes", ["u"]]

Case = tuple[str, Callable[[RedisStore, Any], Any], list[Any], str]

# (method, call with the bad value, bad values, field the error must name)
CASES: list[Case] = [
    ("add_credits.amount", lambda s, v: s.add_credits("u", v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("reserve_credits.amount", lambda s, v: s.reserve_credits("u", v, "op"), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("deduct_credits.amount", lambda s, v: s.deduct_credits("u", s._rid, v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("charge.amount", lambda s, v: s.charge("u", v, "op"), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("charge_many.amount", lambda s, v: s.charge_many([{"user_id": "u", "amount": v, "operation_type": "op"}]),
     NOT_INTS, "amount"),
    ("check_spend_cap.amount", lambda s, v: s.check_spend_cap("u", amount=v), [x for x in NOT_INTS if x is not None]
     + OUT_OF_RANGE, "amount"),
    ("reserve_credits.min_balance", lambda s, v: s.reserve_credits("u", 1, "op", min_balance=v),
     NOT_INTS + OUT_OF_RANGE, "min_balance"),
    ("reserve_credits.ttl_seconds", lambda s, v: s.reserve_credits("u", 1, "op", ttl_seconds=v),
     [x for x in NOT_INTS if x is not None] + OUT_OF_RANGE + [0], "ttl_seconds"),
    ("set_rate_limit.limit", lambda s, v: s.set_rate_limit("u", v), [x for x in NOT_INTS if x is not None]
     + OUT_OF_RANGE + [0], "limit"),
    ("get_balance.user_id", lambda s, v: s.get_balance(v), BAD_IDS, "user_id"),
    ("add_credits.user_id", lambda s, v: s.add_credits(v, 1), BAD_IDS, "user_id"),
    ("reserve_credits.user_id", lambda s, v: s.reserve_credits(v, 1, "op"), BAD_IDS, "user_id"),
    ("deduct_credits.user_id", lambda s, v: s.deduct_credits(v, s._rid, 1), BAD_IDS, "user_id"),
    ("charge.user_id", lambda s, v: s.charge(v, 1, "op"), BAD_IDS, "user_id"),
    ("release_reservation.user_id", lambda s, v: s.release_reservation(v, s._rid), BAD_IDS, "user_id"),
    ("check_spend_cap.user_id", lambda s, v: s.check_spend_cap(v), BAD_IDS, "user_id"),
    ("set_rate_limit.user_id", lambda s, v: s.set_rate_limit(v, 5), BAD_IDS, "user_id"),
    ("deduct_credits.reservation_id", lambda s, v: s.deduct_credits("u", v, 1), BAD_IDS, "reservation_id"),
    ("release_reservation.reservation_id", lambda s, v: s.release_reservation("u", v), BAD_IDS, "reservation_id"),
    ("add_credits.type", lambda s, v: s.add_credits("u", 1, type=v), ["", None, 5, "t" * 257], "type"),
    ("charge.operation_type", lambda s, v: s.charge("u", 1, v), ["", None, 5, "o" * 257], "operation_type"),
    ("charge.idempotency_key", lambda s, v: s.charge("u", 1, "op", idempotency_key=v), ["", 5, "k" * 1025],
     "idempotency_key"),
    ("charge.metadata", lambda s, v: s.charge("u", 1, "op", metadata=v), ["gpt-4", 5, {"input_tokens": "many"}],
     "metadata"),
    ("add_credits.expires_at", lambda s, v: s.add_credits("u", 1, expires_at=v), ["2030-01-01", 5], "expires_at"),
    ("set_spend_cap.cap", lambda s, v: s.set_spend_cap(v), [None, {"user_id": "u", "limit": 5}, "cap"], "cap"),
    ("refund_credits.amount", lambda s, v: s.refund_credits(s._tx, v), [x for x in NOT_INTS if x is not None]
     + OUT_OF_RANGE + [0, 11], "amount"),
    ("refund_credits.transaction_id", lambda s, v: s.refund_credits(v), BAD_IDS, "transaction_id"),
    ("refund_credits.reason", lambda s, v: s.refund_credits(s._tx, 1, reason=v), ["", 5, "r" * 257], "reason"),
    ("refund_credits.idempotency_key", lambda s, v: s.refund_credits(s._tx, 1, idempotency_key=v),
     ["", 5, "k" * 1025], "idempotency_key"),
    ("refund_credits.metadata", lambda s, v: s.refund_credits(s._tx, 1, metadata=v), ["why", 5], "metadata"),
    ("sweep_expired_credits.dry_run", lambda s, v: s.sweep_expired_credits(dry_run=v), [None, 1, "yes"], "dry_run"),
]

NO_NONE = [x for x in NOT_INTS if x is not None]
LABELS = ["", None, 5, "l" * 257]
PERIOD_NAMES = ["weekly", "", None, 5]

# the team methods; s._tid is a team with member "u", s._trid a hold of u's on it
TEAM_CASES: list[Case] = [
    ("create_team.initial_balance", lambda s, v: s.create_team("T", initial_balance=v), NOT_INTS + OUT_OF_RANGE,
     "initial_balance"),
    ("create_team.name", lambda s, v: s.create_team(v), LABELS, "name"),
    ("get_team_balance.team_id", lambda s, v: s.get_team_balance(v), BAD_IDS, "team_id"),
    ("get_team_members.team_id", lambda s, v: s.get_team_members(v), BAD_IDS, "team_id"),
    ("team_spend_report.team_id", lambda s, v: s.team_spend_report(v), BAD_IDS, "team_id"),
    ("top_up_team.amount", lambda s, v: s.top_up_team(s._tid, v), NOT_INTS + OUT_OF_RANGE, "amount"),
    ("top_up_team.team_id", lambda s, v: s.top_up_team(v, 5), BAD_IDS, "team_id"),
    ("add_team_member.user_id", lambda s, v: s.add_team_member(s._tid, v), BAD_IDS, "user_id"),
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
    ("set_team_spend_cap.limit", lambda s, v: s.set_team_spend_cap(s._tid, "daily", v), NOT_INTS + OUT_OF_RANGE,
     "limit"),
    ("set_team_spend_cap.cap_type", lambda s, v: s.set_team_spend_cap(s._tid, v, 5), PERIOD_NAMES, "cap_type"),
    ("set_team_spend_cap.action", lambda s, v: s.set_team_spend_cap(s._tid, "daily", 5, v), ["block", "", None, 5],
     "action"),
    ("deduct_team.amount", lambda s, v: s.deduct_team(s._tid, "u", v), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("deduct_team.team_id", lambda s, v: s.deduct_team(v, "u", 1), BAD_IDS, "team_id"),
    ("deduct_team.user_id", lambda s, v: s.deduct_team(s._tid, v, 1), BAD_IDS, "user_id"),
    ("deduct_team.idempotency_key", lambda s, v: s.deduct_team(s._tid, "u", 1, idempotency_key=v),
     ["", 5, "k" * 1025], "idempotency_key"),
    ("deduct_team.metadata", lambda s, v: s.deduct_team(s._tid, "u", 1, metadata=v),
     ["gpt-4", 5, {"input_tokens": "many"}], "metadata"),
    ("deduct_team_many.amount", lambda s, v: s.deduct_team_many([{"team_id": s._tid, "user_id": "u", "amount": v}]),
     NOT_INTS, "amount"),
    ("reserve_team.amount", lambda s, v: s.reserve_team(s._tid, "u", v), NOT_INTS + OUT_OF_RANGE + [0], "amount"),
    ("reserve_team.ttl_seconds", lambda s, v: s.reserve_team(s._tid, "u", 1, ttl_seconds=v),
     NO_NONE + OUT_OF_RANGE + [0], "ttl_seconds"),
    ("settle_team_reservation.amount", lambda s, v: s.settle_team_reservation(s._tid, "u", s._trid, v),
     NOT_INTS + OUT_OF_RANGE, "amount"),
    ("settle_team_reservation.reservation_id", lambda s, v: s.settle_team_reservation(s._tid, "u", v, 1), BAD_IDS,
     "reservation_id"),
    ("release_team_reservation.reservation_id", lambda s, v: s.release_team_reservation(s._tid, "u", v), BAD_IDS,
     "reservation_id"),
    ("hit_rate_limit.user_id", lambda s, v: s.hit_rate_limit(v), BAD_IDS, "user_id"),
]

UNKNOWN: list[tuple[str, Callable[[RedisStore], Any], str]] = [
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
]


def prepared(store: RedisStore) -> RedisStore:
    store._credit = store.add_credits("u", 1_000).transaction_id  # type: ignore[attr-defined]
    store._rid = store.reserve_credits("u", 10, "op").reservation_id  # type: ignore[attr-defined]
    store.add_credits("v", 0)
    tid = store.create_team("T", initial_balance=1_000).team_id
    store.add_team_member(tid, "u")
    store.add_team_member(tid, "v")
    store._tid = tid  # type: ignore[attr-defined]
    store._trid = store.reserve_team(tid, "u", 10).reservation_id  # type: ignore[attr-defined]
    store._tx = store.charge("u", 10, "op").transaction_id  # type: ignore[attr-defined]
    return store


def names_field(exc: BaseException, field: str) -> bool:
    if isinstance(exc, InvalidInputError):
        return exc.field == field or exc.field.startswith(field)
    return field in str(exc)


@pytest.mark.parametrize("case", CASES + TEAM_CASES, ids=[c[0] for c in CASES + TEAM_CASES])
def test_bad_values_are_refused_naming_the_field_and_nothing_is_written(store: RedisStore, case: Case) -> None:
    _, call, values, field = case
    prepared(store)
    before = snapshot(store)
    for value in values:
        try:
            result = call(store, value)
        except (InvalidInputError, ValidationError) as exc:
            assert names_field(exc, field), (value, exc)
        else:
            results = result if isinstance(result, list) else [result]
            assert all(getattr(r, "error", None) for r in results), (value, result)
        assert snapshot(store) == before, value


@pytest.mark.parametrize("case", UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_unknown_things_give_an_error_code_and_write_nothing(store: RedisStore, case: Any) -> None:
    _, call, code = case
    prepared(store)
    before = snapshot(store)
    assert call(store).error == code
    assert snapshot(store) == before


@pytest.mark.parametrize("kwargs", [
    {"limit": -1}, {"limit": 1.5}, {"limit": "5"}, {"limit": True}, {"limit": 2**53},
    {"limit": 5, "cap_type": "weekly"}, {"limit": 5, "action": "block"}, {"limit": 5, "model": 7},
])
def test_wrong_spend_cap_fields_are_refused_by_the_model(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        SpendCap(user_id="u", **kwargs)
    assert next(iter(kwargs.keys() - {"limit"}), "limit") in str(info.value) or "limit" in str(info.value)
