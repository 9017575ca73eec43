"""The stored formats are defined once on each side, ducto_redis/layout.py and lua/lib/02_state.lua (with
07_grants.lua), and the two agree: what the scripts write decodes here to what was asked and encodes
back to the very same text, and what layout.py encodes (as restore writes it) the scripts read."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from conftest import ledger_entries

from ducto_redis import plans
from ducto_redis.batch import TeamDebitRequest
from ducto_redis.layout import (
    RING,
    Account,
    Grant,
    Hold,
    Member,
    ModelWindow,
    QuantityLimit,
    RateLimit,
    State,
    cap_of,
    cap_text,
    day_bucket,
    grant_parts_of,
    grant_parts_text,
    month_bounds,
    month_bucket,
    parse_tx_id,
    plan_left_of,
    plan_of,
    plan_text,
    pricing_record,
    tx_id,
    tx_ref_id,
)
from ducto_redis.models import PricingConfigData, SpendCap
from ducto_redis.store import RedisStore

NOT_MODELLED = ("qt|", "qh|")  # quantity limits' arrival times and a hold's estimate: the scripts' own


def now_ms(store: RedisStore) -> int:
    sec, usec = store.client.time()
    return int(sec) * 1000 + int(usec) // 1000 + store.core.clock_offset_ms


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def stored(store: RedisStore, key: str, team: bool) -> tuple[dict[str, str], Account]:
    raw = store.client.hgetall(key)
    return raw, Account.decode(raw, team)


def assert_encodes_back(raw: dict[str, str], account: Account) -> None:
    """Every field the scripts wrote (but the ring and the scripts' own) is what layout.py encodes."""
    assert account.fields() == {f: v for f, v in raw.items() if f != RING and not f.startswith(NOT_MODELLED)}


def test_what_the_scripts_write_decodes_to_what_was_asked_and_encodes_back_the_same(store: RedisStore) -> None:
    s, keys = store, store.core.keys
    s.add_credits("u", 1000, "purchase")
    start = now_ms(s)
    expiry = (start // 1000 + 3600) * 1000
    s.add_credits("u", 40, "promo", expires_at=at(expiry))
    s.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=500, action="deny"))
    s.set_spend_cap(SpendCap(user_id="u", cap_type="monthly", limit=800, action="warn"))
    s.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=300, action="notify", model="gpt"))
    s.set_rate_limit("u", 10, 2.0, burst=5)
    s.set_quantity_limit("u", "tokens", 1000, 60)
    charged = s.charge("u", 50, "chat", metadata={"model": "gpt"}, quantities={"tokens": 10})
    hold = s.reserve_credits("u", 20, "job|x", ttl_seconds=600)
    s.set_active_pricing(PricingConfigData(models={"m": "1"}, plans={
        "basic": {"id": "basic", "name": "Basic", "free_allowance": 5},
        "pro": {"id": "pro", "name": "Pro", "free_allowance": 9}}))
    s.set_user_plan("u", "basic")
    assert s.charge_with_allowance("u", 3, "chat").allowance_used == 3
    s.set_user_plan("u", "pro")
    assert s.refund_credits(charged.transaction_id, 15).error is None
    raw, a = stored(s, keys.user("u").account, team=False)
    assert_encodes_back(raw, a)

    day, month = day_bucket(start), month_bucket(start)
    # 1040 in, a charge of 50 (40 of it from the grant), 15 refunded
    assert (a.balance, a.life, a.state.held) == (1040 - 50 + 15, 1000, 20)
    assert a.holds == {hold.reservation_id: Hold(20, hold.expires_at_ms, "job|x")}
    assert a.state.hold_expiry == hold.expires_at_ms and a.refunded == {charged.transaction_id: 15}
    assert (a.state.day, a.state.month, a.state.spend(a.balance, start)) == (day, month, (50, 50))
    assert [cap_of(a.state.day_cap), cap_of(a.state.month_cap)] == [(500, "deny"), (800, "warn")]
    assert RateLimit.decode(a.state.rate_limit) == RateLimit(10, 2000, 5) and a.state.tat is not None
    assert QuantityLimit.decode_all(a.state.quantity_limits) == [QuantityLimit("tokens", "", 1000, 60_000)]
    gpt = a.models["gpt"]
    assert (gpt.total, gpt.spend(start), cap_of(gpt.day_cap), gpt.month_cap) == (50, (50, 50), (300, "notify"), "")
    assert plan_of(a.plan) == (None, 0, "pro") and plan_left_of(a.plans_left["basic"]) == (month, 3)
    grants = s.client.hgetall(keys.user("u").grants)
    assert {g: Grant.decode(v).encode() for g, v in grants.items()} == grants
    # the grant paid 40 of the charge; the refund gave back the 10 of ordinary credits, then 5 to it
    assert [Grant.decode(v) for v in grants.values()] == [Grant(expiry, 5)]

    # a team: its pool, a member with a cap, a team hold naming the member
    team = s.create_team("T", 100).team_id
    s.add_team_member(team, "m|1", "lead", spend_cap=60, cap_period="daily")
    s.add_team_member(team, "gone", "member")
    s.remove_team_member(team, "gone")
    s.deduct_team(team, "m|1", 15)
    held = s.reserve_team(team, "m|1", 25, "batch")
    raw, t = stored(s, keys.team(team).account, team=True)
    assert_encodes_back(raw, t)
    assert (t.name, t.balance, t.state.held) == ("T", 85, 25)
    assert t.holds == {held.reservation_id: Hold(25, held.expires_at_ms, "batch", "m|1")}
    m = t.members["m|1"]
    assert (m.role, m.cap, m.period, m.spent, m.held, m.spend(now_ms(s))) == ("lead", 60, "daily", 15, 25, (15, 15))
    assert t.members["gone"].period == "removed" and raw["mc"] == "1"


def test_the_grant_parts_of_a_debit_and_a_refund_read_as_layout_defines_them(store: RedisStore) -> None:
    s = store
    soon = (now_ms(s) // 1000 + 3600) * 1000
    s.add_credits("g", 30, "promo", expires_at=at(soon))
    s.add_credits("g", 20, "promo", expires_at=at(soon + 1000))
    s.add_credits("g", 100, "purchase")
    charged = s.charge("g", 60, "chat")
    s.refund_credits(charged.transaction_id, 45)
    rows = {r["kind"]: r for r in ledger_entries(s) if r["kind"] in ("debit", "refund")}
    grants = {r["id"]: int(r["exp"]) for r in ledger_entries(s) if r["kind"] == "credit" and r.get("exp")}
    spent = grant_parts_of(rows["debit"]["gc"])
    assert [(grants[g], n) for g, e, n in spent if e == grants[g]] == [(soon, 30), (soon + 1000, 20)]
    assert grant_parts_text(spent) == rows["debit"]["gc"]
    # 45 back: the 10 of ordinary credits first (spent last), then the latest-expiring grant's 20, then 15
    back = grant_parts_of(rows["refund"]["gr"])
    assert [(grants[g], n) for g, _, n in back] == [(soon + 1000, 20), (soon, 15)]
    assert grant_parts_text(back) == rows["refund"]["gr"]


def test_a_published_pricing_version_is_the_record_layout_defines(store: RedisStore) -> None:
    keys = store.core.keys
    for version, label in ((1, "v1"), (2, "v2 · spring/summer")):
        config = PricingConfigData(models={"m": f"input_tokens / {version}000"})
        pid = store.set_active_pricing(config, label=label)
        ts = int(store.client.hget(keys.pricing_active(), "ts"))
        record = store.client.hget(keys.pricing_versions(), str(version))
        expected = pricing_record(pid, version, label, ts, config.model_dump_json(exclude_none=True))
        if label.isascii() and "/" not in label:
            assert record == expected
        else:  # cjson writes non-ASCII as it is and escapes '/': the same JSON, other bytes
            assert json.loads(record) == json.loads(expected)


@pytest.mark.parametrize("when", ["2024-02-29T12:00:00", "2023-12-31T12:00:00", "2100-03-01T12:00:00",
                                  "1999-01-01T00:00:30"])
def test_the_scripts_buckets_are_layouts_on_any_date(store: RedisStore, when: str) -> None:
    target = int(datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp() * 1000)
    store.core.clock_offset_ms += target - now_ms(store)
    store.add_credits("b", 100)
    store.set_user_plan("b", "p")
    store.increment_usage_window("b", "p", 2)
    store.charge("b", 5, "x", metadata={"model": "m"})
    at = now_ms(store)
    a = Account.decode(store.client.hgetall(store.core.keys.user("b").account), team=False)
    assert (a.state.day, a.state.month) == (day_bucket(at), month_bucket(at))
    assert (a.models["m"].day, a.models["m"].month) == (day_bucket(at), month_bucket(at))
    assert plan_of(a.plan) == (month_bucket(at), 2, "p")
    # plan_read.lua's month: its bucket's bounds
    assert read_plan(store, "b") == ("p", 2, *month_bounds(month_bucket(at)))


def read_plan(store: RedisStore, user: str) -> tuple[str, int, int, int]:
    """plan_read.lua's reply: (plan id, used this month, month start ms, month end ms)."""
    return store._run(plans.read_plan(store.core, user))


def test_what_layout_encodes_the_scripts_read(store: RedisStore) -> None:
    """An account hash written from layout.py (as restore writes it) is what the scripts see."""
    s, keys = store, store.core.keys
    t0 = now_ms(s)
    day, month = day_bucket(t0), month_bucket(t0)
    state = State(held=30, hold_expiry=t0 + 600_000, grant_expiry=t0 + 3_600_000,
                  rate_limit=RateLimit(3, 60_000, 3).encode(), day_cap=cap_text(100, "deny"),
                  month_cap=cap_text(1000, "warn")).with_spend(500, day, 60, month, 90)
    user = Account(balance=500, state=state, life=700, created=t0, holds={"r1": Hold(30, t0 + 600_000, "job")},
                   models={"gpt": ModelWindow(total=80, day=day, day_anchor=60, month=month, month_anchor=0,
                                              day_cap=cap_text(25, "deny"))},
                   plan=plan_text(month, 4, "pro"), plans_left={"basic": "7|1"})
    k = keys.user("w")
    s.client.hset(k.account, mapping=user.fields())
    s.client.hset(k.grants, "gr1", Grant(t0 + 3_600_000, 40).encode())
    assert (s.get_balance("w").balance, s.get_balance("w").held) == (500, 30)
    model_cap = s.check_spend_cap("w", model="gpt", amount=6)
    assert (model_cap.capped, model_cap.current_spend, model_cap.cap_limit, model_cap.model) == (True, 20, 25, "gpt")
    assert s.charge("w", 41, "x").error == "spend_cap_exceeded"  # 60 spent today of the all-model 100
    assert read_plan(s, "w")[:2] == ("pro", 4)
    assert s.charge("w", 10, "x").error is None  # settles nothing, spends the grant first
    assert Grant.decode(s.client.hget(k.grants, "gr1")) == Grant(t0 + 3_600_000, 30)
    assert s.deduct_credits("w", "r1", 30).error is None  # the hold layout.py wrote settles
    assert [s.hit_rate_limit("w").allowed for _ in range(3)] == [True, True, False]  # 3 a minute, 1 charged

    team = Account(balance=90, state=State(held=5, hold_expiry=t0 + 600_000), life=90, created=t0, name="T",
                   holds={"th": Hold(5, t0 + 600_000, "op", "m1")},
                   members={"m1": Member("lead", 10, "monthly", 3, day, 3, month, 0, 5)})
    s.client.hset(keys.team("tw").account, mapping=team.fields())
    (member,) = s.get_team_members("tw")
    assert (member.user_id, member.role, member.spend_cap, member.cap_period, member.period_spent) == (
        "m1", "lead", 10, "monthly", 3)
    assert s.get_team_balance("tw").member_count == 1
    # the member's cap counts their open hold: 3 spent + 5 held + 3 > 10
    assert s.deduct_team("tw", "m1", 3).error == "spend_cap_exceeded"
    assert s.deduct_team("tw", "m1", 2).error is None


def test_a_member_record_of_the_older_order_is_read_and_written_back_in_the_new_one(store: RedisStore) -> None:
    """Records written before ``spent`` led the member record (``cap|period|spent|...``) are still read, by
    the scripts and by layout.py, and a debit writes them back in the new order."""
    s, keys = store, store.core.keys
    t0 = now_ms(s)
    day, month = day_bucket(t0), month_bucket(t0)
    tid = s.create_team("T", 1000).team_id
    s.add_team_member(tid, "m", "lead", spend_cap=60, cap_period="daily")
    s.add_team_member(tid, "n")
    k = keys.team(tid).account
    # m: 40 spent all-time, 25 of it today (anchor 15), 5 held; n: no cap, 7 spent
    older = {"U|m": f"60|d|40|{day}|15|{month}|0|5|lead", "U|n": "|t|7||0||0|0|member"}
    s.client.hset(k, mapping=older)
    assert Member.decode(older["U|m"]) == Member("lead", 60, "daily", 40, day, 15, month, 0, 5)
    assert Member.decode(older["U|n"]) == Member("member", None, "total", 7, None, 0, None, 0, 0)
    spends = {m.user_id: (m.spend_cap, m.cap_period, m.period_spent, m.total_spent) for m in s.get_team_members(tid)}
    assert spends == {"m": (60, "daily", 25, 40), "n": (None, "total", 7, 7)}
    assert s.deduct_team(tid, "m", 31).error == "spend_cap_exceeded"  # 25 today + 5 held + 31 > 60
    assert s.deduct_team(tid, "m", 30).error is None
    assert s.deduct_team(tid, "n", 3).error is None
    raw = s.client.hgetall(k)
    assert raw["U|m"] == f"70|60|d|{day}|15|{month}|0|5|lead" and raw["U|n"] == f"10||t|{day}|7|{month}|7|0|member"
    assert Member.decode(raw["U|m"]) == Member("lead", 60, "daily", 70, day, 15, month, 0, 5)


def test_members_whose_records_read_alike_keep_their_own_values(store: RedisStore) -> None:
    """The scripts remember a member record's parsed text (all but the spend) and share it between
    members whose records read alike: a change to one member (a hold, a cap, a debit) never reaches
    another, in one call or across calls."""
    s = store
    tid = s.create_team("T", 1000).team_id
    for m in ("a", "b", "c"):
        s.add_team_member(tid, m, spend_cap=60, cap_period="daily")
    assert s.reserve_team(tid, "a", 50).error is None  # a holds 50
    assert s.deduct_team(tid, "b", 60).error is None  # b holds nothing: all 60 of their cap
    assert s.set_member_cap(tid, "c", 10).error is None
    assert s.deduct_team(tid, "c", 11).error == "spend_cap_exceeded"
    assert [r.error for r in s.deduct_team_many([TeamDebitRequest(tid, "a", 10), TeamDebitRequest(tid, "c", 10),
                                                 TeamDebitRequest(tid, "a", 1)])] == [None, None, "spend_cap_exceeded"]
    members = {m.user_id: (m.spend_cap, m.period_spent) for m in s.get_team_members(tid)}
    assert members == {"a": (60, 10), "b": (60, 60), "c": (10, 10)}
    raw, t = stored(s, s.core.keys.team(tid).account, team=True)
    assert_encodes_back(raw, t)
    assert [t.members[m].held for m in "abc"] == [50, 0, 0]


def test_a_team_cap_set_before_the_team_exists_writes_no_balance(store: RedisStore) -> None:
    """The team scripts tell a team exists by its ``b`` (layout.py): a cap set on a team no one created
    writes ``S`` alone, and layout.py encodes such a hash back without ``b``."""
    s = store
    s.set_team_spend_cap("ghost", "daily", 100, "deny")
    raw, t = stored(s, s.core.keys.team("ghost").account, team=True)
    assert "b" not in raw and cap_of(t.state.day_cap) == (100, "deny")
    assert_encodes_back(raw, t)
    assert [s.deduct_team("ghost", "m", 1).error, s.reserve_team("ghost", "m", 1).error,
            s.add_team_member("ghost", "m").error, s.get_team_balance("ghost").error] == ["team_not_found"] * 4


def test_a_transaction_id_is_its_entry_row_and_shard_whichever_parts_were_made_before() -> None:
    # tx_id makes its time part once per millisecond and its shard/sequence part once per shard and
    # sequence: ids made from parts made for other rows, shards and entries are still their own
    assert tx_id(5, "1764585600123-17", 42) == "019ad97f-747b-802a-0005-000000000011"
    assert tx_id(5, b"1764585600123-17", 43) == "019ad97f-747b-802b-0005-000000000011"
    assert tx_id(6, "1764585600123-0", 42) == "019ad97f-747b-802a-0006-000000000000"
    assert tx_id(3, "17") == "00000000-0011-8000-0003-000000000000"
    seen = set()
    for ms in ("1764585600123", "1764585600124", "0", str(2**48 - 1)):
        for seq in ("0", "1", str(2**48 - 1)):
            for shard in (0, 1, 63, 2**16 - 1):
                for row in (0, 1, 99, 4095):
                    tx = tx_id(shard, f"{ms}-{seq}", row)
                    assert parse_tx_id(tx) == (shard, f"{ms}-{seq}", row)
                    seen.add(tx)
    assert len(seen) == 4 * 3 * 4 * 4
    # past the id's 12 row bits the row is written whole, as the one format always did: no id then
    assert tx_id(3, "100-5", 5000) == "00000000-0064-81388-0003-000000000005"
    assert parse_tx_id(tx_id(3, "100-5", 5000)) is None


def test_a_replys_row_reference_reads_as_the_transaction_id_of_that_row() -> None:
    # every debit reply's "<entry>/<row>" is read by tx_ref_id, which joins tx_id's parts itself
    for entry in ("1764585600123-17", "1764585600123-0", "17-0", f"{2**48 - 1}-{2**48 - 1}"):
        for shard in (0, 5, 2**16 - 1):
            for row in (0, 1, 99, 4095, 5000):
                assert tx_ref_id(shard, f"{entry}/{row}") == tx_id(shard, entry, row)
            assert tx_ref_id(shard, f"{entry}/") == tx_id(shard, entry)
    assert tx_ref_id(5, "") == ""  # the call wrote no row
