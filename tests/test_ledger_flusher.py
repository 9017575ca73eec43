"""The fast flusher path: COPY text built from bytes, several flushers at once, backpressure, CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace
from test_ledger import rows, workload

from ducto_redis import CreditMetadata, RedisStore
from ducto_redis.cli import main as cli
from ducto_redis.layout import ROW_COLUMNS as ROW_FIELDS
from ducto_redis.layout import tx_id
from ducto_redis.ledger.copy_text import (
    COPY_COLUMNS,
    ROW_FIELD,
    _entry_values,
    copy_payload,
    entry_rows,
    reference_line,
)
from ducto_redis.ledger.flusher import LedgerFlusher, migrate, trim_point


def raw_entries(f: LedgerFlusher) -> list[tuple[int, bytes, list[bytes]]]:
    return [(i, mid, [x for kv in fields.items() for x in kv])
            for i, s in enumerate(f.streams) for mid, fields in f.client.xrange(s)]


def test_every_entry_the_scripts_write_formats_as_the_reference_path_does(ledger_store: RedisStore) -> None:
    workload(ledger_store)
    ledger_store.add_credits("m", 5, metadata=CreditMetadata(reference_id="r", custom="v"))
    f = LedgerFlusher(ledger_store, DATABASE_URL)
    entries = raw_entries(f)
    ns = ledger_store.settings.namespace
    assert all(flat[0] == ROW_FIELD and len(flat) == 2 for _, _, flat in entries)  # one row field each
    assert len({r["kind"] for sh, mid, flat in entries for r in entry_rows(sh, mid, flat)}) >= 5  # many paths
    fast = copy_payload(entries, ns)
    reference = b"".join(reference_line(ns.encode(), shard, mid, i, values) + b"\n"
                         for shard, mid, flat in entries for i, values in enumerate(_entry_values(flat)))
    assert fast == reference


def test_entries_in_the_older_field_per_value_layout_are_still_stored() -> None:
    """Entries written before the row layout (still unflushed at an upgrade) take the reference path:
    an unknown field goes to `extra`, an entry without id is named by its stream position."""
    old = [(3, b"5-1", [b"ts", b"1700000000123", b"acct", b"a", b"kind", b"debit", b"new", b"x"]),
           (0, b"6-0", [b"id", b"t1", b"ts", b"1700000000124", b"ak", b"u", b"acct", b"b", b"kind", b"debit",
                        b"amount", b"-2", b"meta", b"not json"])]
    first, second = copy_payload(old, "ns").rstrip(b"\n").split(b"\n")
    cols = dict(zip(COPY_COLUMNS, first.split(b"\t"), strict=True))
    assert cols["entry_id"] == tx_id(3, "5-1").encode() and cols["extra"] == b'{"new": "x"}'
    assert cols["ts"] == b"2023-11-14 22:13:20.123+00" and (cols["account_kind"], cols["amount"]) == (b"u", b"0")
    cols = dict(zip(COPY_COLUMNS, second.split(b"\t"), strict=True))
    assert (cols["entry_id"], cols["amount"], cols["metadata"]) == (b"t1", b"-2", b'{"raw": "not json"}')


def test_entries_in_the_older_row_layout_are_still_stored() -> None:
    """An entry of the older row layout (field "r", one row, its own column order) is stored as it says."""
    old = b"\t".join([b"1700000000123", b"t1", b"u", b"a", b"", b"debit", b"-3", b"7", b"0"] + [b""] * 11)
    (line,) = copy_payload([(1, b"5-0", [b"r", old])], "ns").rstrip(b"\n").split(b"\n")
    cols = dict(zip(COPY_COLUMNS, line.split(b"\t"), strict=True))
    assert (cols["entry_id"], cols["account_id"], cols["amount"], cols["balance_after"]) == (b"t1", b"a", b"-3", b"7")


def test_a_row_with_a_stray_tab_is_formatted_again_on_the_reference_path() -> None:
    good = b"\t".join([b"id1", b"1700000000123", b"debit", b"-1"] + [b""] * (len(ROW_FIELDS) - 4))
    stray = b"\t".join([b"id2", b"1700000000123", b"debit", b"-1\tb"] + [b""] * (len(ROW_FIELDS) - 4))
    payload = copy_payload([(0, b"1-0", [ROW_FIELD, good]), (0, b"1-1", [ROW_FIELD, stray])], "ns")
    assert payload.count(b"\n") == 2 and payload.count(b"\t") == 2 * (len(COPY_COLUMNS) - 1)


def test_values_that_need_copy_escapes_arrive_exactly(ledger_store: RedisStore) -> None:
    nasty = "tab\there\nnew line\\N back\\slash\r\u00e9"
    ledger_store.add_credits("user\\with\tbackslash", 7, metadata=CreditMetadata(reference_id=nasty),
                             idempotency_key=nasty)
    ledger_store.add_credits("plain", 1)
    f = LedgerFlusher(ledger_store, DATABASE_URL)
    assert b"\\" in copy_payload(raw_entries(f), ledger_store.settings.namespace)  # escaped
    assert f.drain() == 2
    got = rows(ledger_store, "SELECT account_id, idempotency_key, metadata, member FROM {t} ORDER BY amount DESC")
    assert got[0] == ("user\\with\tbackslash", nasty, {"reference_id": nasty}, None)
    assert got[1][0] == "plain"


def test_trim_point_is_below_the_oldest_pending_entry_else_past_the_last_delivered() -> None:
    assert trim_point(b"17-3", {"pending": 2, "min": b"12-0"}) == "12-0"
    assert trim_point(b"17-3", {"pending": 0, "min": None}) == "17-4"
    assert trim_point("0-0", None) == "0-1"


def test_two_flushers_at_once_store_every_entry_exactly_once_while_decisions_run(ledger_store: RedisStore) -> None:
    for i in range(30):
        ledger_store.add_credits(f"u{i}", 10_000)
    flushers = [LedgerFlusher(ledger_store, DATABASE_URL, batch=40, block_ms=5, consumer=f"f{n}") for n in (1, 2)]
    stop = threading.Event()
    threads = [threading.Thread(target=f.run, args=(stop,)) for f in flushers]
    for t in threads:
        t.start()
    made = 30
    for _ in range(40):
        for i in range(30):
            assert ledger_store.charge(f"u{i}", 1, "x").error is None
            made += 1
    deadline = time.time() + 30
    while ledger_store.ledger_lag().backlog and time.time() < deadline:
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(10)
    assert rows(ledger_store) == [(made, made)]
    assert all(f.flushed > 0 for f in flushers)  # both took part
    assert sum(f.flushed for f in flushers) == made
    lag = ledger_store.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_backlog_limit_refuses_or_accepts_by_policy_until_the_flusher_drains(redis_client: Any, policy: str) -> None:
    schema = "t_" + uuid.uuid4().hex[:10]
    s = RedisStore.from_url(REDIS_URL, namespace=new_namespace(), ledger_schema=schema, ledger_max_backlog=5,
                            ledger_backlog_policy=policy)
    try:
        migrate(DATABASE_URL, schema)
        s.add_credits("u", 100)
        results = [s.charge("u", 1, "x").error for _ in range(6)]
        full = "ledger_backlog_full" if policy == "closed" else None
        assert results == [None] * 4 + [full] * 2
        assert s.add_credits("u", 1).new_balance == 101 - results.count(None)  # credits are never refused
        assert s.get_balance("u").balance == 101 - results.count(None)
        LedgerFlusher(s, DATABASE_URL).drain()
        assert s.ledger_lag().backlog == 0
        assert s.charge("u", 1, "x").error is None
    finally:
        drop_namespace(redis_client, s.settings.namespace)
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_cli_status_flush_and_restore(ledger_store: RedisStore, capsys: Any) -> None:
    for i in range(12):
        ledger_store.add_credits(f"u{i}", 100 + i)
    args = ["--redis-url", REDIS_URL, "--namespace", ledger_store.settings.namespace,
            "--database-url", DATABASE_URL, "--ledger-schema", ledger_store.settings.ledger_schema]
    assert cli([*args, "status"]) == 0
    assert "backlog 12 entries" in capsys.readouterr().out
    assert cli([*args, "flush", "--once"]) == 0
    assert "flushed 12 entries" in capsys.readouterr().out
    assert cli([*args, "status"]) == 0
    assert "backlog 0 entries, pending 0, oldest unflushed 0 ms" in capsys.readouterr().out
    drop_namespace(ledger_store.client, ledger_store.settings.namespace)
    assert cli([*args, "restore"]) == 0
    out, err = capsys.readouterr()
    assert "restored 12 accounts" in out
    assert err == ""  # stderr is not a terminal here: no progress bar (tests/test_cli.py draws one on a pty)
    assert [ledger_store.get_balance(f"u{i}").balance for i in range(12)] == [100 + i for i in range(12)]
    assert cli([*args, "reconcile"]) == 0


def test_a_running_flusher_rides_out_postgres_being_away_under_load(ledger_store: RedisStore) -> None:
    for i in range(20):
        ledger_store.add_credits(f"u{i}", 10_000)
    f = LedgerFlusher(ledger_store, "postgresql://postgres@127.0.0.1:1/test", batch=50, block_ms=5)
    stop = threading.Event()
    thread = threading.Thread(target=f.run, args=(stop,))
    thread.start()
    made = 20
    try:
        for _ in range(25):
            for i in range(20):
                assert ledger_store.charge(f"u{i}", 1, "x").error is None  # decisions go on
                made += 1
        assert f.failures > 0 and rows(ledger_store)[0][0] == 0
        assert sum(len(b) for b in f.unwritten) <= 2 * 50  # what it holds in memory stays bounded
        f.database_url = DATABASE_URL  # Postgres is back
        deadline = time.time() + 30
        while ledger_store.ledger_lag().backlog and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert rows(ledger_store) == [(made, made)]
    assert ledger_store.ledger_lag().pending == 0


def cli_args(store: RedisStore) -> list[str]:
    return ["--redis-url", REDIS_URL, "--namespace", store.settings.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", store.settings.ledger_schema]


def test_flush_once_with_two_processes_stores_every_entry_exactly_once(ledger_store: RedisStore,
                                                                      capsys: Any) -> None:
    made = workload(ledger_store, n_users=30)
    assert cli([*cli_args(ledger_store), "flush", "--once", "--processes", "2", "--batch", "50"]) == 0
    assert f"flushed {made} entries" in capsys.readouterr().out
    assert rows(ledger_store) == [(made, made)]
    lag = ledger_store.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)


def test_flush_processes_keep_flushing_until_sigterm_then_exit_cleanly(ledger_store: RedisStore) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ducto_redis.cli", *cli_args(ledger_store), "flush",
                             "--processes", "2", "--batch", "20"], stdout=subprocess.PIPE, text=True)
    try:
        made = 0
        for i in range(200):
            ledger_store.add_credits(f"u{i % 40}", 5)
            made += 1
        deadline = time.time() + 60
        while rows(ledger_store)[0][0] < made and time.time() < deadline:
            time.sleep(0.1)
        assert rows(ledger_store) == [(made, made)]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert f"flushed {made} entries" in out


def test_migrate_gives_an_older_schema_the_cheap_indexes(redis_client: Any) -> None:
    """The flusher pays for every index on every row: migrate replaces the older B-trees (per account;
    (namespace, ts)) with a BRIN index on ts, and keeps the primary key and the team-member index."""
    schema = "t_" + uuid.uuid4().hex[:10]
    try:
        migrate(DATABASE_URL, schema)
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"CREATE INDEX ledger_account_order ON {schema}.ledger (namespace, account_id, stream_ms)")
            c.execute(f"CREATE INDEX ledger_spend_ts ON {schema}.ledger (namespace, ts)")
        migrate(DATABASE_URL, schema)
        with psycopg.connect(DATABASE_URL) as c:
            sql = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'ledger'"
            got: dict[str, str] = dict(c.execute(sql, (schema,)).fetchall())
        assert sorted(got) == ["ledger_pkey", "ledger_team_member", "ledger_ts_brin"]
        assert "USING brin (ts)" in got["ledger_ts_brin"]
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
