"""Analytics follow one rule (users' spend; team pools per member) and give the same figures on the
embedded SQLite ledger and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ducto_redis import CreditManager, CreditMetadata, MemoryStore, RedisStore, ToolCall, UsageMetrics

DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """A MemoryStore (embedded SQLite ledger) or a RedisStore with its PostgreSQL ledger."""
    if request.param == "sqlite":
        yield MemoryStore()
    else:
        yield request.getfixturevalue("ledger_store")


def workload(s: RedisStore) -> str:
    """Users' debits with and without a model, a settlement, a refund, a call the free allowance
    covers wholly, and team pool debits by two members (one also a user)."""
    m = CreditManager(s)
    m.publish_pricing_from_dict({"models": {"_default": "input_tokens * 1"},
                                 "plans": {"free": {"id": "free", "name": "Free", "free_allowance": 100}}})
    for u in ("a", "b", "c"):
        s.add_credits(u, 10_000, type="purchase")
    s.charge("a", 300, "chat", metadata=CreditMetadata(model="gpt-4"))
    s.charge("a", 50, "chat", metadata=CreditMetadata(model="mini"))
    d = s.charge("b", 120, "chat", metadata=CreditMetadata(model="gpt-4"))
    s.refund_credits(d.transaction_id, 20)  # a refund is not negative spend: spend stays gross
    h = s.reserve_credits("c", 500, "job")
    s.deduct_credits("c", h.reservation_id, 410, metadata=CreditMetadata(model="mini"))
    m.set_user_plan("b", "free")
    m.deduct("b", UsageMetrics(input_tokens=40, tool_calls=[ToolCall(name="t")]))  # wholly free: no spend
    m.deduct("b", UsageMetrics(model="gpt-4", input_tokens=70))  # 60 free + 10 paid
    team = s.create_team("T", initial_balance=5_000).team_id
    for member in ("a", "x"):
        s.add_team_member(team, member)
    s.deduct_team(team, "a", 700, metadata=CreditMetadata(model="gpt-4"))
    s.deduct_team(team, "x", 33)
    s.deduct_team(team, "x", 7)
    return team


def figures(s: RedisStore, team: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    start, end = now - DAY, now + DAY
    return {
        "by_user": [(r.user_id, r.total_spend, r.transaction_count) for r in s.spend_by_user(start, end)],
        "by_model": [(r.model, r.total_spend, r.transaction_count) for r in s.spend_by_model(start, end)],
        "top": [(r.user_id, r.total_spend) for r in s.top_users(2, start, end)],
        "daily": [(r.total_spend, r.transaction_count) for r in s.daily_spend(start, end)],
        "stats": s.aggregate_stats(start, end).model_dump(),
        "by_member": [(r.user_id, r.total_spend, r.transaction_count) for r in s.spend_by_member(team, start, end)],
        "empty": s.spend_by_user(end, end + DAY),
    }


EXPECTED = {
    "by_user": [("c", 410, 1), ("a", 350, 2), ("b", 130, 2)],
    "by_model": [("mini", 460, 2), ("gpt-4", 430, 3)],
    "top": [("c", 410), ("a", 350)],
    "daily": [(890, 5)],
    "stats": {"total_credits_consumed": 890, "active_users": 3, "avg_daily_spend": 890, "top_model": "mini",
              "top_user": "c"},
    "by_member": [("a", 700, 1), ("x", 40, 2)],
    "empty": [],
}


def test_every_analytic_counts_users_spend_by_one_rule_on_both_ledgers(ledger: RedisStore) -> None:
    team = workload(ledger)
    got = figures(ledger, team)
    assert got == EXPECTED
    # one rule, so the five agree: each is a view of the same 890 credits of users' spend
    total = got["stats"]["total_credits_consumed"]
    assert total == sum(u[1] for u in got["by_user"]) == sum(m[1] for m in got["by_model"])
    assert total == sum(d[0] for d in got["daily"])
    # the team's 740 are the team's spend, per member: not a's, not x's
    assert sum(m[1] for m in got["by_member"]) == 740


def test_the_embedded_ledger_and_postgresql_give_the_same_figures_for_one_workload(ledger_store: RedisStore) -> None:
    memory = MemoryStore()
    assert figures(memory, workload(memory)) == figures(ledger_store, workload(ledger_store))


def test_analytics_on_redis_count_decisions_made_just_before_with_no_flusher_running(ledger_store: RedisStore) -> None:
    s = ledger_store
    s.add_credits("u", 100)
    s.charge("u", 9, "chat")
    now = datetime.now(timezone.utc)
    assert [(r.user_id, r.total_spend) for r in s.spend_by_user(now - DAY, now + DAY)] == [("u", 9)]
    s.charge("u", 1, "chat")
    assert s.aggregate_stats(now - DAY, now + DAY).total_credits_consumed == 10
