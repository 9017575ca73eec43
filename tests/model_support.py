"""What the model-based tests share: the store under test, its clock, the run's size, and a count
of the operations made (printed at the end of the run, so INVARIANTS.md can quote it)."""

from __future__ import annotations

import os
from collections import Counter

from conftest import backend as table_backend
from conftest import drop_namespace, make_store
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine

from ducto_redis import RedisStore
from ducto_redis.ledger.copy_text import entry_rows

SLOW = os.environ.get("DUCTO_SLOW") == "1"
# examples per backend; --slow makes ≥ 100 000 operations over both machines and both backends
# (fakeredis runs the scripts about half as fast as Redis, so it gets fewer)
EXAMPLES = {"memory": 300, "redis": 700} if SLOW else {"memory": 60, "redis": 60}
EXAMPLES |= {f"{kind}-async": n // 2 if SLOW else n for kind, n in EXAMPLES.items()}  # the async stores too
BACKENDS = [table_backend(kind) for kind in EXAMPLES]  # marked as the store table's (-m memory, -m async)
STEPS = 80 if SLOW else 40
# advances never land near the 600 s hold TTL, so real-time drift cannot flip an expiry
ADVANCES = [7 * 60, 3600, 86_400, 31 * 86_400]

# operations made per machine and backend in this run
OPERATIONS: Counter[str] = Counter()


def open_store(backend: str) -> RedisStore:
    """A store of the table's kind ``backend`` with a fresh namespace (conftest.make_store)."""
    return make_store(backend, None)


def close_store(store: RedisStore, backend: str) -> None:
    if not backend.startswith("memory"):
        drop_namespace(store.client, store.settings.namespace)
    if backend != "memory":
        store.close()


def store_now(store: RedisStore) -> int:
    """The scripts' clock (Redis TIME + the test clock offset), in ms."""
    sec, usec = store.client.time()
    return int(sec) * 1000 + int(usec) // 1000 + store.core.clock_offset_ms


def run_machine(machine: type[RuleBasedStateMachine], backend: str) -> None:
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES[backend], stateful_step_count=STEPS, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    machine.TestCase().runTest()


class LedgerSums:
    """Signed ledger amounts per (account kind, account), read incrementally: each call reads only
    the entries appended since the last one, from the given streams."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.last: dict[str, str] = {}
        self.sums: Counter[tuple[str, str]] = Counter()

    def read(self, streams: set[str]) -> Counter[tuple[str, str]]:
        for stream in streams:
            start = "(" + self.last[stream] if stream in self.last else "-"
            for entry_id, raw in self.store.client.xrange(stream, min=start):
                for row in entry_rows(0, entry_id, raw):
                    self.sums[(row["ak"], row["acct"])] += int(row.get("amount", 0))
                self.last[stream] = entry_id
        return self.sums


def stored_spend(store: RedisStore, account_key: str, team: bool, period: str, model: str, now_ms: int) -> int:
    """An account's current window spend (period "d" / "m"; model "" = all models) as the debit
    script reads it from the account hash (ducto_redis/layout.py)."""
    from ducto_redis.layout import Account, ModelWindow

    acct = Account.decode(store.client.hgetall(account_key), team)
    day, month = acct.state.spend(acct.balance, now_ms) if not model else acct.models.get(
        model, ModelWindow()).spend(now_ms)
    return day if period == "d" else month
