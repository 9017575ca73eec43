"""Team pools: every rule of issue 3 on every store (memory, Redis, Redis Cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import advance, event_entries, ledger_entries, snapshot

from ducto_redis import CreditMetadata, InvalidInputError, RedisStore


def team_with(store: RedisStore, balance: int = 10_000, *members: str, cap: int | None = None,
              period: str = "total") -> str:
    tid = store.create_team("T", initial_balance=balance).team_id
    for m in members:
        store.add_credits(m, 0)
        assert store.add_team_member(tid, m, spend_cap=cap, cap_period=period).error is None
    return tid


def without_events(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if not k.endswith(":events")}


def test_create_team_gives_a_pool_with_its_initial_balance(store: RedisStore) -> None:
    t = store.create_team("Engineering", initial_balance=100_000)
    b = store.get_team_balance(t.team_id)
    assert (t.name, b.name, b.balance, b.member_count, b.error) == ("Engineering", "Engineering", 100_000, 0, None)
    (entry,) = [e for e in ledger_entries(store) if e["acct"] == t.team_id]
    assert (entry["ak"], entry["kind"], entry["amount"], entry["type"]) == ("t", "credit", "100000", "team_created")


def test_unknown_team_is_team_not_found_everywhere_and_nothing_is_written(store: RedisStore) -> None:
    store.add_credits("u", 0)
    before = snapshot(store)
    assert store.get_team_balance("nope").error == "team_not_found"
    assert store.add_team_member("nope", "u").error == "team_not_found"
    assert store.deduct_team("nope", "u", 1).error == "team_not_found"
    assert store.reserve_team("nope", "u", 1).error == "team_not_found"
    assert store.top_up_team("nope", 5).error == "team_not_found"
    assert store.get_team_members("nope") == []
    assert snapshot(store) == before


def test_any_user_id_can_join_a_team_without_a_user_record_as_in_ducto(store: RedisStore) -> None:
    tid = team_with(store, 100)
    r = store.add_team_member(tid, "never-credited", role="admin", spend_cap=50)
    assert (r.error, r.role) == (None, "admin")
    assert store.deduct_team(tid, "never-credited", 30).team_balance_after == 70  # the pool pays
    assert store.get_balance("never-credited").balance == 0  # no personal record was needed or made
    assert [m.user_id for m in store.get_team_members(tid)] == ["never-credited"]


def test_deduct_team_debits_the_pool_never_the_members_balance(store: RedisStore) -> None:
    tid = team_with(store, 10_000, "m")
    store.add_credits("m", 50)
    r = store.deduct_team(tid, "m", 4_000, metadata=CreditMetadata(model="gpt-4"))
    assert (r.error, r.team_balance_after, r.amount) == (None, 6_000, -4_000)
    assert store.get_balance("m").balance == 50
    entry = [e for e in ledger_entries(store) if e["kind"] == "debit"][-1]
    assert (entry["ak"], entry["acct"], entry["member"], entry["amount"], entry["model"]) == (
        "t", tid, "m", "-4000", "gpt-4")


def test_checks_run_in_order_membership_then_member_cap_then_team_caps_then_pool(store: RedisStore) -> None:
    tid = team_with(store, 100, "capped", cap=50)
    store.add_credits("outsider", 0)
    store.set_team_spend_cap(tid, "daily", limit=40)
    # an outsider asking for more than the pool: membership is checked first
    assert store.deduct_team(tid, "outsider", 1_000).error == "user_not_in_team"
    # over the member cap, the team cap and the pool at once: member cap first
    assert store.deduct_team(tid, "capped", 1_000).error == "spend_cap_exceeded"
    assert store.team_spend_report(tid)[0].total_spent == 0
    # within the member cap but over the team cap and the pool: team cap (also spend_cap_exceeded)
    store.set_member_cap(tid, "capped", None)
    assert store.deduct_team(tid, "capped", 1_000).error == "spend_cap_exceeded"
    assert [e["type"] for e in event_entries(store)][-1] == "credits.cap_reached"
    # no caps in the way: the pool decides
    store.set_team_spend_cap(tid, "daily", limit=10**6)
    assert store.deduct_team(tid, "capped", 1_000).error == "insufficient_team_balance"
    assert store.deduct_team(tid, "capped", 100).team_balance_after == 0


def test_no_refusal_changes_anything(store: RedisStore) -> None:
    tid = team_with(store, 100, "a", cap=30)
    store.add_credits("stranger", 0)
    store.deduct_team(tid, "a", 30)
    before = without_events(snapshot(store))
    for user, amount, code in [("stranger", 1, "user_not_in_team"), ("a", 1, "spend_cap_exceeded")]:
        assert store.deduct_team(tid, user, amount).error == code
    for amount in (0, -5):  # out of range: raised, as for every method
        with pytest.raises(InvalidInputError):
            store.deduct_team(tid, "a", amount)
    assert without_events(snapshot(store)) == before
    store.set_member_cap(tid, "a", None)
    before = without_events(snapshot(store))
    assert store.deduct_team(tid, "a", 71).error == "insufficient_team_balance"
    assert without_events(snapshot(store)) == before


def test_the_pool_never_goes_negative(store: RedisStore) -> None:
    tid = team_with(store, 10, "a")
    assert store.deduct_team(tid, "a", 10).team_balance_after == 0
    assert store.deduct_team(tid, "a", 1).error == "insufficient_team_balance"
    assert store.get_team_balance(tid).balance == 0


def test_replayed_deduct_team_returns_the_first_result_and_debits_once(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a")
    r1 = store.deduct_team(tid, "a", 100, idempotency_key="job-1")
    r2 = store.deduct_team(tid, "a", 100, idempotency_key="job-1")
    r3 = store.deduct_team(tid, "a", 100, metadata={"idempotency_key": "job-1"})
    assert r2.idempotent and r3.idempotent and r1.transaction_id == r2.transaction_id == r3.transaction_id
    assert store.get_team_balance(tid).balance == 900
    assert store.team_spend_report(tid)[0].total_spent == 100


def test_top_up_is_typed_and_idempotent(store: RedisStore) -> None:
    tid = team_with(store, 0)
    assert store.top_up_team(tid, 500, type="purchase", idempotency_key="inv-1").balance == 500
    assert store.top_up_team(tid, 500, type="purchase", idempotency_key="inv-1").balance == 500
    assert store.get_team_balance(tid).balance == 500
    e = [e for e in ledger_entries(store) if e["kind"] == "credit"][-1]
    assert (e["ak"], e["type"], e["amount"]) == ("t", "purchase", "500")


def test_changing_one_members_cap_leaves_the_others_alone(store: RedisStore) -> None:
    tid = team_with(store, 10_000, "a", "b", cap=100)
    store.set_member_cap(tid, "a", 10)
    caps = {m.user_id: m.spend_cap for m in store.get_team_members(tid)}
    assert caps == {"a": 10, "b": 100}
    assert store.deduct_team(tid, "a", 11).error == "spend_cap_exceeded"
    assert store.deduct_team(tid, "b", 100).error is None
    store.set_member_cap(tid, "a", None)
    assert store.deduct_team(tid, "a", 5_000).error is None


def test_roles_change_and_removed_members_keep_their_history(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a", "b")
    assert store.set_member_role(tid, "a", "admin").role == "admin"
    store.deduct_team(tid, "b", 70)
    assert store.remove_team_member(tid, "b").error is None
    assert store.get_team_balance(tid).member_count == 1
    assert store.deduct_team(tid, "b", 1).error == "user_not_in_team"
    assert [m.user_id for m in store.get_team_members(tid)] == ["a"]
    assert store.remove_team_member(tid, "b").error == "user_not_in_team"
    assert sum(-int(e["amount"]) for e in ledger_entries(store) if e.get("member") == "b") == 70
    store.add_team_member(tid, "b")  # rejoining: the all-time total is still there
    assert {m.user_id: m.total_spent for m in store.get_team_members(tid)}["b"] == 70


def test_member_cap_over_a_daily_period_resets_the_next_day(store: RedisStore) -> None:
    from test_spend_caps import at_start_of_a_day

    at_start_of_a_day(store)
    tid = team_with(store, 10_000, "a", cap=100, period="daily")
    assert store.deduct_team(tid, "a", 100).error is None
    assert store.deduct_team(tid, "a", 1).error == "spend_cap_exceeded"
    advance(store, 86_400)
    assert store.deduct_team(tid, "a", 100).error is None
    report = store.team_spend_report(tid)[0]
    assert (report.total_spent, report.spent_today) == (200, 100)


@pytest.mark.parametrize("name", ["_b", "~_b", "_x", "~"])
@pytest.mark.parametrize("period", ["daily", "monthly"])
def test_a_member_named_like_a_window_field_cannot_reset_the_other_members_caps(
    store: RedisStore, name: str, period: str
) -> None:
    """Member windows keep their bucket in field ``_b``: a member id must never reach that field."""
    tid = team_with(store, 10_000, "alice", cap=100, period=period)
    store.add_credits(name, 0)
    assert store.add_team_member(tid, name, spend_cap=50, cap_period=period).error is None
    assert store.deduct_team(tid, "alice", 90).error is None
    assert store.deduct_team(tid, name, 40).error is None   # the odd name's own spend is its own
    assert store.deduct_team(tid, "alice", 20).error == "spend_cap_exceeded"   # 90 + 20 > 100: still capped
    assert store.deduct_team(tid, name, 11).error == "spend_cap_exceeded"      # 40 + 11 > 50
    spent = {m.user_id: (m.spent_today, m.spent_this_month) for m in store.team_spend_report(tid)}
    assert spent == {"alice": (90, 90), name: (40, 40)}


def test_member_cap_over_a_monthly_period(store: RedisStore) -> None:
    tid = team_with(store, 10_000, "a", cap=50, period="monthly")
    assert store.deduct_team(tid, "a", 50).error is None
    assert store.deduct_team(tid, "a", 1).error == "spend_cap_exceeded"
    advance(store, 31 * 86_400)
    assert store.deduct_team(tid, "a", 50).error is None


def test_team_caps_warn_and_notify_let_the_debit_through_with_an_event(store: RedisStore) -> None:
    from test_spend_caps import at_start_of_a_day

    at_start_of_a_day(store)
    tid = team_with(store, 10_000, "a")
    store.set_team_spend_cap(tid, "monthly", limit=10, action="warn")
    assert store.deduct_team(tid, "a", 20).error is None
    events = [e for e in event_entries(store) if e["acct"] == tid]
    assert [(e["type"], e["ak"], e["period"]) for e in events] == [("credits.cap_warning", "t", "monthly")]


def test_two_phase_team_spending_settles_the_actual_and_releases_the_rest(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a")
    hold = store.reserve_team(tid, "a", 300, "agent-run")
    assert hold.error is None
    b = store.get_team_balance(tid)
    assert (b.balance, b.held) == (1_000, 300)
    assert store.deduct_team(tid, "a", 701).error == "insufficient_team_balance"  # held credits are taken
    s = store.settle_team_reservation(tid, "a", hold.reservation_id, 120)
    assert (s.error, s.team_balance_after) == (None, 880)
    b = store.get_team_balance(tid)
    assert (b.balance, b.held) == (880, 0)
    again = store.settle_team_reservation(tid, "a", hold.reservation_id, 120)
    assert again.error == "reservation_not_found"


def test_a_members_open_holds_count_toward_their_cap(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a", cap=100)
    h = store.reserve_team(tid, "a", 80)
    assert store.deduct_team(tid, "a", 21).error == "spend_cap_exceeded"
    assert store.reserve_team(tid, "a", 21).error == "spend_cap_exceeded"
    assert store.deduct_team(tid, "a", 20).error is None
    # settling replaces the hold in the count
    assert store.settle_team_reservation(tid, "a", h.reservation_id, 80).error is None
    assert store.team_spend_report(tid)[0].total_spent == 100


def test_team_holds_expire_and_return_to_the_pool(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a", cap=500)
    h = store.reserve_team(tid, "a", 400, ttl_seconds=60)
    advance(store, 61)
    assert store.get_team_balance(tid).held == 0
    assert store.settle_team_reservation(tid, "a", h.reservation_id, 400).error == "reservation_not_found"
    assert store.deduct_team(tid, "a", 500).error is None  # the expired hold no longer counts
    assert "expire" in [e["kind"] for e in ledger_entries(store) if e["acct"] == tid]


def test_spend_report_stops_counting_an_expired_hold_before_any_sweep(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a", "b")
    store.reserve_team(tid, "a", 300, ttl_seconds=60)
    store.reserve_team(tid, "b", 100, ttl_seconds=3600)
    advance(store, 61)   # a's hold is past due; no script has swept it yet
    held = {r.user_id: r.held for r in store.team_spend_report(tid)}
    assert held == {"a": 0, "b": 100}
    assert store.get_team_balance(tid).held == 100


def test_release_returns_a_team_hold_once(store: RedisStore) -> None:
    tid = team_with(store, 1_000, "a", "b")
    h = store.reserve_team(tid, "a", 400)
    assert store.release_team_reservation(tid, "b", h.reservation_id).error == "reservation_not_found"
    r = store.release_team_reservation(tid, "a", h.reservation_id)
    assert (r.error, r.amount, r.held) == (None, 400, 0)
    assert store.release_team_reservation(tid, "a", h.reservation_id).error == "reservation_not_found"


def test_spend_report_says_who_spent_what_this_period_and_all_time(store: RedisStore) -> None:
    tid = team_with(store, 10_000, "a", "b")
    store.deduct_team(tid, "a", 10)
    store.deduct_team(tid, "a", 5)
    store.deduct_team(tid, "b", 7)
    h = store.reserve_team(tid, "b", 3)
    rows = {r.user_id: r for r in store.team_spend_report(tid)}
    assert (rows["a"].total_spent, rows["a"].spent_this_month, rows["a"].held) == (15, 15, 0)
    assert (rows["b"].total_spent, rows["b"].held) == (7, 3)
    assert h.error is None


def test_team_keys_all_share_the_teams_hash_tag(store: RedisStore) -> None:
    tid = team_with(store, 100, "a")
    store.reserve_team(tid, "a", 10)
    store.deduct_team(tid, "a", 5)
    tag = store.core.keys.team(tid).tag
    team_keys = [k for k in snapshot(store) if ":t:" in k]
    assert team_keys and all(k.startswith(tag) for k in team_keys)


@pytest.mark.parametrize("field,call", [
    ("team_id", lambda s, t: s.deduct_team("", "a", 1)),
    ("user_id", lambda s, t: s.deduct_team(t, None, 1)),
    ("amount", lambda s, t: s.deduct_team(t, "a", 1.5)),
    ("amount", lambda s, t: s.deduct_team(t, "a", True)),
    ("spend_cap", lambda s, t: s.add_team_member(t, "a", spend_cap=-1)),
    ("spend_cap", lambda s, t: s.add_team_member(t, "a", spend_cap="10")),
    ("cap_period", lambda s, t: s.add_team_member(t, "a", spend_cap=10, cap_period="weekly")),
    ("initial_balance", lambda s, t: s.create_team("X", initial_balance=-5)),
    ("name", lambda s, t: s.create_team("", initial_balance=5)),
    ("amount", lambda s, t: s.top_up_team(t, 2.5)),
])
def test_bad_team_arguments_raise_naming_the_field_and_write_nothing(
    store: RedisStore, field: str, call: object
) -> None:
    from ducto_redis import InvalidInputError

    tid = team_with(store, 100, "a")
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as info:
        call(store, tid)  # type: ignore[operator]
    assert info.value.field == field
    assert snapshot(store) == before
