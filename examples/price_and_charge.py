"""One LLM call (model, tokens, two tool calls) turned into credits and charged.

    python examples/price_and_charge.py            # embedded store, no server
    python examples/price_and_charge.py --redis    # the Redis at $DUCTO_REDIS_URL (namespace "price-demo")

Prints the exact breakdown, the whole credits charged (rounded up), what the plan's free allowance
covered, the balance after and the events the manager emitted.
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

from ducto_redis import (
    CreditEvent,
    CreditEventEmitter,
    CreditManager,
    MemoryStore,
    RedisStore,
    SpendCap,
    ToolCall,
    UsageMetrics,
)

PRICING: dict[str, Any] = {
    "models": {
        "gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01",  # credits per token
        "_default": "input_tokens * 0.001 + output_tokens * 0.004",
    },
    "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    "min_balance": 5,
    "plans": {"pro": {"id": "pro", "name": "Pro", "free_allowance": 20}},  # 20 free credits a month
}


def run(store: RedisStore, user: str) -> list[CreditEvent]:
    """Publish pricing, fund a Pro user, charge the same call three times; return the events."""
    events: list[CreditEvent] = []
    emitter = CreditEventEmitter()
    for t in ("credits.added", "credits.deducted", "credits.plan_changed", "credits.cap_warning",
              "credits.low_balance"):
        emitter.on(t, events.append)

    manager = CreditManager(store, emitter=emitter)
    manager.publish_pricing_from_dict(PRICING)           # validated, stored in Redis as a version
    manager.add_credits(user, 100, tx_type="purchase", idempotency_key=f"{user}-purchase")
    manager.set_user_plan(user, "pro")
    store.set_spend_cap(SpendCap(user_id=user, cap_type="daily", limit=5, action="warn"))

    call = UsageMetrics(
        model="gpt-4o", input_tokens=1200, output_tokens=350,
        tool_calls=[ToolCall(name="web_search"), ToolCall(name="calculator")],
    )
    cost = manager.price(call)
    print(f"model {cost.model_credits:g} + tools {cost.tool_credits:g} = {cost.total:g} credits exactly "
          f"-> {cost.credits} charged (whole credits, rounded up)")

    for n in range(1, 4):
        r = manager.deduct(user, call, idempotency_key=f"{user}-req-{n}")
        print(f"call {n}: cost {r.cost} = {r.allowance_used} from the free allowance + {-r.amount} paid; "
              f"balance {r.balance_after}, allowance left {r.allowance_remaining}"
              + (f", cap {r.cap_action}" if r.cap_action else ""))
    again = manager.deduct(user, call, idempotency_key=f"{user}-req-3")
    print(f"retry of call 3: idempotent={again.idempotent}, balance still {again.balance_after}")
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", action="store_true", help="use the Redis at $DUCTO_REDIS_URL")
    args = parser.parse_args()
    store: RedisStore = (
        RedisStore.from_url(os.environ.get("DUCTO_REDIS_URL"), namespace="price-demo") if args.redis
        else MemoryStore()
    )
    events = run(store, f"user-{uuid.uuid4().hex[:8]}")
    print("events:", ", ".join(e.type for e in events))


if __name__ == "__main__":
    main()
