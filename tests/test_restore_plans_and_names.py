"""Restore rebuilds plans and this month's allowance use, and member ids that look like window fields
(real Redis, real PostgreSQL)."""

from __future__ import annotations

from conftest import DATABASE_URL, drop_namespace, restorable_state

from ducto_redis import PlanDefinition, PricingConfigData, RedisStore
from ducto_redis.ledger.flusher import LedgerFlusher

state = restorable_state


def test_restore_rebuilds_plans_allowance_use_and_odd_member_ids(ledger_store: RedisStore) -> None:
    s = ledger_store
    s.set_active_pricing(PricingConfigData(models={"m": "input_tokens * 1"}, plans={
        "pro": PlanDefinition(id="pro", name="Pro", free_allowance=100),
        "max": PlanDefinition(id="max", name="Max", free_allowance=500)}))
    for u in ("a", "b", "_b"):
        s.add_credits(u, 1_000, type="purchase")
    s.set_user_plan("a", "pro")
    s.charge_with_allowance("a", 30, "chat")         # 30 free
    s.charge_with_allowance("a", 90, "chat")         # 70 free + 20 paid
    s.set_user_plan("b", "pro")
    s.increment_usage_window("b", "pro", 40)
    s.set_user_plan("b", "max")                      # each plan keeps its own window
    s.charge_with_allowance("b", 10, "chat")
    tid = s.create_team("T", initial_balance=1_000).team_id
    for m in ("b", "_b"):
        s.add_team_member(tid, m, spend_cap=300, cap_period="daily")
    s.deduct_team(tid, "_b", 120)
    s.deduct_team(tid, "b", 200)
    LedgerFlusher(s, DATABASE_URL).drain()
    before = state(s)
    assert s.reconcile_with_ledger() == {}
    drop_namespace(s.client, s.settings.namespace)   # Redis lost everything, pricing included
    s.restore_from_ledger()
    after = state(s)
    assert after == before
    assert (s.get_user_plan("a").plan_id, s.check_allowance("a").allowance_remaining) == ("pro", 0)
    assert (s.get_user_plan("b").plan_id, s.check_allowance("b").allowance_remaining) == ("max", 490)
    spent = {r.user_id: r.spent_today for r in s.team_spend_report(tid)}
    assert spent == {"b": 200, "_b": 120}
    assert s.deduct_team(tid, "b", 101).error == "spend_cap_exceeded"   # b's cap window survived restore


def test_restore_publishes_every_pricing_version_again_and_reconcile_checks_them(ledger_store: RedisStore) -> None:
    s = ledger_store
    first = PricingConfigData(models={"m": "input_tokens * 1"})
    second = PricingConfigData(models={"m": "input_tokens * 2", "_default": "output_tokens * 0.5"},
                               plans={"pro": PlanDefinition(id="pro", name="Pro \u00e9/\"x\"", free_allowance=9)})
    s.set_active_pricing(first, label="launch")
    active_id = s.set_active_pricing(second, label="v2 / price\tcut")
    s.add_credits("u", 10)
    LedgerFlusher(s, DATABASE_URL).drain()
    history = s.get_pricing_history()
    before = s.get_active_pricing()
    drop_namespace(s.client, s.settings.namespace)
    assert s.get_active_pricing() is None
    assert s.restore_from_ledger() == 1  # accounts: "u"; the pricing versions come back beside them
    assert s.get_active_pricing() == before and before is not None and before.id == active_id
    assert s.get_pricing_history() == history and len(history) == 2
    assert s.get_pricing_config(1).config == first  # type: ignore[union-attr]
    assert s.set_active_pricing(second, label="v2 / price\tcut") == active_id  # still a no-op
    assert s.get_active_pricing().version == 2  # type: ignore[union-attr]
    assert s.reconcile_with_ledger() == {}
    s.client.hdel(s.core.keys.pricing_versions(), "1")
    assert list(s.reconcile_with_ledger()) == ["p:pricing"]
