"""Model-based test of team pools: random team operations on a real store and on the reference
team model must agree after every step.

Checked after every step: the pool's balance, held and member count; each member's all-time,
today's and this month's spend and what they hold (report); conservation (credits in − debits out
= pool balance; accepted debits = sum of members' all-time spend); the ledger's signed amounts sum
to the pool balance. Member ids include ``_b`` and key syntax; time moves under the test clock, so
holds expire and day / month windows roll over. Runs on MemoryStore and on the real Redis.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule
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
from reference_model import bucket
from reference_team_model import TeamModel

from ducto_redis import CreditMetadata, RedisStore

# "_b" is the member windows' bucket field name; "zed" is a user who is never a member
MEMBERS = ["alice", "b{o}b:1", "_b"]
PEOPLE = [*MEMBERS, "zed"]
MODELS = ["", "gpt-4"]
CAPS = st.one_of(st.none(), st.sampled_from([0, 10, 25, 60]))
PERIODS = st.sampled_from(["total", "daily", "monthly"])


def make_machine(backend: str) -> type[RuleBasedStateMachine]:
    class TeamVersusModel(RuleBasedStateMachine):
        holds = Bundle("team_holds")

        def __init__(self) -> None:
            super().__init__()
            self.store: RedisStore = open_store(backend)
            self.model = TeamModel()
            self.ledger = LedgerSums(self.store)
            self.ops = 0
            self.tid = ""

        def now(self) -> int:
            return store_now(self.store)

        def teardown(self) -> None:
            OPERATIONS[f"teams/{backend}"] += self.ops
            close_store(self.store, backend)

        @initialize(start=st.integers(0, 150), caps=st.lists(CAPS, min_size=len(MEMBERS), max_size=len(MEMBERS)),
                    periods=st.lists(PERIODS, min_size=len(MEMBERS), max_size=len(MEMBERS)))
        def create(self, start: int, caps: list[int | None], periods: list[str]) -> None:
            self.tid = self.store.create_team("T", initial_balance=start).team_id
            self.model.top_up(start, None)
            for person in PEOPLE:
                self.store.add_credits(person, 0)
            for uid, cap, period in zip(MEMBERS, caps, periods, strict=True):
                assert self.store.add_team_member(self.tid, uid, spend_cap=cap, cap_period=period).error is None
                self.model.set_member(uid, cap, period)

        @rule(amount=st.integers(0, 60), key=st.sampled_from([None, "t1", "t2"]))
        def top_up(self, amount: int, key: str | None) -> None:
            self.ops += 1
            r = self.store.top_up_team(self.tid, amount, idempotency_key=key)
            assert (r.error or "ok", r.balance) == self.model.top_up(amount, key)

        @rule(uid=st.sampled_from(PEOPLE), cap=CAPS, period=PERIODS)
        def set_member(self, uid: str, cap: int | None, period: str) -> None:
            """Add a member, or replace their cap and period."""
            self.ops += 1
            assert self.store.add_team_member(self.tid, uid, spend_cap=cap, cap_period=period).error is None
            self.model.set_member(uid, cap, period)

        @rule(uid=st.sampled_from(PEOPLE))
        def remove_member(self, uid: str) -> None:
            self.ops += 1
            r = self.store.remove_team_member(self.tid, uid)
            assert (r.error or "ok") == self.model.remove_member(uid)

        @rule(period=st.sampled_from(["d", "m"]), model=st.sampled_from(MODELS),
              limit=st.sampled_from([0, 20, 50, 100]), action=st.sampled_from(["deny", "warn", "notify"]))
        def set_team_cap(self, period: str, model: str, limit: int, action: str) -> None:
            self.ops += 1
            self.store.set_team_spend_cap(self.tid, "daily" if period == "d" else "monthly", limit, action,
                                          model=model or None)
            self.model.set_cap(period, model, limit, action)

        @rule(uid=st.sampled_from(PEOPLE), amount=st.integers(1, 30), model=st.sampled_from(MODELS),
              key=st.sampled_from([None, "d1", "d2", "d3"]))
        def deduct(self, uid: str, amount: int, model: str, key: str | None) -> None:
            self.ops += 1
            expected = self.model.debit(uid, amount, None, model, key, self.now())
            meta = CreditMetadata(model=model) if model else None
            r = self.store.deduct_team(self.tid, uid, amount, metadata=meta, idempotency_key=key)
            assert (r.error or "ok", r.team_balance_after) == expected

        @rule(target=holds, uid=st.sampled_from(PEOPLE), amount=st.integers(1, 30))
        def reserve(self, uid: str, amount: int) -> tuple[str, str, int]:
            self.ops += 1
            expected = self.model.reserve(uid, amount, self.now())
            r = self.store.reserve_team(self.tid, uid, amount)
            assert (r.error or "ok") == expected, (r, expected)
            if r.error is None:
                self.model.record_hold(r.reservation_id, uid, amount, r.expires_at_ms)
                return (uid, r.reservation_id, amount)
            return (uid, "never-reserved", amount)

        @rule(h=consumes(holds), delta=st.sampled_from([-10, -1, 0, 1, 10]), model=st.sampled_from(MODELS),
              key=st.sampled_from([None, "s1", "s2"]))
        def settle(self, h: tuple[str, str, int], delta: int, model: str, key: str | None) -> None:
            self.ops += 1
            uid, rid, amount = h
            actual = max(0, amount + delta)
            expected = self.model.debit(uid, actual, rid, model, key, self.now())
            meta = CreditMetadata(model=model) if model else None
            r = self.store.settle_team_reservation(self.tid, uid, rid, actual, idempotency_key=key, metadata=meta)
            assert (r.error or "ok", r.team_balance_after) == expected

        @rule(h=holds, other=st.sampled_from(PEOPLE))
        def settle_again_or_as_someone_else(self, h: tuple[str, str, int], other: str) -> None:
            """A hold that may be resolved already, or that belongs to another member: money moves once."""
            self.ops += 1
            _uid, rid, amount = h
            expected = self.model.debit(other, amount, rid, "", None, self.now())
            r = self.store.settle_team_reservation(self.tid, other, rid, amount)
            assert (r.error or "ok", r.team_balance_after) == expected

        @rule(h=consumes(holds), other=st.sampled_from([None, *PEOPLE]))
        def release(self, h: tuple[str, str, int], other: str | None) -> None:
            self.ops += 1
            uid = other or h[0]
            expected = self.model.release(uid, h[1], self.now())
            assert (self.store.release_team_reservation(self.tid, uid, h[1]).error or "ok") == expected

        @rule(seconds=st.sampled_from(ADVANCES))
        def advance_clock(self, seconds: int) -> None:
            self.ops += 1
            self.store.core.clock_offset_ms += seconds * 1000

        @invariant()
        def pool_and_members_agree(self) -> None:
            if not self.tid:
                return
            now, m = self.now(), self.model
            b = self.store.get_team_balance(self.tid)
            assert (b.balance, b.held, b.member_count) == (m.bal, m.held(now), len(m.members))
            assert b.balance >= 0 and 0 <= b.held <= b.balance
            assert m.credits_in - m.debits_out == b.balance  # conservation
            report = {r.user_id: r for r in self.store.team_spend_report(self.tid)}
            assert set(report) == set(m.members)
            for uid, member in m.members.items():
                r = report[uid]
                assert (r.spend_cap, r.cap_period) == (member.cap, member.period), uid
                assert (r.total_spent, r.spent_today, r.spent_this_month, r.held) == (
                    m.mspend.get(uid, 0), m.member_window(uid, "d", now), m.member_window(uid, "m", now),
                    m.member_held(uid, now)), uid
            assert sum(m.mspend.values()) == m.debits_out
            for (period, model), _ in m.caps.items():
                keys = self.store.core.keys.team(self.tid)
                stored = stored_spend(self.store, keys.account, True, period, model, now)
                assert stored == m.spend.get((period, bucket(period, now), "*" if model == "" else model), 0)

        @invariant()
        def ledger_sums_equal_the_pool(self) -> None:
            if self.tid:
                sums = self.ledger.read({self.store.core.keys.team(self.tid).ledger})
                assert sums[("t", self.tid)] == self.model.bal

    TeamVersusModel.__name__ = f"TeamVersusModel_{backend}"
    return TeamVersusModel


@pytest.mark.parametrize("backend", BACKENDS)
def test_team_pools_agree_with_the_reference_model(backend: str) -> None:
    run_machine(make_machine(backend), backend)
