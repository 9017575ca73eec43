"""Lean KEYS: a charge (debit.lua) and a team debit (pool_debit.lua) send only ``account ledger``
unless they carry an idempotency key or their account was widened before. A lean call whose decision
needs the KEYS it left out (an account with expiring grants: the grants hash; a cap passed: its
event in the events stream) is refused before anything is written (DUCTO_KEYS, lua/lib/08_debit.lua
keys_short), and connect.py ``_plan`` sends the same call (same call id and ARGV) again with every KEY
(``Call.widen``), remembering the account so its next calls carry them all at once.

Each test fails without what it names: the lean KEYS, the refusal (an event or a grant lost, or
written twice), the widening (a refused call surfacing as an error), the remembered account, the
fill-in of a lean call packed into debit_many.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import ledger_entries, snapshot
from redis.exceptions import ResponseError
from test_spend_caps import at_start_of_a_day

from ducto_redis import RedisStore, SpendCap
from ducto_redis.core import Call
from ducto_redis.team_ops import team_debit


def later(store: RedisStore, hours: float) -> datetime:
    """``hours`` after the scripts' clock (the test clock offset included)."""
    now = datetime.now(timezone.utc) + timedelta(milliseconds=store.core.clock_offset_ms)
    return now + timedelta(hours=hours)


def events(store: RedisStore, key: Any) -> list[dict[str, str]]:
    """The events about one account (its shard's stream may hold other accounts')."""
    return [fields for _, fields in store.client.xrange(key.events) if fields.get("acct") == key.account_id]


def rows(store: RedisStore, kind: str = "debit") -> list[dict[str, str]]:
    return [e for e in ledger_entries(store) if e["kind"] == kind]


def lean_only(call: Call[Any]) -> Call[Any]:
    """The call as it is, without its widening: a refusal surfaces as the error reply."""
    return dataclasses.replace(call, widen=None)


def test_a_plain_charge_sends_two_keys_and_one_with_an_idempotency_key_five(store: RedisStore) -> None:
    plain = store.core.debit("u", 1, operation_type="x")
    k = store.core.keys.user("u")
    assert plain.keys == [k.account, k.ledger] and plain.widen is not None
    keyed = store.core.debit("u", 1, operation_type="x", idempotency_key="k1")
    assert keyed.keys == [k.account, k.ledger, k.events, k.grants, k.idempotency("k1")] and keyed.widen is None
    team = store.create_team("pool", 100).team_id
    t = store.core.keys.team(team)
    assert team_debit(store.core, team, "m", 1).keys == [t.account, t.ledger]
    assert team_debit(store.core, team, "m", 1, idempotency_key="k").keys == [
        t.account, t.ledger, t.events, t.idempotency("k")]
    # and they run as they are
    store.add_credits("u", 10)
    assert store._run(plain).balance_after == 9
    assert store._run(keyed).balance_after == 8


def test_a_charge_of_an_account_with_a_grant_is_refused_lean_widened_and_runs_once(store: RedisStore) -> None:
    store.add_credits("g", 100)
    store.add_credits("g", 50, type="signup_bonus", expires_at=later(store, 1))
    k = store.core.keys.user("g")
    call = store.core.debit("g", 30, operation_type="x")
    assert len(call.keys) == 2
    before = snapshot(store)
    with pytest.raises(ResponseError, match=r"^DUCTO_KEYS"):
        store._run(lean_only(call))
    assert snapshot(store) == before  # refused before anything was written
    r = store._run(call)  # refused lean, then widened: the same call id, every KEY
    assert (r.error, r.balance_after, r.idempotent) == (None, 120, False)
    assert [g.split("|")[1] for g in store.client.hgetall(k.grants).values()] == ["20"]  # the grant spent first
    (row,) = rows(store)
    assert row["gc"].endswith(":30")  # one debit row, naming the grant it consumed
    # remembered: the user's next charges carry every KEY at once
    nxt = store.core.debit("g", 1, operation_type="x")
    assert nxt.keys == [k.account, k.ledger, k.events, k.grants, k.idempotency(None)] and nxt.widen is None
    assert store._run(nxt).balance_after == 119
    assert len(rows(store)) == 2
    assert [g.split("|")[1] for g in store.client.hgetall(k.grants).values()] == ["19"]


def test_the_same_lean_call_re_sent_after_its_refusal_is_not_a_replay_and_its_widened_form_is(
        store: RedisStore) -> None:
    store.add_credits("g", 100, expires_at=later(store, 1))
    call = store.core.debit("g", 10, operation_type="x")
    before = snapshot(store)
    for _ in range(2):  # refused twice: its call id was never remembered (the ring untouched)
        with pytest.raises(ResponseError, match=r"^DUCTO_KEYS"):
            store._run(lean_only(call))
    assert snapshot(store) == before
    first = store._run(call)
    assert (first.error, first.balance_after, first.idempotent) == (None, 90, False)
    after = snapshot(store)
    assert call.widen is not None
    again = store._run(call.widen(call))  # the widened call re-sent: a replay, nothing written
    assert (again.balance_after, again.idempotent, again.transaction_id) == (90, True, first.transaction_id)
    assert store._run(call).idempotent  # the lean one again: refused, widened, a replay
    assert snapshot(store) == after


def test_a_deny_cap_that_refuses_a_lean_charge_writes_its_event_once(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    k = store.core.keys.user("u")
    assert store.charge("u", 10, "x").error is None  # under the cap: lean, no event
    assert store.core.debit("u", 1, operation_type="x").widen is not None
    r = store.charge("u", 5, "x")
    assert (r.error, r.cap_action, r.balance_after) == ("spend_cap_exceeded", "deny", 990)
    (e,) = events(store, k)
    assert (e["type"], e["action"], e["amount"]) == ("credits.cap_reached", "deny", "5")
    assert len(rows(store)) == 1  # the first charge's row only


def test_a_warn_cap_passed_by_a_lean_charge_writes_its_event_once_and_charges(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 1_000)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="warn"))
    k = store.core.keys.user("u")
    r = store.charge("u", 15, "x")
    assert (r.error, r.cap_action, r.balance_after) == (None, "warn", 985)
    (e,) = events(store, k)
    (row,) = rows(store)
    assert e["type"] == "credits.cap_warning" and e["ref"]  # names the debit's row
    assert row["cap"] == "warn"


def test_a_settlement_refused_by_a_deny_cap_is_widened_and_releases_its_hold_once(store: RedisStore) -> None:
    at_start_of_a_day(store)
    store.add_credits("u", 1_000)
    hold = store.reserve_credits("u", 100, "job")
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    k = store.core.keys.user("u")
    r = store.deduct_credits("u", hold.reservation_id, 50)
    assert r.error == "spend_cap_exceeded"
    (e,) = events(store, k)
    assert e["type"] == "credits.cap_reached"
    assert [x["kind"] for x in ledger_entries(store) if x["kind"] in ("release", "settle")] == ["release"]
    assert (store.get_balance("u").balance, store.get_balance("u").held) == (1_000, 0)


def test_team_caps_a_lean_team_debit_meets(store: RedisStore) -> None:
    at_start_of_a_day(store)
    team = store.create_team("pool", 1_000).team_id
    store.add_team_member(team, "m", spend_cap=20)
    store.add_team_member(team, "n")
    t = store.core.keys.team(team)
    # the member's own cap refuses without an event: nothing more needed, the lean call decides it
    r = store.deduct_team(team, "m", 25)
    assert r.error == "spend_cap_exceeded" and events(store, t) == []
    assert t.account not in store.core.wide
    # a team deny cap: its event, once
    store.set_team_spend_cap(team, "daily", 30, "deny")
    assert store.deduct_team(team, "n", 30).error is None
    assert store.deduct_team(team, "n", 5).error == "spend_cap_exceeded"
    (e,) = events(store, t)
    assert (e["type"], e["ak"], e["amount"]) == ("credits.cap_reached", "t", "5")
    assert t.account in store.core.wide
    assert len(team_debit(store.core, team, "n", 1).keys) == 4  # its next debits carry every KEY
    # a team warn cap: its event, once, and the pool pays
    other = store.create_team("pool", 1_000).team_id
    store.add_team_member(other, "m")
    store.set_team_spend_cap(other, "monthly", 10, "warn")
    assert store.deduct_team(other, "m", 15).error is None
    (e,) = events(store, store.core.keys.team(other))
    assert (e["type"], e["amount"]) == ("credits.cap_warning", "15")
    assert store.get_team_balance(other).balance == 985


def test_a_lone_decision_of_a_batch_for_an_account_with_a_grant_is_widened(store: RedisStore) -> None:
    store.add_credits("g", 100, expires_at=later(store, 1))
    k = store.core.keys.user("g")
    (r,) = store.charge_many([{"user_id": "g", "amount": 10, "operation_type": "x"}])
    assert (r.error, r.balance_after) == (None, 90)
    assert [g.split("|")[1] for g in store.client.hgetall(k.grants).values()] == ["90"]
    assert len(rows(store)) == 1 and k.account in store.core.wide


def test_a_mixed_batch_packs_lean_calls_with_the_keys_they_left_out(store: RedisStore) -> None:
    at_start_of_a_day(store)
    shard = store.core.keys.user("mix-0").shard
    names = [n for n in (f"mix-{i}" for i in range(5000)) if store.core.keys.user(n).shard == shard][:3]
    granted, capped, plain = names
    store.add_credits(granted, 100, expires_at=later(store, 1))
    store.add_credits(capped, 100)
    store.add_credits(plain, 100)
    store.set_spend_cap(SpendCap(user_id=capped, cap_type="daily", limit=5, action="deny"))
    other = "mix-other"
    while store.core.keys.user(other).shard == shard:
        other += "x"
    store.add_credits(other, 100, expires_at=later(store, 1))  # alone in its shard: the single script
    reqs = [{"user_id": u, "amount": a, "operation_type": "x"}
            for u, a in ((granted, 10), (capped, 10), (plain, 10), (other, 10), (granted, 5))]
    results = store.charge_many(reqs)
    assert [(r.error, r.balance_after) for r in results] == [
        (None, 90), ("spend_cap_exceeded", 100), (None, 90), (None, 90), (None, 85)]
    assert [g.split("|")[1] for g in store.client.hgetall(store.core.keys.user(granted).grants).values()] == ["85"]
    assert [g.split("|")[1] for g in store.client.hgetall(store.core.keys.user(other).grants).values()] == ["90"]
    (e,) = events(store, store.core.keys.user(capped))
    assert e["type"] == "credits.cap_reached"
    assert len(rows(store)) == 4


def test_a_lean_charge_refused_after_sweeping_an_expired_hold_writes_nothing_until_widened(
        store: RedisStore) -> None:
    from conftest import advance

    at_start_of_a_day(store)
    store.add_credits("u", 1_000)
    store.reserve_credits("u", 100, "job", ttl_seconds=60)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    advance(store, 120)  # the hold is past due: the next debit sweeps it (an 'expire' row)
    call = store.core.debit("u", 50, operation_type="x")
    before = snapshot(store)
    with pytest.raises(ResponseError, match=r"^DUCTO_KEYS"):
        store._run(lean_only(call))  # swept, then refused at the cap: the sweep is not written either
    assert snapshot(store) == before
    r = store._run(call)
    assert (r.error, r.balance_after) == ("spend_cap_exceeded", 1_000)
    assert [x["kind"] for x in ledger_entries(store)].count("expire") == 1
    (e,) = events(store, store.core.keys.user("u"))
    assert e["type"] == "credits.cap_reached"
    assert store.get_balance("u").held == 0


# ── the rule without I/O (connect._plan): a DUCTO_KEYS reply sends the widened call instead ──


def test_plan_sends_a_call_refused_for_its_keys_again_widened_with_the_same_arguments() -> None:
    from ducto_redis import connect
    from ducto_redis.core import StoreCore
    from ducto_redis.settings import Settings

    core = StoreCore(Settings(namespace="t", shards=4))
    call = core.debit("x", 3, operation_type="op")
    calls = [call]
    plan = connect._plan(object(), calls)
    first = next(plan)
    assert isinstance(first, connect.Send) and len(first.commands[0]) == 3 + 2 + len(call.args)
    again = plan.send([ResponseError("DUCTO_KEYS the decision needs its account's full keys")])
    assert isinstance(again, connect.Send)
    k = core.keys.user("x")
    (fcall,) = again.commands
    assert fcall[:8] == ("FCALL", call.script.function if call.script else "", 5, k.account, k.ledger,
                         k.events, k.grants, k.idempotency(None))
    assert list(fcall[8:]) == call.args  # the same call id and arguments: it did not run
    with pytest.raises(StopIteration) as done:
        plan.send(["ok|0|1-0/0|3|7|0||0||"])
    assert done.value.value == ["ok|0|1-0/0|3|7|0||0||"]
    assert calls == [call] and len(call.keys) == 2  # the caller's calls as they were
    assert k.account in core.wide
    # a call that has no widened form (a full one): the refusal is raised, never sent again
    plan = connect._plan(object(), [lean_only(core.debit("y", 1, operation_type="op"))])
    next(plan)
    with pytest.raises(ResponseError, match=r"^DUCTO_KEYS"):
        plan.send([ResponseError("DUCTO_KEYS the decision needs its account's full keys")])
