"""Plans and free allowances in the store, and pricing stored in Redis with versions.

Worked numbers throughout: plan ``pro`` gives 100 free credits a UTC month, ``free`` 10.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from conftest import REDIS_URL, advance, drop_namespace, event_entries, ledger_entries, new_namespace, snapshot

from ducto_redis import (
    ConfigError,
    InvalidInputError,
    MemoryStore,
    PlanDefinition,
    PricingConfigData,
    RedisStore,
    SpendCap,
)

DAY = 86_400

CONFIG = PricingConfigData(
    models={"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01", "_default": "input_tokens * 0.001"},
    plans={
        "pro": PlanDefinition(id="pro", name="Pro", free_allowance=100),
        "free": PlanDefinition(id="free", name="Free", free_allowance=10),
    },
)


def with_plans(store: RedisStore) -> RedisStore:
    store.set_active_pricing(CONFIG, label="plans")
    return store


# ── plans and allowances ─────────────────────────────────────────────


def test_a_user_on_a_plan_sees_its_name_and_whole_allowance(store: RedisStore) -> None:
    with_plans(store)
    assert store.set_user_plan("u", "pro").plan_id == "pro"
    plan = store.get_user_plan("u")
    assert (plan.plan_id, plan.plan_name, plan.free_allowance) == ("pro", "Pro", 100)
    a = store.check_allowance("u")
    assert (a.plan_id, a.allowance_remaining) == ("pro", 100)
    start = datetime.fromisoformat(a.period_start)
    end = datetime.fromisoformat(a.period_end)
    now = datetime.now(timezone.utc)
    assert start.day == 1 and start.hour == 0 and start <= now < end
    assert end.day == 1 and (end.month - start.month) % 12 == 1


def test_a_user_without_a_plan_has_no_allowance(store: RedisStore) -> None:
    with_plans(store)
    assert store.get_user_plan("nobody").plan_id is None
    a = store.check_allowance("nobody")
    assert (a.plan_id, a.allowance_remaining, a.period_start) == ("", 0, "")


def test_increment_usage_window_consumes_the_allowance_and_never_below_zero(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.increment_usage_window("u", "pro", 30)
    assert store.check_allowance("u").allowance_remaining == 70
    store.increment_usage_window("u", "pro", 90)
    assert store.check_allowance("u").allowance_remaining == 0


def test_the_allowance_renews_with_the_calendar_month(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.increment_usage_window("u", "pro", 100)
    assert store.check_allowance("u").allowance_remaining == 0
    advance(store, 31 * DAY)  # always a later calendar month
    assert store.check_allowance("u").allowance_remaining == 100


def test_each_plan_has_its_own_allowance_window_so_switching_back_does_not_refill(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.increment_usage_window("u", "pro", 60)
    store.set_user_plan("u", "free")
    assert store.check_allowance("u").allowance_remaining == 10
    store.set_user_plan("u", "pro")
    assert store.check_allowance("u").allowance_remaining == 40


def test_an_unknown_plan_is_refused_naming_plan_id_and_nothing_is_written(store: RedisStore) -> None:
    with_plans(store)
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as e:
        store.set_user_plan("u", "platinum")
    assert e.value.field == "plan_id"
    with pytest.raises(InvalidInputError) as e2:
        store.increment_usage_window("u", "pro", -1)
    assert e2.value.field == "amount"
    assert snapshot(store) == before


def test_a_plan_change_is_a_ledger_config_entry(store: RedisStore) -> None:
    with_plans(store)
    assert store.set_user_plan("u", "free").previous_plan_id is None
    assert store.set_user_plan("u", "pro").previous_plan_id == "free"
    entries = [e for e in ledger_entries(store) if e.get("op") == "plan_set"]
    assert [(e["kind"], e["acct"], e["plan"], e.get("prev", "")) for e in entries] == [
        ("config", "u", "free", ""), ("config", "u", "pro", "free")]
    assert '"free_allowance":100' in entries[1]["meta"] and '"plan_id":"pro"' in entries[1]["meta"]


def test_setting_a_plan_does_not_create_the_user_record(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    assert store._run(store.core.user_exists("u")) is False
    assert store.get_balance("u").balance == 0


# ── charging with the allowance first ────────────────────────────────


def test_charges_use_the_allowance_first_then_the_balance(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.add_credits("u", 50)
    r1 = store.charge_with_allowance("u", 60, "chat")  # 60 free
    assert (r1.error, r1.cost, r1.allowance_used, r1.amount, r1.balance_after, r1.allowance_remaining) == (
        None, 60, 60, 0, 50, 40)
    r2 = store.charge_with_allowance("u", 70, "chat")  # 40 free + 30 paid
    assert (r2.allowance_used, r2.amount, r2.balance_after, r2.allowance_remaining) == (40, -30, 20, 0)
    r3 = store.charge_with_allowance("u", 20, "chat")  # all paid
    assert (r3.allowance_used, r3.amount, r3.balance_after) == (0, -20, 0)
    debits = [e for e in ledger_entries(store) if e["kind"] == "debit"]
    assert [(e["amount"], e.get("free"), e.get("plan")) for e in debits] == [
        ("0", "60", "pro"), ("-30", "40", "pro"), ("-20", None, "pro")]
    assert {e["id"] for e in debits} == {r1.transaction_id, r2.transaction_id, r3.transaction_id}


def test_a_refused_charge_consumes_no_allowance(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "free")
    store.add_credits("u", 5)
    r = store.charge_with_allowance("u", 30, "chat")  # 10 free would leave 20 to pay, only 5 there
    assert (r.error, r.allowance_used, r.amount, r.balance_after) == ("insufficient_credits", 0, -20, 5)
    assert store.check_allowance("u").allowance_remaining == 10
    assert not [e for e in ledger_entries(store) if e["kind"] == "debit"]


def test_spend_caps_count_only_the_paid_part(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=15, action="deny"))
    assert store.charge_with_allowance("u", 110, "chat").amount == -10  # 100 free + 10 paid: within 15
    refused = store.charge_with_allowance("u", 6, "chat")
    assert refused.error == "spend_cap_exceeded"
    assert store.check_spend_cap("u").current_spend == 10
    assert store.get_balance("u").balance == 990


def test_min_balance_floor_applies_to_the_paid_part(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "free")
    store.add_credits("u", 20)
    assert store.charge_with_allowance("u", 26, "chat", min_balance=5).error == "insufficient_credits"
    ok = store.charge_with_allowance("u", 25, "chat", min_balance=5)  # 10 free + 15 paid leaves 5
    assert (ok.error, ok.balance_after) == (None, 5)


def test_a_charge_the_allowance_covers_whole_counts_for_the_rate_limit_and_passes_the_caps(store: RedisStore) -> None:
    """A wholly free charge is a charge of nothing: rate limited like any charge (no allowance used
    then), never refused nor warned by a cap (even one set below today's spend), recorded as a debit
    of 0."""
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.add_credits("u", 100)
    assert store.charge("u", 30, "chat").error is None
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=20, action="deny"))
    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=25, action="warn"))
    store.set_rate_limit("u", 1, 60.0)
    free = store.charge_with_allowance("u", 40, "chat")
    assert (free.error, free.amount, free.allowance_used, free.cap_action, free.balance_after) == (
        None, 0, 40, None, 70)
    limited = store.charge_with_allowance("u", 5, "chat")
    assert (limited.error, limited.allowance_used, limited.allowance_remaining) == ("rate_limited", 0, 60)
    assert store.check_allowance("u").allowance_remaining == 60
    rows = [e for e in ledger_entries(store) if e["kind"] == "debit"]
    assert [(e["amount"], e.get("free"), e.get("plan"), e.get("cap")) for e in rows][-1] == ("0", "40", "pro", None)
    assert not [e for e in event_entries(store) if e.get("type", "").startswith("credits.cap")]


def test_a_wholly_free_charge_past_the_ledger_backlog_is_refused_as_a_charge_is(redis_client: object) -> None:
    """Refused, nothing written, no allowance used, and the balance reported as debit.lua reports it
    (this path answered 0 before it became the shared user_debit)."""
    from conftest import make_store

    s = make_store("memory", None, ledger_max_backlog=2)
    with_plans(s)
    s.set_user_plan("u", "pro")
    s.add_credits("u", 100)  # the shard's second entry: the backlog is full
    before = snapshot(s)
    r = s.charge_with_allowance("u", 5, "chat")
    assert (r.error, r.allowance_used, r.balance_after) == ("ledger_backlog_full", 0, 100)
    assert s.charge("u", 5, "chat").balance_after == 100
    assert snapshot(s) == before and s.check_allowance("u").allowance_remaining == 100


def test_a_replayed_charge_returns_the_first_result_and_consumes_nothing_more(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.add_credits("u", 100)
    first = store.charge_with_allowance("u", 120, "chat", idempotency_key="req-1")
    again = store.charge_with_allowance("u", 120, "chat", idempotency_key="req-1")
    assert again.idempotent and not first.idempotent
    assert (again.transaction_id, again.allowance_used, again.amount) == (first.transaction_id, 100, -20)
    assert store.get_balance("u").balance == 80
    assert store.check_allowance("u").allowance_remaining == 0


def test_explicit_allowances_are_used_instead_of_the_stored_plans(store: RedisStore) -> None:
    store.add_credits("u", 100)
    store.set_user_plan("u", "team")  # no pricing published: any plan id is accepted (as ducto)
    r = store.charge_with_allowance("u", 30, "chat", allowances={"team": 25})
    assert (r.allowance_used, r.amount, r.plan_id) == (25, -5, "team")
    assert store.charge_with_allowance("u", 30, "chat").allowance_used == 0  # no stored plans: none free


def test_bad_charge_input_names_the_field_and_writes_nothing(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    before = snapshot(store)
    for kwargs, field in (({"amount": 1.5}, "amount"), ({"allowances": {"pro": -1}}, "allowances"),
                          ({"min_balance": -1}, "min_balance"), ({"user_id": ""}, "user_id"),
                          ({"allowances": [("pro", 5)]}, "allowances"), ({"operation_type": 7}, "operation_type")):
        args = {"user_id": "u", "amount": 5, "operation_type": "chat", **kwargs}
        with pytest.raises(InvalidInputError) as e:
            store.charge_with_allowance(**args)  # type: ignore[arg-type]
        assert e.value.field == field
    with pytest.raises(InvalidInputError) as e:
        store.charge_with_allowance("u", 0, "chat")
    assert e.value.field == "amount"
    assert snapshot(store) == before


def test_the_allowance_is_consumed_exactly_once_under_8_racing_threads(redis_client: object) -> None:
    ns = new_namespace()
    store = RedisStore.from_url(REDIS_URL, namespace=ns)
    try:
        with_plans(store)
        store.set_user_plan("u", "pro")
        store.add_credits("u", 1_000)
        results: list[list[object]] = [[] for _ in range(8)]

        def work(i: int) -> None:
            s = RedisStore.from_url(REDIS_URL, namespace=ns)
            for j in range(15):
                results[i].append(s.charge_with_allowance("u", 3, "race", idempotency_key=f"{i}-{j}"))
            s.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flat = [r for rs in results for r in rs]
        assert all(r.error is None for r in flat)  # type: ignore[attr-defined]
        free = sum(r.allowance_used for r in flat)  # type: ignore[attr-defined]
        paid = sum(-r.amount for r in flat)  # type: ignore[attr-defined]
        assert (free, paid) == (100, 8 * 15 * 3 - 100)
        assert store.check_allowance("u").allowance_remaining == 0
        assert store.get_balance("u").balance == 1_000 - paid
        # exactly one charge straddled the end of the allowance (100 = 33 * 3 + 1)
        assert sorted(r.allowance_used for r in flat if 0 < r.allowance_used < 3) == [1]  # type: ignore[attr-defined]
    finally:
        drop_namespace(store.client, ns)
        store.close()


# ── pricing stored in Redis, versioned ───────────────────────────────


def test_pricing_is_versioned_and_every_version_stays_readable(store: RedisStore) -> None:
    assert store.get_active_pricing() is None
    id1 = store.set_active_pricing(CONFIG, label="launch")
    cheaper = CONFIG.model_copy(update={"min_balance": 0})
    id2 = store.set_active_pricing(cheaper)
    active = store.get_active_pricing()
    assert active is not None and (active.id, active.version, active.config.min_balance) == (id2, 2, 0)
    v1 = store.get_pricing_config(1)
    assert v1 is not None and (v1.id, v1.label, v1.config) == (id1, "launch", CONFIG)
    assert store.get_pricing_config(3) is None
    assert [(h.id, h.version, h.active) for h in store.get_pricing_history()] == [(id1, 1, False), (id2, 2, True)]


def test_publishing_the_active_config_again_changes_nothing(store: RedisStore) -> None:
    id1 = store.set_active_pricing(CONFIG, label="x")
    assert store.set_active_pricing(CONFIG, label="x") == id1
    assert len(store.get_pricing_history()) == 1


def test_a_pricing_config_with_a_bad_formula_is_refused_and_nothing_written(store: RedisStore) -> None:
    bad = PricingConfigData(models={"m": "input_tokens ** 99"})
    before = snapshot(store)
    with pytest.raises(ConfigError) as e:
        store.set_active_pricing(bad)
    assert isinstance(e.value, InvalidInputError) and e.value.field == "config"
    assert snapshot(store) == before


def test_pricing_round_trips_every_section() -> None:
    store = MemoryStore()
    full = PricingConfigData(
        models={"gpt-4o": "ceil(input_tokens / 1000) * 3"}, tools={"web_search": "tool_calls * 2"},
        search={"costs": "search_queries * 0.5"}, cache={"discount": "0 - cache_read_tokens * 0.001"},
        fixed={"report": 40}, min_balance=7,
        plans={"pro": PlanDefinition(id="pro", name="Pro", free_allowance=5, rate_overrides={"gpt-4o": "1"},
                                     features={"sso": True})},
    )
    store.set_active_pricing(full)
    got = store.get_active_pricing()
    assert got is not None and got.config == full


def test_a_fully_covered_charge_still_counts_for_the_rate_limit(store: RedisStore) -> None:
    with_plans(store)
    store.set_user_plan("u", "pro")
    store.set_rate_limit("u", 1, period_seconds=60, burst=1)
    assert store.charge_with_allowance("u", 5, "chat").error is None
    limited = store.charge_with_allowance("u", 5, "chat")
    assert (limited.error, limited.allowance_used) == ("rate_limited", 0)
    assert limited.retry_after_ms > 0
    assert store.check_allowance("u").allowance_remaining == 95
