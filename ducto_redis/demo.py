"""The `ducto-redis demo`: the seed scenario of notebook 05 (spend caps), printed step by step."""

from __future__ import annotations

from collections.abc import Callable

from .models import SpendCap
from .store import RedisStore


def run_demo(store: RedisStore, echo: Callable[[str], None] = print) -> None:
    """Walk through deny and warn caps on ``store`` (the embedded MemoryStore by default)."""
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
    entries = sum(store.client.xlen(s) for s in store.core.keys.all_ledger_streams())
    echo(f"8. ledger entries appended (one per mutation, in the same scripts): {entries}")
