"""A plain single debit takes its time from its own ledger entry instead of a TIME call
(lua/lib/08_debit.lua ``debit_clock``): its row is written first, with no ts (the entry's time), and
deleted again if the decision is refused after all. A batch (debit_many.lua) decides on the last
call's day and month and takes its time from the entry it writes (``many_stands``): a different day
or month starts the call over on it; an account that needs the time itself reads TIME. What may not
change: every decision, every refusal, every row as the ledger database stores it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from conftest import drop_namespace, new_namespace

from ducto_redis import RedisStore, SpendCap
from ducto_redis.batch import ChargeRequest, charge_calls
from ducto_redis.ledger.copy_text import COPY_COLUMNS, copy_payload, entry_rows


def time_calls(client: Any) -> int:
    return int(client.info("commandstats").get("cmdstat_time", {}).get("calls", 0))


@pytest.fixture
def private(private_redis: Any) -> Any:
    """A store on the tests' own redis-server (its command counts are ours to reset) and its client."""
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store = RedisStore.from_url(private_redis.url, namespace=new_namespace(), shards=1)
    yield store, client
    drop_namespace(client, store.settings.namespace)


def ledger(store: RedisStore, client: Any) -> list[tuple[str, dict[str, str]]]:
    return [(mid, fields) for mid, fields in client.xrange(store.core.keys.ledger_stream(0)) or []]


def test_a_plain_charge_makes_no_time_call_and_its_row_takes_its_entrys_time(private: Any) -> None:
    store, client = private
    store.add_credits("u", 100)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=1000, action="deny"))
    store.charge("u", 1, "x")  # (the library's first call may read TIME: there is no last clock yet)
    client.config_resetstat()
    results = [store.charge("u", 2, "x") for _ in range(5)]
    assert time_calls(client) == 0
    assert [r.balance_after for r in results] == [97, 95, 93, 91, 89]
    mid, fields = ledger(store, client)[-1]
    assert fields["q"].split("\t")[1] == ""  # no ts in the row: the entry's
    (row,) = entry_rows(0, mid, fields)
    assert row["ts"] == mid.partition("-")[0] and row["kind"] == "debit" and row["amount"] == "-2"
    line = copy_payload([(0, mid.encode(), [b"q", fields["q"].encode()])], "ns").rstrip(b"\n")
    cols = dict(zip(COPY_COLUMNS, line.split(b"\t"), strict=True))
    assert cols["stream_ms"] == mid.partition("-")[0].encode() and cols["ts"].endswith(b"+00")
    # the same for a team member's debit
    team = store.create_team("T", initial_balance=50).team_id
    store.add_team_member(team, "m", spend_cap=40)
    store.deduct_team(team, "m", 1)
    client.config_resetstat()
    assert store.deduct_team(team, "m", 3).team_balance_after == 46
    assert time_calls(client) == 0


def test_a_charge_refused_after_its_row_was_written_leaves_no_entry(private: Any) -> None:
    store, client = private
    store.add_credits("u", 100)
    store.set_rate_limit("u", 1, period_seconds=3600)
    assert store.charge("u", 1, "x").error is None
    before = ledger(store, client)
    client.config_resetstat()
    refused = store.charge("u", 1, "x")  # written first (nothing in the row depends on the time), then refused
    assert refused.error == "rate_limited" and time_calls(client) == 0
    assert ledger(store, client) == before and store.get_balance("u").balance == 99
    info = client.xinfo_stream(store.core.keys.ledger_stream(0))
    assert info["max-deleted-entry-id"] != "0-0"  # it was there, and went


def test_a_charge_whose_row_may_depend_on_the_time_reads_the_clock_first(private: Any) -> None:
    store, client = private
    store.add_credits("w", 100)
    store.set_spend_cap(SpendCap(user_id="w", cap_type="daily", limit=1, action="warn"))
    store.charge("w", 1, "x")
    client.config_resetstat()
    assert store.charge("w", 5, "x").cap_action == "warn"  # the row records the warn cap it passed
    # TIME twice: the lean call (refused for its KEYS: its warn event needs the events stream) and
    # the widened one that made it (tests/test_lean_keys.py); "w" is sent with every KEY from now on
    assert time_calls(client) == 2
    _, fields = ledger(store, client)[-1]
    assert fields["q"].split("\t")[1] != ""
    # one that will most likely be refused is judged on TIME: no row is written and deleted
    store.add_credits("d", 10)
    store.set_spend_cap(SpendCap(user_id="d", cap_type="daily", limit=3, action="deny"))
    store.charge("d", 3, "x")
    before = ledger(store, client)
    client.config_resetstat()
    assert store.charge("d", 1, "x").error == "spend_cap_exceeded"
    assert store.charge("w", 1000, "x").error == "insufficient_credits"
    # "d" refused twice (lean for its KEYS: its cap_reached event; then widened), "w" once
    assert time_calls(client) == 3 and ledger(store, client) == before
    assert client.xinfo_stream(store.core.keys.ledger_stream(0))["max-deleted-entry-id"] == "0-0"


# ── a batch (debit_many.lua) ───────────────────────────────────────────


def events(store: RedisStore, client: Any) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(store.core.keys.events_stream(0)) or []]


def test_a_batch_of_plain_charges_makes_no_time_call_and_its_rows_take_their_entrys_time(private: Any) -> None:
    store, client = private
    for u in "abc":
        store.add_credits(u, 100)
    store.set_spend_cap(SpendCap(user_id="a", cap_type="daily", limit=1000, action="deny"))
    client.config_resetstat()
    results = store.charge_many([ChargeRequest(u, 2, "x") for u in "abcab"])
    assert time_calls(client) == 0 and client.info("commandstats")["cmdstat_fcall"]["calls"] == 1
    assert [r.balance_after for r in results] == [98, 98, 98, 96, 96]
    mid, fields = ledger(store, client)[-1]
    rows = entry_rows(0, mid, fields)
    assert [q.split("\t")[1] for q in fields["q"].split("\n")] == [""] * 5  # no ts: the entry's
    assert [(row["ts"], row["amount"]) for row in rows] == [(mid.partition("-")[0], "-2")] * 5
    assert [r.transaction_id for r in results] == [row["id"] for row in rows]


def test_a_batch_decision_refused_on_the_entrys_clock_leaves_no_row_and_the_others_answer_as_one_by_one(
        private: Any) -> None:
    store, client = private
    store.add_credits("a", 5)
    store.add_credits("b", 100)
    store.add_credits("d", 100)
    store.set_spend_cap(SpendCap(user_id="d", cap_type="daily", limit=3, action="deny"))
    client.config_resetstat()
    results = store.charge_many([ChargeRequest("a", 3, "x"), ChargeRequest("a", 3, "x"), ChargeRequest("b", 1, "x"),
                                 ChargeRequest("d", 4, "x"), ChargeRequest("a", 2, "x")])
    assert [(r.error, r.balance_after) for r in results] == [
        (None, 2), ("insufficient_credits", 2), (None, 99), ("spend_cap_exceeded", 100), (None, 0)]
    assert time_calls(client) == 0  # the refusals' day is the entry's: its time, no TIME
    mid, fields = ledger(store, client)[-1]
    rows = entry_rows(0, mid, fields)
    assert [(row["acct"], row["amount"], row["bal"]) for row in rows] == [("a", "-3", "2"), ("b", "-1", "99"),
                                                                         ("a", "-2", "0")]
    assert [r.transaction_id for r in results if r.error is None] == [row["id"] for row in rows]
    (event,) = events(store, client)  # d's cap_reached, at the entry's time
    assert event["type"] == "credits.cap_reached" and event["ts"] == mid.partition("-")[0]


def test_a_batch_that_writes_no_row_reads_the_time_only_for_a_cap_it_judged(private: Any) -> None:
    store, client = private
    store.add_credits("a", 5)
    store.add_credits("d", 100)
    store.set_spend_cap(SpendCap(user_id="d", cap_type="daily", limit=3, action="deny"))
    before = ledger(store, client)
    client.config_resetstat()
    refused = store.charge_many([ChargeRequest("a", 30, "x"), ChargeRequest("a", 6, "x")])
    assert [r.error for r in refused] == ["insufficient_credits"] * 2 and time_calls(client) == 0
    refused = store.charge_many([ChargeRequest("a", 30, "x"), ChargeRequest("d", 4, "x")])
    assert [r.error for r in refused] == ["insufficient_credits", "spend_cap_exceeded"]
    assert time_calls(client) == 1 and ledger(store, client) == before
    (event,) = events(store, client)
    assert event["type"] == "credits.cap_reached" and event["ts"] != ""


def test_a_batch_meeting_an_account_that_needs_the_time_reads_it_there_and_dates_every_row_with_it(
        private: Any) -> None:
    store, client = private
    store.add_credits("a", 100)
    store.add_credits("r", 100)
    store.set_rate_limit("r", 100, period_seconds=60)
    client.config_resetstat()
    results = store.charge_many([ChargeRequest(u, 1, "x") for u in "arab"])
    assert [r.error for r in results] == [None, None, None, "insufficient_credits"]
    assert time_calls(client) == 1 and results[1].rate_limit_remaining == 99
    mid, fields = ledger(store, client)[-1]
    stamps = {q.split("\t")[1] for q in fields["q"].split("\n")}
    assert len(stamps) == 1 and "" not in stamps  # every row the time TIME read, the first one's too
    assert int(stamps.pop()) <= int(mid.partition("-")[0])


def two_days_ago(store: RedisStore, url: str) -> RedisStore:
    """A store of the same namespace whose clock runs two days behind: a call it makes becomes the
    last clock the library saw, which a batch decides on before its entry gives the time."""
    past = RedisStore.from_url(url, namespace=store.settings.namespace, shards=1)
    past.core.clock_offset_ms = -2 * 86_400_000
    return past


def test_a_batch_decided_on_another_day_starts_over_on_its_entrys_day(private: Any, private_redis: Any) -> None:
    store, client = private
    store.add_credits("u", 100)
    store.add_credits("v", 100)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    # two days ago (a store of the same namespace with its clock offset), u spent its daily cap:
    # that call's clock is the last one the library saw
    past = two_days_ago(store, private_redis.url)
    assert past.charge("u", 10, "x").error is None
    before = ledger(store, client)
    client.config_resetstat()
    # judged on that day, u would be refused (10 + 5 > 10); on the entry's day it has spent nothing
    results = store.charge_many([ChargeRequest("u", 5, "x"), ChargeRequest("v", 1, "x")])
    assert [(r.error, r.balance_after) for r in results] == [(None, 85), (None, 99)]
    assert time_calls(client) == 0 and events(store, client) == []  # no cap_reached of the day judged first
    assert store.check_spend_cap("u", 0).current_spend == 5
    after = ledger(store, client)
    assert after[:-1] == before and len(after) == len(before) + 1
    assert client.xinfo_stream(store.core.keys.ledger_stream(0))["max-deleted-entry-id"] != "0-0"
    mid, fields = after[-1]
    stamps = [q.split("\t")[1] for q in fields["q"].split("\n")]
    assert stamps[0] == stamps[1] != "" and int(stamps[0]) <= int(mid.partition("-")[0])
    assert [r.transaction_id for r in results] == [row["id"] for row in entry_rows(0, mid, fields)]


def test_a_batch_sent_again_on_the_entrys_clock_changes_nothing(private: Any) -> None:
    store, client = private
    for u in "ab":
        store.add_credits(u, 100)
    calls = charge_calls(store.core, [{"user_id": u, "amount": 3, "operation_type": "x"} for u in "abab"])
    first = store._run_many(calls)
    before = ledger(store, client), client.hgetall(store.core.keys.user("a").account)
    client.config_resetstat()
    again = store._run_many(calls)
    assert all(r.idempotent for r in again) and time_calls(client) == 0
    assert [r.transaction_id for r in again] == [r.transaction_id for r in first]
    assert (ledger(store, client), client.hgetall(store.core.keys.user("a").account)) == before


def test_a_batch_refused_for_its_balance_after_passing_a_cap_on_another_day_is_judged_again_on_its_own(
        private: Any, private_redis: Any) -> None:
    store, client = private
    store.add_credits("u", 12)
    store.add_credits("a", 1)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    assert store.charge("u", 8, "x").balance_after == 4  # today u has spent 8 of its 10
    past = two_days_ago(store, private_redis.url)
    past.charge("a", 1, "x")  # the last call's clock: two days ago, when u had spent nothing
    before = ledger(store, client)
    # two days ago, 5 passes u's cap and is refused for its balance (4); today the cap refuses it,
    # as a charge one by one would: no row either way, so TIME is read (the cap was judged)
    results = store.charge_many([ChargeRequest("u", 5, "x"), ChargeRequest("a", 30, "x")])
    assert [r.error for r in results] == ["spend_cap_exceeded", "insufficient_credits"]
    assert ledger(store, client) == before and store.get_balance("u").balance == 4
    (event,) = events(store, client)
    assert event["type"] == "credits.cap_reached" and event["acct"] == "u"
    assert store.charge("u", 5, "x").error == "spend_cap_exceeded"  # the same, one by one


def test_a_batch_started_over_on_another_day_remembers_its_keys_and_events_once(
        private: Any, private_redis: Any) -> None:
    store, client = private
    store.add_credits("u", 100)
    store.add_credits("w", 100)
    store.set_spend_cap(SpendCap(user_id="u", cap_type="daily", limit=10, action="deny"))
    store.set_spend_cap(SpendCap(user_id="w", cap_type="daily", limit=1, action="warn"))
    past = two_days_ago(store, private_redis.url)
    assert past.charge("u", 10, "x").error is None  # u's cap spent two days ago: the last clock seen
    before = ledger(store, client)
    reqs = [ChargeRequest("u", 5, "x", idempotency_key="k1"), ChargeRequest("w", 3, "x", idempotency_key="k2")]
    # judged on that day u is refused and w warned; on the entry's day both are made, w warned
    first = store.charge_many(reqs)
    assert [(r.error, r.balance_after, r.cap_action) for r in first] == [(None, 85, None), (None, 97, "warn")]
    after = ledger(store, client)
    assert len(after) == len(before) + 1  # one entry stayed: the day judged first left none
    assert client.xinfo_stream(store.core.keys.ledger_stream(0))["max-deleted-entry-id"] != "0-0"
    (warning,) = events(store, client)  # w's warning once, none for u's refusal on the day judged first
    assert warning["type"] == "credits.cap_warning" and warning["acct"] == "w"
    again = store.charge_many(reqs)  # the keys remember what the call answered on the entry's day
    assert [(r.idempotent, r.transaction_id) for r in again] == [(True, r.transaction_id) for r in first]
    assert ledger(store, client) == after and len(events(store, client)) == 1
    assert (store.get_balance("u").balance, store.get_balance("w").balance) == (85, 97)
