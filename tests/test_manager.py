"""CreditManager: usage priced (rounded up) and charged in one script — allowance, caps, balance.

Worked numbers: gpt-4o costs input_tokens * 0.0025 + output_tokens * 0.01, web_search 2 credits a
call and any other tool 0.5. One LLM call of 1 200 input and 350 output tokens with a web search and
a calculator call: model 3 + 3.5 = 6.5, tools 2 + 0.5 = 2.5, total exactly 9 credits.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from conftest import REDIS_URL, advance, drop_namespace, ledger_entries, new_namespace, snapshot

from ducto_redis import (
    ConfigError,
    CreditEvent,
    CreditEventEmitter,
    CreditManager,
    InsufficientCreditsError,
    PricingNotLoadedError,
    RedisStore,
    SpendCap,
    ToolCall,
    UsageMetrics,
)

PRICING: dict[str, Any] = {
    "models": {"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01", "_default": "input_tokens * 0.001"},
    "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    "fixed": {"report": 40},
    "min_balance": 5,
    "plans": {"pro": {"id": "pro", "name": "Pro", "free_allowance": 100}},
}
CALL = UsageMetrics(model="gpt-4o", input_tokens=1200, output_tokens=350,
                    tool_calls=[ToolCall(name="web_search"), ToolCall(name="calc")])  # 9 credits
SMALL = UsageMetrics(model="gpt-4o", input_tokens=1000, output_tokens=10)  # 2.6 -> 3 credits


class Recorder:
    def __init__(self, emitter: CreditEventEmitter) -> None:
        self.events: list[CreditEvent] = []
        for t in ("credits.added", "credits.deducted", "credits.low_balance", "credits.plan_changed",
                  "credits.cap_warning", "credits.cap_reached", "credits.refunded", "credits.expired"):
            emitter.on(t, self.events.append)

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def manager_for(store: RedisStore, **kwargs: Any) -> tuple[CreditManager, Recorder]:
    emitter = CreditEventEmitter()
    rec = Recorder(emitter)
    m = CreditManager(store, emitter=emitter, **kwargs)
    m.publish_pricing_from_dict(PRICING)
    return m, rec


def test_one_llm_call_is_priced_rounded_up_and_charged(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 100, tx_type="purchase")
    r = m.deduct("u", CALL, idempotency_key="req-1")
    assert (r.error, r.cost, r.amount, r.balance_after, r.allowance_used) == (None, 9, -9, 91, 0)
    assert m.deduct("u", SMALL).amount == -3  # 2.6 rounds up to 3
    assert m.get_balance("u").balance == 88
    entry = next(e for e in ledger_entries(store) if e.get("id") == r.transaction_id)
    meta = json.loads(entry["meta"])
    assert (entry["kind"], entry["amount"], entry["op"], entry["model"]) == ("debit", "-9", "usage", "gpt-4o")
    assert (meta["breakdown_total"], meta["credits"], meta["input_tokens"]) == (9.0, 9, 1200)
    assert rec.types() == ["credits.added", "credits.deducted", "credits.deducted"]
    assert rec.events[1].data is not None and rec.events[1].data["amount"] == -9


def test_the_free_allowance_is_spent_before_the_balance(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 50)
    m.set_user_plan("u", "pro")
    results = [m.deduct("u", CALL) for _ in range(12)]  # 12 * 9 = 108: 100 free, then 8 paid
    assert [r.allowance_used for r in results] == [9] * 11 + [1]
    assert [r.amount for r in results] == [0] * 11 + [-8]
    assert m.get_balance("u").balance == 42
    assert m.check_allowance("u").allowance_remaining == 0
    assert m.deduct("u", CALL).amount == -9  # the allowance is gone: all paid
    first = next(e for e in rec.events if e.type == "credits.deducted")
    assert first.data is not None and first.data["plan_covered"] is True


def test_a_refused_charge_raises_with_the_code_and_changes_nothing(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 13)  # 13 - 9 = 4 would break min_balance 5
    before = snapshot(store)
    with pytest.raises(InsufficientCreditsError) as e:
        m.deduct("u", CALL)
    assert e.value.code == "insufficient_credits"
    assert snapshot(store) == before
    assert "credits.deducted" not in rec.types()
    assert m.deduct("u", SMALL).balance_after == 10  # 3 credits still fit


def test_a_deny_cap_refuses_and_its_cap_reached_event_is_delivered_once(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    m.deduct("u", CALL)  # 9 of 10
    with pytest.raises(InsufficientCreditsError) as e:
        m.deduct("u", CALL)
    assert e.value.code == "spend_cap_exceeded"
    reached = [ev for ev in rec.events if ev.type == "credits.cap_reached"]
    assert len(reached) == 1 and reached[0].user_id == "u"
    assert reached[0].data is not None
    assert (reached[0].data["limit"], reached[0].data["current_spend"], reached[0].data["amount"]) == (10, 9, 9)
    assert m.poll_events() == 0  # already delivered
    assert m.get_balance("u").balance == 991


def test_a_warn_cap_lets_the_charge_through_and_warns_once(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=15, action="warn"))
    m.deduct("u", CALL)
    r = m.deduct("u", CALL)  # 18 > 15
    assert (r.error, r.cap_action) == (None, "warn")
    warnings = [ev for ev in rec.events if ev.type == "credits.cap_warning"]
    assert len(warnings) == 1 and warnings[0].data is not None and warnings[0].data["period"] == "monthly"


def test_a_replay_returns_the_first_result_and_emits_nothing_more(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 100, idempotency_key="grant-1")
    m.add_credits("u", 100, idempotency_key="grant-1")
    first = m.deduct("u", CALL, idempotency_key="req-9")
    again = m.deduct("u", CALL, idempotency_key="req-9")
    assert again.idempotent and (again.transaction_id, again.amount) == (first.transaction_id, -9)
    assert m.get_balance("u").balance == 91
    assert rec.types() == ["credits.added", "credits.deducted"]


def test_low_balance_is_emitted_once_each_time_the_balance_falls_to_the_threshold(store: RedisStore) -> None:
    m, rec = manager_for(store, low_balance_threshold=15)
    m.add_credits("u", 30)
    m.deduct("u", CALL)  # 21
    m.deduct("u", SMALL)  # 18
    m.deduct("u", SMALL)  # 15: falls to the threshold
    m.deduct("u", SMALL)  # 12: still low, no new event
    m.add_credits("u", 10)  # 22
    m.deduct("u", CALL)  # 13: a new fall
    lows = [ev for ev in rec.events if ev.type == "credits.low_balance"]
    assert [ev.data["balance"] for ev in lows if ev.data] == [15, 13]


def test_default_low_balance_threshold_is_twice_min_balance(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.add_credits("u", 19)
    m.deduct("u", CALL)  # 10 = 2 * 5
    assert [ev.data["threshold"] for ev in rec.events if ev.type == "credits.low_balance" and ev.data] == [10]


def test_deduct_fixed_charges_the_configured_price(store: RedisStore) -> None:
    m, _ = manager_for(store)
    m.add_credits("u", 100)
    r = m.deduct_fixed("u", "report")
    assert (r.amount, r.balance_after) == (-40, 60)
    assert next(e for e in ledger_entries(store) if e.get("id") == r.transaction_id)["op"] == "report"
    before = snapshot(store)
    with pytest.raises(ConfigError):
        m.deduct_fixed("u", "no-such-job")
    assert snapshot(store) == before


def test_deduct_team_prices_and_spends_from_the_pool(store: RedisStore) -> None:
    m, rec = manager_for(store)
    team = store.create_team("Eng", initial_balance=100)
    store.add_credits("alice", 0)
    store.add_team_member(team.team_id, "alice", spend_cap=15)
    r = m.deduct_team(team.team_id, "alice", CALL, idempotency_key="t-1")
    assert (r.error, r.amount, r.team_balance_after) == (None, -9, 91)
    refused = m.deduct_team(team.team_id, "alice", CALL)  # 18 > the member cap 15
    assert refused.error == "spend_cap_exceeded"
    assert store.get_team_balance(team.team_id).balance == 91
    assert [ev.data["team_id"] for ev in rec.events if ev.type == "credits.deducted" and ev.data] == [team.team_id]


def test_plan_changes_emit_plan_changed_only_when_the_plan_changes(store: RedisStore) -> None:
    m, rec = manager_for(store)
    m.set_user_plan("u", "pro")
    m.set_user_plan("u", "pro")
    assert [(e.data or {}).get("old_plan") for e in rec.events if e.type == "credits.plan_changed"] == [None]
    assert m.get_user_plan("u").free_allowance == 100


def test_pricing_must_be_loaded_and_loads_from_the_store(store: RedisStore) -> None:
    bare = CreditManager(store)
    with pytest.raises(PricingNotLoadedError):
        bare.deduct("u", CALL)
    with pytest.raises(PricingNotLoadedError):
        bare.load_pricing_from_store()
    manager_for(store)  # publishes
    bare.load_pricing_from_store()
    assert bare.engine is not None and bare.price(CALL).total == 9
    store.add_credits("u", 20)
    assert bare.deduct("u", CALL).balance_after == 11


def test_publish_pricing_makes_a_new_version_the_engine_uses(store: RedisStore) -> None:
    from ducto_redis import PricingConfigData

    m, _ = manager_for(store)
    doubled = PricingConfigData.model_validate({**PRICING, "models": {"gpt-4o": "input_tokens * 0.005"}})
    m.publish_pricing(doubled, label="v2")
    active = store.get_active_pricing()
    assert active is not None and (active.version, active.label) == (2, "v2")
    assert m.price(SMALL).total == 5


def test_zero_cost_usage_charges_nothing(store: RedisStore) -> None:
    m, _ = manager_for(store)
    m.add_credits("u", 10)
    r = m.deduct("u", UsageMetrics(model="gpt-4o"))
    assert (r.transaction_id, r.amount, r.balance_after) == ("", 0, 10)


def test_reserve_for_a_long_job_uses_the_engines_min_balance(store: RedisStore) -> None:
    m, _ = manager_for(store)
    m.add_credits("u", 20)
    assert m.reserve_credits("u", 16, "agent").error == "insufficient_credits"  # 20 - 16 < 5
    hold = m.reserve_credits("u", 15, "agent")
    assert hold.error is None
    assert store.deduct_credits("u", hold.reservation_id, 12).balance_after == 8


def test_refunds_pass_through_and_emit_refunded(store: RedisStore) -> None:
    if not hasattr(store, "refund_credits"):
        pytest.skip("store.refund_credits is built in another branch (issue #5 part b)")
    m, rec = manager_for(store)
    m.add_credits("u", 100)
    d = m.deduct("u", CALL)
    r = m.refund_credits(d.transaction_id, amount=4, reason="bad answer")
    assert (r.error, r.amount, r.new_balance) == (None, 4, 95)
    again = m.refund_credits(d.transaction_id)
    assert again.error == "already_refunded"
    assert m.refund_credits("no-such-tx").error == "transaction_not_found"
    assert [(e.data or {}).get("amount") for e in rec.events if e.type == "credits.refunded"] == [4]


def test_sweeping_expired_credits_emits_expired(store: RedisStore) -> None:
    if not hasattr(store, "sweep_expired_credits"):
        pytest.skip("store.sweep_expired_credits is built in another branch (issue #5 part b)")
    from datetime import datetime, timedelta, timezone

    m, rec = manager_for(store)
    m.add_credits("u", 30, expires_at=datetime.now(timezone.utc) + timedelta(seconds=60))
    advance(store, 120)
    assert m.sweep_expired_credits(dry_run=True).expired_amount == 30
    assert "credits.expired" not in rec.types()
    assert m.sweep_expired_credits().expired_amount == 30
    assert [(e.user_id, (e.data or {}).get("expired_amount")) for e in rec.events
            if e.type == "credits.expired"] == [("system", 30)]


def test_the_allowance_is_consumed_exactly_once_by_8_racing_managers(redis_client: Any) -> None:
    ns = new_namespace()
    setup = RedisStore.from_url(REDIS_URL, namespace=ns)
    try:
        m, _ = manager_for(setup)
        m.set_user_plan("u", "pro")
        m.add_credits("u", 1_000)
        results: list[Any] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            s = RedisStore.from_url(REDIS_URL, namespace=ns)
            mgr = CreditManager(s)
            mgr.load_pricing_from_store()
            for j in range(5):
                r = mgr.deduct("u", CALL, idempotency_key=f"{i}-{j}")
                with lock:
                    results.append(r)
            s.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 40
        assert sum(r.allowance_used for r in results) == 100  # 40 * 9 = 360: 100 free, 260 paid
        assert sum(-r.amount for r in results) == 260
        assert m.get_balance("u").balance == 740
        assert m.check_allowance("u").allowance_remaining == 0
    finally:
        drop_namespace(setup.client, ns)
        setup.close()
