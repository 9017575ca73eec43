"""Spend caps enforced inside the debit script: deny / warn / notify, daily and monthly windows."""

from __future__ import annotations

import pytest
from conftest import advance, event_entries, snapshot

from ducto_redis import CreditMetadata, RedisStore, SpendCap
from ducto_redis.layout import Account

DAY = 86400


def seconds_to_next_utc_midnight(store: RedisStore) -> float:
    t = store.client.time()
    now = t[0] + t[1] / 1e6 + store.core.clock_offset_ms / 1000
    return float(DAY - (now % DAY))


def at_start_of_a_day(store: RedisStore) -> None:
    """Put the test clock one second after a UTC midnight, so a day's debits stay in one window."""
    advance(store, seconds_to_next_utc_midnight(store) + 1)


def test_deny_cap_refuses_a_charge_that_would_exceed_it_and_writes_no_debit(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 50_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=5_000, action="deny"))
    assert store.charge("u", 3_000, "x").error is None
    r = store.charge("u", 3_000, "x")
    assert r.error == "spend_cap_exceeded" and r.balance_after == 47_000
    assert store.get_balance("u").balance == 47_000
    assert store.charge("u", 2_000, "x").error is None  # exactly reaching the limit is allowed
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"


def test_deny_cap_on_settlement_releases_the_hold(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 50_000)
    store.set_spend_cap(SpendCap(user_id="u", limit=5_000))
    r = store.reserve_credits("u", 6_000, "x")
    d = store.deduct_credits("u", r.reservation_id, 6_000)
    assert d.error == "spend_cap_exceeded"
    bal = store.get_balance("u")
    assert (bal.balance, bal.held) == (50_000, 0)
    assert store.deduct_credits("u", r.reservation_id, 1).error == "reservation_not_found"
    assert [e["type"] for e in event_entries(store)] == ["credits.cap_reached"]


def test_warn_and_notify_caps_let_the_debit_through_and_record_an_event(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("w", 50_000)
    store.add_credits("n", 50_000)
    store.set_spend_cap(SpendCap(user_id="w", limit=500, action="warn"))
    store.set_spend_cap(SpendCap(user_id="n", limit=500, action="notify"))
    w = store.charge("w", 1_000, "x")
    n = store.charge("n", 1_000, "x")
    assert (w.error, w.cap_action, w.balance_after) == (None, "warn", 49_000)
    assert (n.error, n.cap_action, n.balance_after) == (None, "notify", 49_000)
    events = {(e["acct"], e["type"], e["action"]) for e in event_entries(store)}
    assert events == {("w", "credits.cap_warning", "warn"), ("n", "credits.cap_reached", "notify")}
    check = store.check_spend_cap("w")
    assert (check.capped, check.current_spend, check.cap_limit, check.action) == (False, 1_000, 500, "warn")


def test_check_spend_cap_reports_real_spend_even_below_the_limit(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 10_000)
    assert store.check_spend_cap("u").model_dump(exclude={"cap_type"}) == {
        "capped": False, "current_spend": 0, "cap_limit": 0, "action": None, "model": None}
    store.set_spend_cap(SpendCap(user_id="u", limit=5_000))
    store.charge("u", 1_200, "x")
    c = store.check_spend_cap("u")
    assert (c.capped, c.current_spend, c.cap_limit, c.action) == (False, 1_200, 5_000, "deny")
    assert store.check_spend_cap("u", amount=3_800).capped is False
    assert store.check_spend_cap("u", amount=3_801).capped is True
    store.charge("u", 3_800, "x")
    assert store.check_spend_cap("u").capped is True  # at the limit: one more credit is refused


def test_monthly_cap_works_with_cap_type_and_with_type_alias(store: RedisStore) -> None:
    a = SpendCap(user_id="a", cap_type="monthly", limit=10)
    b = SpendCap(user_id="b", type="monthly", limit=10)
    assert a.cap_type == b.cap_type == "monthly"
    for cap in (a, b):
        store.add_credits(cap.user_id, 100)
        store.set_spend_cap(cap)
        store.charge(cap.user_id, 10, "x")
        c = store.check_spend_cap(cap.user_id)
        assert (c.cap_type, c.current_spend, c.capped) == ("monthly", 10, True)
        assert store.charge(cap.user_id, 1, "x").error == "spend_cap_exceeded"


def test_daily_and_monthly_caps_apply_together(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 10_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=100))
    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=150))
    assert store.charge("u", 100, "x").error is None
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"  # daily
    advance(store, DAY)
    assert store.charge("u", 50, "x").error is None
    r = store.charge("u", 1, "x")
    # the day was new but the month may or may not have rolled over with it
    if r.error is not None:
        assert r.error == "spend_cap_exceeded" and store.check_spend_cap("u").cap_type == "monthly"


def test_daily_window_rolls_over_at_utc_midnight_and_monthly_keeps_counting(store: RedisStore) -> None:
    store.add_credits("u", 10_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=100))
    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=100_000))
    at_start_of_a_day(store)
    # make sure the next day is in the same month: move to the 1st..27th of a month
    while True:
        t = store.client.time()
        import datetime as dt

        d = dt.datetime.fromtimestamp(t[0] + store.core.clock_offset_ms / 1000, dt.timezone.utc)
        if d.day <= 27:
            break
        advance(store, DAY)
    store.charge("u", 100, "x")
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"
    advance(store, seconds_to_next_utc_midnight(store) + 1)
    assert store.check_spend_cap("u", amount=1).capped is False
    assert store.charge("u", 60, "x").error is None
    acct = Account.decode(store.client.hgetall(store.core.keys.user("u").account), team=False)
    now_ms = store.client.time()[0] * 1000 + store.core.clock_offset_ms
    assert acct.state.spend(acct.balance, now_ms)[1] == 160  # this month's window kept counting


def test_monthly_window_rolls_over_with_the_calendar_month(store: RedisStore) -> None:
    store.add_credits("u", 10_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=100))
    store.charge("u", 100, "x")
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"
    advance(store, 31 * DAY)  # always lands in a later calendar month
    assert store.check_spend_cap("u").current_spend == 0
    assert store.charge("u", 100, "x").error is None


def test_windows_roll_over_in_place_so_nothing_accumulates_over_periods(store: RedisStore) -> None:
    """A window is a value in the account hash, replaced when its day or month rolls over: after many
    days and months of spending (with and without a model) the account holds the same fields, and
    nothing else of the account's is left in Redis."""
    store.add_credits("u", 10_000)
    store.set_spend_cap(SpendCap(user_id="u", limit=1_000))
    gpt = CreditMetadata(model="gpt-4")
    store.charge("u", 5, "x")
    store.charge("u", 5, "x", metadata=gpt)
    k = store.core.keys.user("u")
    fields = set(store.client.hkeys(k.account))
    for _ in range(40):
        advance(store, DAY)
        store.charge("u", 5, "x")
        store.charge("u", 5, "x", metadata=gpt)
    assert set(store.client.hkeys(k.account)) == fields
    assert store.check_spend_cap("u").current_spend == 10  # today's only
    ns = store.settings.namespace
    left = {key for key in store.client.scan_iter(match=f"{{{ns}:*") if ":u:" in key}
    assert left == {k.account}


def test_per_model_cap_applies_only_to_that_models_spend(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 10_000)
    store.set_spend_cap(SpendCap(user_id="u", model="gpt-4", limit=100))
    store.set_spend_cap(SpendCap(user_id="u", limit=1_000))
    gpt4 = CreditMetadata(model="gpt-4")
    assert store.charge("u", 100, "x", metadata=gpt4).error is None
    assert store.charge("u", 1, "x", metadata=gpt4).error == "spend_cap_exceeded"
    assert store.charge("u", 500, "x", metadata=CreditMetadata(model="gpt-4o-mini")).error is None
    c = store.check_spend_cap("u", model="gpt-4")
    assert (c.capped, c.model, c.current_spend, c.cap_limit) == (True, "gpt-4", 100, 100)
    c_all = store.check_spend_cap("u", model="gpt-4o-mini")
    assert (c_all.capped, c_all.model, c_all.current_spend) == (False, None, 600)
    assert store.charge("u", 401, "x").error == "spend_cap_exceeded"  # all-models cap: 600 + 401


def test_removing_a_cap_lifts_it(store: RedisStore) -> None:
    store.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", limit=0))
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"
    store.remove_spend_cap("u", "daily")
    assert store.charge("u", 1, "x").error is None


def test_setting_a_cap_is_recorded_in_the_ledger(store: RedisStore) -> None:
    from conftest import ledger_entries

    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", model="m1", limit=7, action="warn"))
    (e,) = ledger_entries(store)
    assert e["kind"] == "config" and e["op"] == "cap_set" and '"cap_type":"monthly"' in e["meta"]


def test_a_cap_refusal_changes_no_balance_window_or_hold(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", limit=10))
    store.charge("u", 10, "x")
    k = store.core.keys.user("u")
    before = {key: v for key, v in snapshot(store).items() if key != k.events}
    assert store.charge("u", 1, "x").error == "spend_cap_exceeded"
    after = {key: v for key, v in snapshot(store).items() if key != k.events}
    assert after == before


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None, 2**53])
def test_spend_cap_limit_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        SpendCap(user_id="u", limit=bad)  # type: ignore[arg-type]
