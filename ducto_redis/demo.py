"""The `ducto-redis demo`: the seed scenarios of notebooks 05 (spend caps) and 06 (team pools), then
one LLM call priced and charged through the CreditManager, printed step by step; on the embedded
store, then its ledger: analytics from the SQLite file, and a restart that finds every balance."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .models import SpendCap
from .store import RedisStore


def run_demo(store: RedisStore, echo: Callable[[str], None] = print,
             reopen: Callable[[], RedisStore] | None = None) -> None:
    """Walk through caps, team pools and a priced charge on ``store`` (the embedded MemoryStore by
    default). With ``reopen`` (a new store on the same ledger file), show the ledger's analytics
    and that a restarted store has the same balances, holds, caps and pool."""
    echo(f"store: {type(store).__name__} (namespace {store.settings.namespace!r})")
    echo(f"setup: {'scripts loaded' if store.setup().success else 'FAILED'}")

    user = "demo-user"
    store.add_credits(user, 50_000, type="seed")
    echo(f"1. {user} seeded: balance {store.get_balance(user).balance}")
    store.set_spend_cap(SpendCap(user_id=user, cap_type="daily", limit=5_000, action="deny"))
    echo("2. daily deny cap of 5000 set")

    res = store.reserve_credits(user, 3_000, operation_type="inference")
    echo(f"3. reserved 3000 (hold {res.reservation_id[:8]}…): available {store.get_balance(user).available}")
    ded = store.deduct_credits(user, res.reservation_id, 3_000)
    check = store.check_spend_cap(user)
    echo(f"4. settled 3000: balance {ded.balance_after}; cap: spent {check.current_spend} of "
         f"{check.cap_limit}, capped={check.capped}")

    res2 = store.reserve_credits(user, 3_000, operation_type="inference")
    ded2 = store.deduct_credits(user, res2.reservation_id, 3_000)
    bal = store.get_balance(user)
    echo(f"5. second 3000 refused: error={ded2.error}; balance {bal.balance}, held {bal.held} "
         "(the reservation was released)")

    user2 = "demo-user-warn"
    store.add_credits(user2, 50_000, type="seed")
    store.set_spend_cap(SpendCap(user_id=user2, cap_type="daily", limit=500, action="warn"))
    res3 = store.reserve_credits(user2, 1_000, operation_type="inference")
    ded3 = store.deduct_credits(user2, res3.reservation_id, 1_000)
    check2 = store.check_spend_cap(user2)
    echo(f"6. warn cap of 500: 1000 went through (balance {ded3.balance_after}, cap action {ded3.cap_action}); "
         f"current_spend={check2.current_spend} cap_limit={check2.cap_limit} action={check2.action}")

    again = store.charge(user2, 10, "request", idempotency_key="req-42")
    replay = store.charge(user2, 10, "request", idempotency_key="req-42")
    echo(f"7. charge with idempotency key: balance {again.balance_after}; replay idempotent={replay.idempotent}, "
         f"balance still {store.get_balance(user2).balance}")
    team_id = _teams(store, echo)
    _priced_call(store, echo)
    if reopen is None:
        entries = sum(store.client.xlen(s) for s in store.core.keys.all_ledger_streams())
        echo(f"12. ledger entries appended (one per mutation, in the same scripts): {entries}")
        return
    _restart(store, reopen, team_id, echo)


def _state(store: RedisStore, team_id: str) -> str:
    bal, pool, cap = store.get_balance("demo-user"), store.get_team_balance(team_id), store.check_spend_cap("demo-user")
    return (f"demo-user balance {bal.balance} held {bal.held}, daily cap {cap.current_spend}/{cap.cap_limit}; "
            f"pool {pool.balance} ({pool.member_count} members); dev {store.get_balance('dev').balance}")


def _restart(store: RedisStore, reopen: Callable[[], RedisStore], team_id: str, echo: Callable[[str], None]) -> None:
    """The embedded ledger: analytics answered from SQLite, then a new store on the same file."""
    now = datetime.now(timezone.utc)
    stats = store.aggregate_stats(now - timedelta(days=1), now + timedelta(days=1))
    echo(f"12. analytics from the SQLite ledger: {stats.total_credits_consumed} credits consumed by "
         f"{stats.active_users} users today, top user {stats.top_user}")
    store.reserve_credits("demo-user", 1_000, operation_type="agent-run")
    before = _state(store, team_id)
    echo(f"13. demo-user holds 1000 for a long job; before the restart: {before}")
    after = _state(reopen(), team_id)
    echo(f"14. a new MemoryStore on the same ledger file (a restart) rebuilt its state: {after} "
         f"({'the same' if after == before else 'DIFFERENT'})")


def _teams(store: RedisStore, echo: Callable[[str], None]) -> str:
    """Notebook 06: a team pool, members, an overdraw refused, a member's cap enforced."""
    team = store.create_team(name="Engineering", initial_balance=100_000)
    for uid in ("ana", "ben", "cai"):
        store.add_team_member(team.team_id, uid, spend_cap=3_000 if uid == "cai" else None)
    r = store.deduct_team(team.team_id, "ana", 5_000)
    echo(f"8. team 'Engineering' (100000, 3 members): ana spends 5000 from the pool -> {r.team_balance_after}")
    big = store.deduct_team(team.team_id, "ben", 999_999)
    echo(f"9. ben asks for 999999: error={big.error}; pool still {store.get_team_balance(team.team_id).balance}")
    ok = store.deduct_team(team.team_id, "cai", 3_000)
    over = store.deduct_team(team.team_id, "cai", 1)
    echo(f"10. cai (member cap 3000) spends 3000 (error={ok.error}), then 1 more: error={over.error}")
    return team.team_id


def _priced_call(store: RedisStore, echo: Callable[[str], None]) -> None:
    """Usage into credits: one LLM call (tokens, two tool calls) priced, rounded up, charged once."""
    from .manager import CreditManager
    from .pricing import ToolCall, UsageMetrics

    manager = CreditManager(store)
    manager.publish_pricing_from_dict({
        "models": {"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01"},
        "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    })
    store.add_credits("dev", 100, type="purchase")
    call = UsageMetrics(model="gpt-4o", input_tokens=1200, output_tokens=350,
                        tool_calls=[ToolCall(name="web_search"), ToolCall(name="calculator")])
    r = manager.deduct("dev", call, idempotency_key="call-1")
    echo(f"11. one gpt-4o call (1200 in, 350 out, 2 tools) = {manager.price(call).credits} credits; "
         f"dev's balance 100 -> {r.balance_after}")
