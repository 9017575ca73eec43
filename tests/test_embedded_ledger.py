"""MemoryStore's embedded ledger: every entry in SQLite before the call returns; analytics, restore and
reconcile from it with no PostgreSQL; a file-backed store carries on after a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_namespace, ledger_entries, restorable_state

from ducto_redis import (
    AsyncMemoryStore,
    CreditMetadata,
    MemoryStore,
    PlanDefinition,
    PricingConfigData,
    SpendCap,
)
from ducto_redis.ledger.database import sqlite_schema
from ducto_redis.ledger.embedded import STREAM_TAIL

comparable = restorable_state


def workload(s: MemoryStore) -> dict[str, str]:
    """Balances, an expiring grant, holds, caps, a team with a capped member and a hold, plans and
    their allowance, pricing versions, a refund: a little of everything restore must bring back."""
    later = datetime.now(timezone.utc) + timedelta(days=2)
    s.set_active_pricing(PricingConfigData(models={"m": "input_tokens"}, plans={
        "pro": PlanDefinition(id="pro", name="Pro", free_allowance=50)}), label="v1")
    s.add_credits("a", 1_000, type="purchase")
    s.add_credits("a", 200, expires_at=later)
    s.charge("a", 120, "chat", metadata=CreditMetadata(model="gpt-4"))
    hold = s.reserve_credits("a", 300, "agent-run")
    s.add_credits("b", 500)
    released = s.reserve_credits("b", 10, "job", min_balance=0)
    s.deduct_credits("b", s.reserve_credits("b", 80, "job").reservation_id, 60,
                     metadata=CreditMetadata(model="claude"))
    s.release_reservation("b", released.reservation_id)
    s.set_spend_cap(SpendCap(user_id="a", cap_type="daily", limit=5_000, action="deny"))
    s.set_spend_cap(SpendCap(user_id="b", cap_type="monthly", limit=900, action="warn", model="claude"))
    s.set_user_plan("c", "pro")
    s.add_credits("c", 100)
    s.charge_with_allowance("c", 70, "chat")  # 50 free + 20 paid
    refunded = s.charge("c", 30, "chat")
    s.refund_credits(refunded.transaction_id, 10)
    team = s.create_team("T", initial_balance=2_000).team_id
    s.add_team_member(team, "a", role="admin")
    s.add_team_member(team, "x", spend_cap=400, cap_period="daily")
    s.deduct_team(team, "x", 150, metadata=CreditMetadata(model="gpt-4"))
    s.reserve_team(team, "x", 100)
    s.set_team_spend_cap(team, "monthly", 10_000)
    return {"hold": hold.reservation_id, "team": team, "refunded": refunded.transaction_id}


def sqlite_ids(s: MemoryStore) -> set[str]:
    """The entry ids the store's SQLite ledger holds (as any reader sees them: brought up to date)."""
    s.ledger.flush()
    return {r[0] for r in s.ledger.db.rows("SELECT entry_id FROM {table} WHERE namespace = ?",
                                           (s.settings.namespace,))}


def test_a_file_backed_ledger_holds_every_entry_of_a_call_before_the_call_returns(tmp_path: Path) -> None:
    f = tmp_path / "ledger.sqlite"
    s = MemoryStore(ledger_file=str(f))
    workload(s)
    with sqlite3.connect(f) as other:  # another connection: what is on disk
        on_disk = {r[0] for r in other.execute("SELECT entry_id FROM ledger")}
        stream_ids = {e["id"] for e in ledger_entries(s)}
        assert len(stream_ids) > 20 and stream_ids == on_disk
        r = s.charge("a", 1, "chat")
        assert other.execute("SELECT kind FROM ledger WHERE entry_id = ?", (r.transaction_id,)).fetchone() == ("debit",)


def test_an_in_memory_ledger_is_brought_up_to_date_before_anything_reads_it() -> None:
    s = MemoryStore()
    workload(s)
    r = s.charge("a", 5, "chat")
    reader = s.ledger_reader()
    assert reader is not None and reader.entry(s.settings.namespace, r.transaction_id) is not None
    assert {e["id"] for e in ledger_entries(s)} == sqlite_ids(s)
    s.charge("b", 7, "chat")
    now = datetime.now(timezone.utc)
    assert dict((u.user_id, u.total_spend) for u in s.spend_by_user(now - timedelta(minutes=1), now))["b"] == 67


def test_a_file_backed_store_keeps_balances_holds_caps_teams_and_plans_across_a_restart(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    s = MemoryStore("app", ledger_file=str(ledger))
    ids = workload(s)
    before = comparable(s)
    del s
    again = MemoryStore("app", ledger_file=str(ledger))  # a new process: a fresh in-process server
    assert comparable(again) == before
    assert again.reconcile_with_ledger() == {}
    # and it carries on: the hold settles, the refund record remembers, caps and member caps still bite
    assert again.deduct_credits("a", ids["hold"], 250).error is None
    assert again.refund_credits(ids["refunded"]).error == "already_refunded"
    assert again.deduct_team(ids["team"], "x", 151).error == "spend_cap_exceeded"  # 150 + 100 held + 151 > 400
    assert again.check_allowance("c").allowance_remaining == 0
    assert again.get_active_pricing() is not None and again.get_active_pricing().label == "v1"  # type: ignore[union-attr]


def test_a_restarted_store_continues_the_streams_after_the_ids_the_file_holds(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.sqlite")
    s = MemoryStore(ledger_file=ledger)
    s.add_credits("u", 10)
    last = s.ledger.db.last_stream_ids(s.settings.namespace)
    del s
    again = MemoryStore(ledger_file=ledger)
    again.charge("u", 1, "x")
    (shard, first_run), = last.items()
    second_run = again.ledger.db.last_stream_ids(again.settings.namespace)[shard]
    assert second_run > first_run


def test_restore_and_reconcile_work_on_the_embedded_ledger_without_postgresql(monkeypatch: Any) -> None:
    monkeypatch.delenv("DUCTO_DATABASE_URL", raising=False)
    s = MemoryStore()
    workload(s)
    before = comparable(s)
    assert s.settings.database_url is None
    assert s.reconcile_with_ledger() == {}
    s.client.hset(s.core.keys.user("a").account, "bal", "1")
    assert "balance" in " ".join(s.reconcile_with_ledger()["u:a"])
    drop_namespace(s.client, s.settings.namespace)  # the in-process Redis lost everything
    assert s.restore_from_ledger() == 4  # users a, b, c and the team (member x has no user record)
    assert comparable(s) == before


def test_analytics_answer_from_the_embedded_ledger_without_a_database_url(monkeypatch: Any) -> None:
    monkeypatch.delenv("DUCTO_DATABASE_URL", raising=False)
    s = MemoryStore()
    s.add_credits("u", 100)
    s.charge("u", 7, "chat", metadata=CreditMetadata(model="gpt-4"))
    now = datetime.now(timezone.utc)
    assert [(r.user_id, r.total_spend) for r in s.spend_by_user(now - timedelta(minutes=1), now)] == [("u", 7)]
    assert s.aggregate_stats(now - timedelta(minutes=1), now).top_model == "gpt-4"


def test_copied_entries_leave_the_streams_beyond_a_bounded_tail() -> None:
    s = MemoryStore(shards=1)
    s.add_credits("u", 10**9)
    s.charge_many([{"user_id": "u", "amount": 1, "operation_type": "x"} for _ in range(STREAM_TAIL * 2 + 10)])
    assert len(sqlite_ids(s)) == STREAM_TAIL * 2 + 11  # every entry is in the ledger...
    assert s.client.xlen(s.core.keys.ledger_stream(0)) == STREAM_TAIL  # ...and the stream keeps its tail


def test_an_async_memory_store_on_the_same_server_writes_into_the_same_ledger() -> None:
    s = MemoryStore("shared")
    aio = AsyncMemoryStore("shared", server=s.server)
    r = asyncio.run(aio.add_credits("u", 5))
    assert aio.ledger is s.ledger and r.transaction_id in sqlite_ids(s)


def test_stores_sharing_a_server_cannot_name_two_ledger_files(tmp_path: Path) -> None:
    s = MemoryStore("ns", ledger_file=str(tmp_path / "one.sqlite"))
    with pytest.raises(ValueError, match="ledger_file"):
        MemoryStore("ns", server=s.server, ledger_file=str(tmp_path / "two.sqlite"))
    assert MemoryStore("ns", server=s.server).ledger is s.ledger


def test_the_ledger_file_can_be_named_by_the_environment(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DUCTO_LEDGER_FILE", str(tmp_path / "env.sqlite"))
    s = MemoryStore()
    s.add_credits("u", 3)
    assert s.ledger.path == str(tmp_path / "env.sqlite")
    assert MemoryStore().get_balance("u").balance == 3


def test_the_ledger_reader_finds_one_entry_by_id_in_sqlite() -> None:
    s = MemoryStore()
    s.add_credits("u", 50)
    d = s.charge("u", 20, "chat", metadata=CreditMetadata(model="m"))
    reader = s.ledger_reader()
    assert reader is not None
    row = reader.entry(s.settings.namespace, d.transaction_id)
    assert row is not None
    assert (row["kind"], row["amount"], row["account_id"], row["model"]) == ("debit", -20, "u", "m")
    assert row["ts"].tzinfo is not None
    assert reader.entry(s.settings.namespace, "no-such-id") is None
    assert reader.entry("other-namespace", d.transaction_id) is None


def test_the_sqlite_table_has_the_postgresql_ledgers_columns() -> None:
    from ducto_redis.ledger.flusher import schema_sql

    pg = schema_sql("x")
    table = pg[pg.index("CREATE TABLE"):pg.index(");")]
    lines = [line.strip() for line in table.splitlines()[1:]]
    pg_columns = [line.split()[0] for line in lines if line and not line.startswith("--")]
    lite = sqlite_schema()
    lite_columns = [c.split()[0] for c in lite[lite.index("(") + 1:lite.index(");")].split(", ")]
    assert sorted(lite_columns) == sorted(pg_columns)


def test_setup_reports_the_ledger_table_it_keeps(tmp_path: Path) -> None:
    assert MemoryStore().setup().tables_created[0] == "ledger (SQLite, in memory)"
    f = str(tmp_path / "l.sqlite")
    assert MemoryStore(ledger_file=f).setup().tables_created[0] == f"ledger (SQLite, {f})"


def test_an_async_memory_store_on_a_file_carries_on_after_a_restart_too(tmp_path: Path) -> None:
    f = str(tmp_path / "ledger.sqlite")

    async def first() -> str:
        s = AsyncMemoryStore(ledger_file=f)
        await s.add_credits("u", 100)
        return (await s.reserve_credits("u", 30, "job")).reservation_id

    async def second(rid: str) -> tuple[int, int, str | None]:
        s = AsyncMemoryStore(ledger_file=f)
        b = await s.get_balance("u")
        return b.balance, b.held, (await s.deduct_credits("u", rid, 30)).error

    assert asyncio.run(second(asyncio.run(first()))) == (100, 30, None)


def test_a_dropped_memory_store_frees_its_server_and_its_ledger() -> None:
    import gc
    import weakref

    s = MemoryStore()
    s.add_credits("u", 1)
    ledger, server = weakref.ref(s.ledger), weakref.ref(s.server)
    del s
    gc.collect()
    assert ledger() is None and server() is None  # thousands of stores in a test run stay bounded
