"""Model-based test: random operations on a real store and on the reference model must agree.

After every step: balance, held, lifetime, each cap's current spend, each plan's allowance left,
and the conservation invariant (credits in − debits out = balance, refunds counted in; held ≤
balance) match, and the ledger's signed amounts sum to each balance. Refunds (once per debit) and
plans' monthly free allowances (consumed before paid credits) are in the model too. Time is controlled with the
store's test clock, so hold expiry and day/month window rollovers happen within the run.
Runs on MemoryStore and on the real Redis. ``--slow`` runs many more examples.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule
from model_support import (
    ADVANCES,
    BACKENDS,
    OPERATIONS,
    LedgerSums,
    close_store,
    open_store,
    run_machine,
    store_now,
    stored_spend,
)
from reference_model import Model

from ducto_redis import CreditMetadata, PlanDefinition, PricingConfigData, RedisStore, SpendCap
from ducto_redis.batch import ChargeRequest

USERS = ["alice", "b{o}b:1"]
MODELS = ["", "gpt-4"]
ALLOWANCES = {"pro": 30, "max": 80}


def make_machine(backend: str) -> type[RuleBasedStateMachine]:
    class StoreVersusModel(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.store: RedisStore = open_store(backend)
            self.model = Model()
            self.ledger = LedgerSums(self.store)
            self.ops = 0
            self.debits: list[tuple[str, str]] = []  # (user, transaction id) of accepted debits
            self.store.set_active_pricing(PricingConfigData(models={"m": "input_tokens"}, plans={
                p: PlanDefinition(id=p, name=p.title(), free_allowance=n) for p, n in ALLOWANCES.items()}))

        def accepted(self, user: str, tx: str, amount: int) -> None:
            if amount > 0:
                self.model.record_debit(user, tx, amount)
                self.debits.append((user, tx))

        def now(self) -> int:
            return store_now(self.store)

        def teardown(self) -> None:
            OPERATIONS[f"users/{backend}"] += self.ops
            close_store(self.store, backend)

        @initialize(start=st.lists(st.integers(0, 120), min_size=len(USERS), max_size=len(USERS)))
        def fund(self, start: list[int]) -> None:
            for user, amount in zip(USERS, start, strict=True):
                self.store.add_credits(user, amount, type="purchase")
                self.model.add_credits(user, amount, "purchase", None)

        @rule(user=st.sampled_from(USERS), amount=st.integers(0, 60),
              tx_type=st.sampled_from(["purchase", "adjustment"]), key=st.sampled_from([None, "k1", "k2", "k3"]))
        def add_credits(self, user: str, amount: int, tx_type: str, key: str | None) -> None:
            self.ops += 1
            r = self.store.add_credits(user, amount, type=tx_type, idempotency_key=key)
            expected = self.model.add_credits(user, amount, tx_type, key)
            assert r.new_balance == expected[1]

        @rule(target=holds, user=st.sampled_from(USERS), amount=st.integers(1, 30),
              min_balance=st.sampled_from([0, 5, 10]))
        def reserve(self, user: str, amount: int, min_balance: int) -> tuple[str, str, int]:
            self.ops += 1
            now = self.now()
            ok = self.model.reserve(user, amount, min_balance, now, 600_000)
            r = self.store.reserve_credits(user, amount, "op", min_balance=min_balance)
            assert (r.error is None) == ok, (r, ok)
            if ok:
                self.model.record_hold(user, r.reservation_id, amount, r.expires_at_ms)
                return (user, r.reservation_id, amount)
            return (user, "never-reserved", amount)

        @rule(h=consumes(holds), delta=st.sampled_from([-10, -5, -1, 0, 1, 5, 10]), model=st.sampled_from(MODELS),
              key=st.sampled_from([None, "d1", "d2"]))
        def settle(self, h: tuple[str, str, int], delta: int, model: str, key: str | None) -> None:
            self.ops += 1
            user, rid, amount = h
            actual = max(0, amount + delta)
            meta = CreditMetadata(model=model) if model else None
            expected = self.model.debit(user, actual, rid, model, key, self.now())
            d = self.store.deduct_credits(user, rid, actual, idempotency_key=key, metadata=meta)
            assert (d.error or "ok", d.balance_after, d.cap_action) == expected
            if d.error is None:
                self.accepted(user, d.transaction_id, -d.amount)

        @rule(h=consumes(holds))
        def release(self, h: tuple[str, str, int]) -> None:
            self.ops += 1
            user, rid, _ = h
            expected = self.model.release(user, rid, self.now())
            assert (self.store.release_reservation(user, rid).error or "ok") == expected

        @rule(h=holds)
        def settle_again_or_replay(self, h: tuple[str, str, int]) -> None:
            """A hold that may already be resolved: resolving it again must not move money twice."""
            self.ops += 1
            user, rid, amount = h
            expected = self.model.debit(user, amount, rid, "", None, self.now())
            d = self.store.deduct_credits(user, rid, amount)
            assert (d.error or "ok", d.balance_after, d.cap_action) == expected
            if d.error is None:
                self.accepted(user, d.transaction_id, -d.amount)

        @rule(user=st.sampled_from(USERS), amount=st.sampled_from([1, 2, 5, 10, 20]), model=st.sampled_from(MODELS),
              key=st.sampled_from([None, "c1", "c2", "c3"]))
        def charge(self, user: str, amount: int, model: str, key: str | None) -> None:
            self.ops += 1
            meta = CreditMetadata(model=model) if model else None
            expected = self.model.debit(user, amount, None, model, key, self.now())
            d = self.store.charge(user, amount, "req", idempotency_key=key, metadata=meta)
            assert (d.error or "ok", d.balance_after, d.cap_action) == expected
            if d.error is None:
                self.accepted(user, d.transaction_id, -d.amount)

        @rule(items=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from([1, 2, 5, 10, 20]),
                                       st.sampled_from(MODELS), st.sampled_from([None, "c1", "c2", "c3"])),
                             min_size=1, max_size=4))
        def charge_many(self, items: list[tuple[str, int, str, str | None]]) -> None:
            """A batch decides each charge as if made one by one at one instant (one script call per
            shard: debit_many.lua for two or more of a shard, debit.lua for one alone)."""
            self.ops += 1
            now = self.now()
            expected = [self.model.debit(user, amount, None, model, key, now) for user, amount, model, key in items]
            results = self.store.charge_many([
                ChargeRequest(user, amount, "req", idempotency_key=key,
                              metadata=CreditMetadata(model=model) if model else None)
                for user, amount, model, key in items])
            assert [(d.error or "ok", d.balance_after, d.cap_action) for d in results] == expected
            for (user, *_), d in zip(items, results, strict=True):
                if d.error is None:
                    self.accepted(user, d.transaction_id, -d.amount)

        @rule(user=st.sampled_from(USERS), plan=st.sampled_from(sorted(ALLOWANCES)))
        def set_plan(self, user: str, plan: str) -> None:
            self.ops += 1
            self.store.set_user_plan(user, plan)
            self.model.set_plan(user, plan)

        @rule(user=st.sampled_from(USERS), amount=st.sampled_from([1, 5, 12, 25]),
              key=st.sampled_from([None, "a1", "a2"]))
        def charge_with_allowance(self, user: str, amount: int, key: str | None) -> None:
            self.ops += 1
            expected = self.model.charge_with_allowance(user, amount, key, ALLOWANCES, self.now())
            r = self.store.charge_with_allowance(user, amount, "req", idempotency_key=key)
            assert (r.error or "ok", r.balance_after, r.cap_action, r.allowance_used) == expected
            if r.error is None:
                self.accepted(user, r.transaction_id, -r.amount)

        @precondition(lambda self: self.debits)
        @rule(data=st.data(), amount=st.sampled_from([None, 1, 3, 10, 50]))
        def refund(self, data: st.DataObject, amount: int | None) -> None:
            self.ops += 1
            user, tx = data.draw(st.sampled_from(self.debits))
            status, balance = self.model.refund(user, tx, amount)
            r = self.store.refund_credits(tx, amount)
            assert (r.error or "ok") == status, (r, status)
            if status == "ok":
                assert (r.new_balance, r.user_id) == (balance, user)

        @rule(tx=st.sampled_from(["", "nope", "00000000-0000-4000-8000-000000000000"]))
        def refund_unknown(self, tx: str) -> None:
            self.ops += 1
            try:
                r = self.store.refund_credits(tx)
            except ValueError:
                return  # an empty id is refused naming the field, before anything is written
            assert r.error == "transaction_not_found"

        @rule(user=st.sampled_from(USERS), period=st.sampled_from(["d", "m"]), model=st.sampled_from(MODELS),
              limit=st.sampled_from([0, 5, 10, 20, 30, 50]), action=st.sampled_from(["deny", "warn", "notify"]))
        def set_cap(self, user: str, period: str, model: str, limit: int, action: str) -> None:
            self.ops += 1
            self.store.set_spend_cap(SpendCap(user_id=user, cap_type="daily" if period == "d" else "monthly",
                                              model=model or None, limit=limit, action=action))
            self.model.set_cap(user, period, model, limit, action)

        @rule(seconds=st.sampled_from(ADVANCES))
        def advance_clock(self, seconds: int) -> None:
            self.ops += 1
            self.store.core.clock_offset_ms += seconds * 1000

        @invariant()
        def state_agrees(self) -> None:
            now = self.now()
            for user in USERS:
                m = self.model.acct(user)
                b = self.store.get_balance(user)
                assert (b.balance, b.held, b.lifetime_purchased) == (m.bal, m.held(now), m.life), user
                if m.plan:
                    left = self.store.check_allowance(user)
                    assert (left.plan_id, left.allowance_remaining) == (
                        m.plan, self.model.allowance_left(user, ALLOWANCES, now)), user
                assert m.credits_in - m.debits_out == b.balance  # conservation
                assert b.held >= 0 and b.balance >= 0
                keys = self.store.core.keys.user(user)
                for period, model in m.caps:
                    # each cap's current spend, as the debit script will read it
                    scope = "*" if model == "" else model
                    stored = stored_spend(self.store, keys.account, False, period, model, now)
                    assert stored == m.window(period, now, scope), (user, period, model)
                    c = self.store.check_spend_cap(user, model=model or None)
                    if model == "" and c.model is None and c.cap_type == ("daily" if period == "d" else "monthly"):
                        assert c.current_spend == stored

        @invariant()
        def ledger_sums_equal_balances(self) -> None:
            sums = self.ledger.read({self.store.core.keys.user(u).ledger for u in USERS})
            for user in USERS:
                assert sums[("u", user)] == self.model.acct(user).bal

    StoreVersusModel.__name__ = f"StoreVersusModel_{backend}"
    return StoreVersusModel


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_agrees_with_the_reference_model(backend: str) -> None:
    run_machine(make_machine(backend), backend)
