"""A worker that prices and charges LLM calls on the real Redis, the way a job queue's worker would.

    export DUCTO_REDIS_URL=redis://127.0.0.1:6379/0 DUCTO_NAMESPACE=tour
    python examples/worker.py [--calls 300]

It publishes a pricing config, funds a dozen users and one team pool (three members with caps),
then charges a stream of calls through the CreditManager: each one priced from its usage and
debited in one atomic call, with a ledger entry in Redis. Run ``ducto-redis flush --once`` after
it to copy the ledger into PostgreSQL. Every run adds its own calls (idempotency keys are unique
per run); a call retried within a run is charged once.
"""

from __future__ import annotations

import argparse
import random
import uuid

from ducto_redis import CreditManager, InsufficientCreditsError, RedisStore, UsageMetrics

MODELS = {
    "gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01",
    "gpt-4o-mini": "input_tokens * 0.00015 + output_tokens * 0.0006",
    "claude-sonnet": "input_tokens * 0.003 + output_tokens * 0.015",
}
PRICING = {
    "models": MODELS,
    "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    "min_balance": 0,
}
USERS = [f"user-{n:02d}" for n in range(1, 13)]
MEMBERS = ["ana", "ben", "chloe"]


def run(store: RedisStore, calls: int, seed: int = 7) -> dict[str, int]:
    """Fund the accounts, then charge ``calls`` priced calls; returns what happened, counted."""
    rnd = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    manager = CreditManager(store)
    manager.publish_pricing_from_dict(PRICING)
    for n, user in enumerate(USERS):
        manager.add_credits(user, 2_000 + 500 * n, tx_type="purchase", idempotency_key=f"{run_id}-fund-{user}")
    team = store.create_team(name="Research", initial_balance=20_000)
    for member, cap in zip(MEMBERS, (4_000, 2_000, 1_000), strict=True):
        store.add_credits(member, 0)
        store.add_team_member(team.team_id, member, spend_cap=cap)

    counts = {"charged": 0, "refused": 0, "team": 0, "credits": 0}
    for i in range(calls):
        model = rnd.choice(list(MODELS))
        usage = UsageMetrics(model=model, input_tokens=rnd.randint(200, 4_000), output_tokens=rnd.randint(50, 1_500))
        key = f"{run_id}-call-{i}"
        if i % 5 == 0:  # every fifth call is a team member's, paid from the pool
            team_debit = manager.deduct_team(team.team_id, rnd.choice(MEMBERS), usage, idempotency_key=key)
            counts["team" if team_debit.error is None else "refused"] += 1
            continue
        user = rnd.choices(USERS, weights=range(len(USERS), 0, -1))[0]  # a few users spend most
        try:
            r = manager.deduct(user, usage, idempotency_key=key)
        except InsufficientCreditsError:
            counts["refused"] += 1
            continue
        counts["charged"] += 1
        counts["credits"] += -r.amount
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls to charge")
    args = parser.parse_args()
    store = RedisStore.from_url()  # DUCTO_REDIS_URL and DUCTO_NAMESPACE
    with store:
        counts = run(store, args.calls)
        print(f"namespace {store.settings.namespace!r}: {counts['charged']} calls charged to users "
              f"({counts['credits']} credits), {counts['team']} to the team pool, {counts['refused']} refused; "
              f"{store.ledger_lag().backlog} ledger entries wait for `ducto-redis flush`")


if __name__ == "__main__":
    main()
