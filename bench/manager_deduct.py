"""Manager benchmark: what pricing + the allowance-first script add to a plain ``charge``.

Side by side on one connection to the real Redis, rounds interleaved, median round reported:
``RedisStore.charge`` (debit.lua), ``charge_with_allowance`` with the allowances passed in
(plan_debit.lua: allowance read, then the same user_debit), and ``CreditManager.deduct`` (price one
LLM call with two tool calls, build its metadata, then plan_debit.lua). Nothing is asserted.

    python bench/manager_deduct.py --seconds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import interleaved

from ducto_redis import CreditManager, RedisStore, ToolCall, UsageMetrics

URL = "redis://127.0.0.1:6379/0"
RICH = 10**15
PRICING = {
    "models": {"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01"},
    "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    "plans": {"pro": {"id": "pro", "name": "Pro", "free_allowance": 1000}},
}
CALL = UsageMetrics(model="gpt-4o", input_tokens=1200, output_tokens=350,
                    tool_calls=[ToolCall(name="web_search"), ToolCall(name="calc")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ns = "bench-mgr-" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(URL, namespace=ns)
    try:
        manager = CreditManager(store)
        manager.publish_pricing_from_dict(PRICING)
        for u in ("a", "b", "c"):
            store.add_credits(u, RICH)
        manager.set_user_plan("c", "pro")  # allowance used up in the first ~110 calls, then paid
        ops: dict[str, Callable[[], object]] = {
            "RedisStore.charge (9 credits)": lambda: store.charge("a", 9, "usage"),
            "charge_with_allowance (allowances passed)": lambda: store.charge_with_allowance(
                "b", 9, "usage", allowances={"pro": 1000}),
            "CreditManager.deduct (price + plan_debit)": lambda: manager.deduct("c", CALL),
        }
        rates = interleaved(ops, args.rounds, args.seconds)
        base = rates["RedisStore.charge (9 credits)"]
        print("| operation | decisions/s | vs charge |\n|---|---:|---:|")
        for name, m in rates.items():
            print(f"| {name} | {m:,.0f} | {m / base:.2f}x |")
    finally:
        keys = list(store.client.scan_iter(match=f"{{{ns}:*", count=1000))
        for i in range(0, len(keys), 500):
            store.client.delete(*keys[i:i + 500])
        store.close()


if __name__ == "__main__":
    main()
