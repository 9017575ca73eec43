"""Request-rate limits (GCRA) decided in the same script as caps and balance."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import advance, ledger_entries, snapshot

from ducto_redis import InvalidInputError, RedisStore, SpendCap


def test_charges_beyond_the_burst_are_rate_limited_with_a_retry_after(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_rate_limit("u", limit=10, period_seconds=1, burst=3)
    first = [store.charge("u", 1, "req") for _ in range(3)]
    assert [r.error for r in first] == [None, None, None]
    assert [r.rate_limit_remaining for r in first] == [2, 1, 0]
    denied = store.charge("u", 1, "req")
    assert denied.error == "rate_limited" and 0 < denied.retry_after_ms <= 100
    assert store.get_balance("u").balance == 997  # a refused request costs nothing
    advance(store, 0.1)
    assert store.charge("u", 1, "req").error is None  # one emission interval later


def test_the_steady_rate_is_limit_per_period(store: RedisStore) -> None:
    store.add_credits("u", 10_000)
    store.set_rate_limit("u", limit=60, period_seconds=60, burst=1)
    admitted = 0
    for _ in range(120):  # two minutes, one attempt per half second
        if store.charge("u", 1, "req").error is None:
            admitted += 1
        advance(store, 0.5)
    assert 59 <= admitted <= 61


def test_a_refused_debit_does_not_use_up_the_rate_limit(store: RedisStore) -> None:
    store.add_credits("u", 1)
    store.set_rate_limit("u", limit=1, period_seconds=60, burst=1)
    assert store.charge("u", 5, "req").error == "insufficient_credits"
    assert store.charge("u", 1, "req").error is None  # the first admitted request
    assert store.charge("u", 1, "req").error == "rate_limited"


def test_rate_limit_is_checked_before_caps_and_a_denial_writes_nothing(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.set_spend_cap(SpendCap(user_id="u", limit=0))
    store.set_rate_limit("u", limit=1, period_seconds=60, burst=1)
    assert store.charge("u", 1, "req").error == "spend_cap_exceeded"
    store.remove_spend_cap("u")
    assert store.charge("u", 1, "req").error is None
    before = {k: v for k, v in snapshot(store).items() if not k.endswith(":events")}
    assert store.charge("u", 1, "req").error == "rate_limited"
    assert {k: v for k, v in snapshot(store).items() if not k.endswith(":events")} == before


def test_settling_a_reservation_is_not_rate_limited(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.set_rate_limit("u", limit=1, period_seconds=60, burst=1)
    r = store.reserve_credits("u", 10, "job")
    assert store.charge("u", 1, "req").error is None
    assert store.deduct_credits("u", r.reservation_id, 10).error is None


def test_hit_rate_limit_admits_free_requests_without_moving_money(store: RedisStore) -> None:
    assert store.hit_rate_limit("u").remaining is None  # no limit set: always allowed
    store.set_rate_limit("u", limit=2, period_seconds=10)
    assert [store.hit_rate_limit("u").allowed for _ in range(3)] == [True, True, False]
    assert store.get_balance("u").balance == 0
    assert [e["op"] for e in ledger_entries(store)] == ["rate_limit_set"]


def test_every_rate_limited_decision_reports_the_limit_beside_what_remains(store: RedisStore) -> None:
    # the limit is the requests per period (RateLimit-Limit's quota), not the burst
    store.add_credits("u", 100)
    assert store.charge("u", 1, "req").rate_limit_limit is None  # no limit set
    store.set_rate_limit("u", limit=10, period_seconds=60, burst=2)
    charged = store.charge("u", 1, "req")
    assert (charged.rate_limit_remaining, charged.rate_limit_limit) == (1, 10)
    assert [(r.error, r.rate_limit_limit) for r in store.charge_many(
        [{"user_id": "u", "amount": 1, "operation_type": "req"}] * 2)] == [
        (None, 10), ("rate_limited", 10)]
    assert store.charge_with_allowance("u", 1, "req", {}).rate_limit_limit == 10  # refused, still says it
    store.add_credits("v", 100)
    store.set_rate_limit("v", limit=5, period_seconds=60, burst=5)
    hold = store.reserve_credits("v", 10, "job", rate_limit=True)
    assert (hold.rate_limit_remaining, hold.rate_limit_limit) == (4, 5)
    assert store.reserve_credits("v", 10, "job").rate_limit_limit is None  # the rate limit not applied
    settled = store.deduct_credits("v", hold.reservation_id, 3)
    assert settled.error is None and settled.rate_limit_limit is None  # a settlement is not rate-limited
    hit = store.hit_rate_limit("v")
    assert (hit.allowed, hit.remaining, hit.limit) == (True, 3, 5)
    store.set_rate_limit("v", None)
    assert store.hit_rate_limit("v").limit is None


def test_removing_the_rate_limit_lifts_it(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.set_rate_limit("u", limit=1, period_seconds=60, burst=1)
    store.charge("u", 1, "req")
    assert store.charge("u", 1, "req").error == "rate_limited"
    store.set_rate_limit("u", None)
    assert store.charge("u", 1, "req").error is None


@pytest.mark.parametrize("kwargs,field", [
    ({"limit": 0}, "limit"), ({"limit": 1.5}, "limit"), ({"limit": 5, "period_seconds": 0}, "period_seconds"),
    ({"limit": 5, "period_seconds": "1s"}, "period_seconds"), ({"limit": 5, "burst": 0}, "burst"),
])
def test_bad_rate_limits_are_refused_naming_the_field(store: RedisStore, kwargs: dict[str, Any], field: str) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as info:
        store.set_rate_limit("u", **kwargs)
    assert info.value.field == field
    assert snapshot(store) == before
