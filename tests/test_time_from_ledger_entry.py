"""A plain single debit takes its time from its own ledger entry instead of a TIME call
(lua/lib/08_debit.lua ``debit_clock``): its row is written first, with no ts (the entry's time), and
deleted again if the decision is refused after all. What may not change: every decision, every
refusal, every row as the ledger database stores it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from conftest import drop_namespace, new_namespace

from ducto_redis import RedisStore, SpendCap
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
