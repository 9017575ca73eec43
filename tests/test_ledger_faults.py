"""The ledger never stops (issue 16): poison entries, Redis restarts, PostgreSQL away, dead flushers.

Real servers only. The Redis that restarts is a redis-server these tests start; PostgreSQL "going
away" is a TCP proxy in front of the shared one that the test cuts. Nothing shared is stopped.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace
from fault_support import RestartableRedis, TcpProxy
from psycopg.conninfo import conninfo_to_dict

from ducto_redis import RedisStore
from ducto_redis.cli import main as cli
from ducto_redis.layout import ROW_COLUMNS as ROW_FIELDS
from ducto_redis.ledger.copy_text import ROW_FIELD
from ducto_redis.ledger.flusher import GROUP, LedgerFlusher, migrate
from ducto_redis.ledger.quarantine import TooManyRefused, quarantine_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count(schema: str, namespace: str, table: str = "ledger") -> int:
    """Rows of a namespace (0 while the table does not exist yet)."""
    with psycopg.connect(DATABASE_URL) as c:
        try:
            row = c.execute(f"SELECT COUNT(*) FROM {schema}.{table} WHERE namespace = %s", (namespace,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def wait_for(check: Any, seconds: float = 30, what: str = "") -> None:
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def row(**values: bytes) -> bytes:
    """A ledger row as the scripts write it (field ``q``: the values in ROW_FIELDS order, tab-separated)."""
    values.setdefault("ts", str(int(time.time() * 1000)).encode())
    values.setdefault("id", uuid.uuid4().hex.encode())
    values.setdefault("ak", b"u")
    values.setdefault("kind", b"debit")
    return b"\t".join(values.get(f, b"") for f in ROW_FIELDS)


def cjk(n: int) -> bytes:
    rnd = random.Random(7)
    return "".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(n)).encode()


POISON = {  # an entry PostgreSQL refuses -> a word of the reason it gives
    "nul": (row(acct=b"evil\x00id", amount=b"-5"), "0x00"),
    "bad utf-8": (row(acct=b"\xff\xfe", amount=b"-1"), "UTF8"),
    "not a number": (row(acct=b"a", amount=b"lots"), "bigint"),
    "bad json": (row(acct=b"b", amount=b"-1", meta=b"{not json"), "json"),
    "index row too large": (row(ak=b"t", acct=b"team", member=cjk(2000), amount=b"-1"), "index row"),
}


def test_a_poison_entry_is_quarantined_and_every_entry_behind_it_is_stored(ledger_store: RedisStore,
                                                                            capsys: Any) -> None:
    """Issue 16.1: one entry PostgreSQL refuses stopped all flushing (0 of 502 rows stored). Entries
    injected straight into a stream (XADD), as another client or an older version could write them."""
    s = ledger_store
    stream = s.core.keys.ledger_stream(3)
    for poison, _ in POISON.values():
        s.client.xadd(stream, {ROW_FIELD: poison})  # the bytes as they are
    s.add_credits("u", 10_000)
    for _ in range(500):
        assert s.charge("u", 1, "x").error is None
    f = LedgerFlusher(s, DATABASE_URL)
    writes = [0]
    store = getattr(f, "_store_idempotently", None)

    def counted(cur: Any, payload: bytes) -> None:
        writes[0] += 1
        assert store is not None
        store(cur, payload)

    if store is not None:  # count the COPYs of the idempotent path
        f._store_idempotently = counted  # type: ignore[method-assign]
    assert f.drain(timeout=5) == 506
    ns, schema = s.settings.namespace, s.settings.ledger_schema
    assert count(schema, ns) == 501  # every good entry, once
    assert f.quarantined == count(schema, ns, "ledger_quarantine") == len(POISON)
    assert writes[0] <= 2 * len(POISON) * 10  # found by halving the batch, not row by row (506 rows)
    with psycopg.connect(DATABASE_URL) as c:
        got = c.execute(f"SELECT refused_because, raw, account_id, shard FROM {schema}.ledger_quarantine "
                        "ORDER BY stream_ms, stream_seq").fetchall()
    for (reason, raw, _account, shard), (poison, word) in zip(got, POISON.values(), strict=True):
        assert word.lower() in reason.lower(), (reason, word)
        # the raw entry, exactly (after its id and time, which the flusher writes as COPY text)
        assert poison.split(b"\t", 2)[2] in bytes(raw) and shard == 3
    assert got[0][2] == "evil\ufffdid"  # readable columns kept, the NUL shown as U+FFFD
    lag = s.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)  # acknowledged and trimmed like the rest
    summary = quarantine_summary(DATABASE_URL, schema, ns)
    assert summary.count == len(POISON) and summary.latest_reason
    args = ["--redis-url", REDIS_URL, "--namespace", ns, "--database-url", DATABASE_URL, "--ledger-schema", schema]
    assert cli([*args, "status"]) == 0
    assert f"quarantined {len(POISON)} entries" in capsys.readouterr().out


def test_a_broken_table_is_not_mistaken_for_poison_entries(ledger_store: RedisStore) -> None:
    """When PostgreSQL refuses most rows, the table is wrong, not the entries: nothing is set aside,
    nothing acknowledged; once the table is fixed every entry is stored."""
    s = ledger_store
    schema = s.settings.ledger_schema
    with psycopg.connect(DATABASE_URL, autocommit=True) as c:
        c.execute(f"ALTER TABLE {schema}.ledger ADD CONSTRAINT broken CHECK (amount > 1000000)")
    for i in range(40):
        s.add_credits(f"u{i}", 5)
    f = LedgerFlusher(s, DATABASE_URL)
    with pytest.raises(TooManyRefused):
        f.flush_once()
    assert count(schema, s.settings.namespace, "ledger_quarantine") == 0 and f.quarantined == 0
    assert s.ledger_lag().backlog == 40
    with psycopg.connect(DATABASE_URL, autocommit=True) as c:
        c.execute(f"ALTER TABLE {schema}.ledger DROP CONSTRAINT broken")
    f.drain()
    assert count(schema, s.settings.namespace) == 40 and s.ledger_lag().backlog == 0


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    yield server
    server.stop()


def flush_process(redis_url: str, namespace: str, database_url: str, schema: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ducto_redis.cli", "--redis-url", redis_url, "--namespace", namespace,
         "--database-url", database_url, "--ledger-schema", schema, "flush", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


@pytest.fixture
def schema() -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:10]
    migrate(DATABASE_URL, name)
    yield name
    with psycopg.connect(DATABASE_URL, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_flushers_recover_their_consumer_group_after_a_redis_restart(restartable_redis: RestartableRedis,
                                                                     schema: str) -> None:
    """Issue 16.2: a flusher that stayed up across a Redis restart logged NOGROUP forever, in
    `ducto-redis flush` and in `store.start_flusher()` threads alike."""
    in_thread = RedisStore.from_url(restartable_redis.url, namespace=new_namespace(), ledger_schema=schema,
                                    database_url=DATABASE_URL)
    in_cli = RedisStore.from_url(restartable_redis.url, namespace=new_namespace(), ledger_schema=schema)
    flusher = in_thread.start_flusher(block_ms=20)
    proc = flush_process(restartable_redis.url, in_cli.settings.namespace, DATABASE_URL, schema)
    try:
        for s in (in_thread, in_cli):
            for i in range(20):
                s.add_credits(f"u{i}", 5)
        for s in (in_thread, in_cli):
            wait_for(lambda s=s: count(schema, s.settings.namespace) == 20, what="the first entries")
        restartable_redis.restart()  # every key gone, the consumer groups with them
        for s in (in_thread, in_cli):
            for i in range(30):
                s.add_credits(f"v{i}", 5)
        for s in (in_thread, in_cli):
            wait_for(lambda s=s: count(schema, s.settings.namespace) == 50, what="the entries after the restart")
        assert flusher.regrouped >= 1
    finally:
        in_thread.stop_flusher()
        code, _out, err = stop(proc)
    assert code == 0, err
    assert "re-creating it" in err  # it said what happened


def test_flush_starts_and_waits_while_postgresql_is_down_then_stores_everything(ledger_store: RedisStore) -> None:
    """Issue 16.3: `ducto-redis flush` ran `migrate` first and exited with a traceback while
    PostgreSQL was down. Now it starts, says what it waits for, and flushes once it is back; and
    a PostgreSQL cut mid-run loses and doubles nothing."""
    s = ledger_store
    target = conninfo_to_dict(DATABASE_URL)
    proxy = TcpProxy((str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432)), up=False)
    schema = "t_" + uuid.uuid4().hex[:10]  # not created yet: the flusher must make it
    url = proxy.url(DATABASE_URL)
    for i in range(25):
        s.add_credits(f"u{i}", 5)
    proc = flush_process(REDIS_URL, s.settings.namespace, url, schema)
    thread_store = RedisStore.from_url(REDIS_URL, namespace=new_namespace(), ledger_schema=schema, database_url=url)
    try:
        thread_store.add_credits("t", 1)
        flusher = thread_store.start_flusher(block_ms=20)  # raised at once before, Postgres being down
        time.sleep(2)
        assert proc.poll() is None  # still running, waiting
        assert flusher.failures > 0
        proxy.up()
        wait_for(lambda: count(schema, s.settings.namespace) == 25, what="the backlog after PostgreSQL is back")
        wait_for(lambda: count(schema, thread_store.settings.namespace) == 1, what="the thread's entry")
        proxy.down()  # cut again, connections and all, while decisions go on
        for i in range(25):
            s.add_credits(f"v{i}", 5)
        time.sleep(1)
        proxy.up()
        wait_for(lambda: count(schema, s.settings.namespace) == 50, what="the entries made while it was cut")
    finally:
        thread_store.stop_flusher()
        code, _out, err = stop(proc)
        proxy.close()
        drop_namespace(s.client, thread_store.settings.namespace)
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    assert code == 0, err
    assert f"-> PostgreSQL 127.0.0.1:{proxy.port}/" in err  # where it copies to, when it starts
    assert "waiting for PostgreSQL, retrying in" in err and f"port {proxy.port} failed" in err  # what it waits for
    assert "Traceback" not in err
    assert s.ledger_lag().backlog == 0


def consumers(store: RedisStore) -> dict[str, int]:
    """Consumers of the flusher group over every stream -> pending entries."""
    out: dict[str, int] = {}
    for stream in store.core.keys.all_ledger_streams():
        if not store.client.exists(stream):
            continue
        for c in store.client.xinfo_consumers(stream, GROUP):
            out[c["name"]] = out.get(c["name"], 0) + int(c["pending"])
    return out


def test_flush_once_takes_over_a_dead_flushers_entries_or_says_what_it_left(ledger_store: RedisStore,
                                                                           capsys: Any) -> None:
    """Issue 16.6: `flush --once` reported success with entries left pending after a crash (the
    claim time was fixed at 30 s), and dead consumers were never removed from the group."""
    s = ledger_store
    for i in range(60):
        s.add_credits(f"u{i}", 5)
    dead = LedgerFlusher(s, DATABASE_URL, consumer="crashed")
    dead.ensure_groups()
    assert len(dead._read(block=False).entries) == 60  # delivered, then the process died
    args = ["--redis-url", REDIS_URL, "--namespace", s.settings.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", s.settings.ledger_schema]
    assert cli([*args, "flush", "--once"]) == 9  # it cannot take them yet: it says so (not done yet)
    out = capsys.readouterr().out
    assert "flushed 0 entries" in out and "60 entries still pending on other consumers" in out
    assert "--claim-idle-ms" in out
    assert cli([*args, "flush", "--once", "--claim-idle-ms", "0"]) == 0
    assert "flushed 60 entries" in capsys.readouterr().out
    assert count(s.settings.ledger_schema, s.settings.namespace) == 60
    lag = s.ledger_lag()
    assert (lag.backlog, lag.pending) == (0, 0)
    for _ in range(5):  # restarts leave no consumer behind: each removes itself, and the dead are removed
        s.add_credits("w", 1)
        assert cli([*args, "flush", "--once"]) == 0
    assert consumers(s) == {}


def test_a_running_flusher_claims_and_removes_a_dead_consumer(ledger_store: RedisStore) -> None:
    s = ledger_store
    for i in range(30):
        s.add_credits(f"u{i}", 5)
    dead = LedgerFlusher(s, DATABASE_URL, consumer="crashed")
    dead.ensure_groups()
    dead._read(block=False)
    f = LedgerFlusher(s, DATABASE_URL, consumer="alive", claim_idle_ms=300, block_ms=20)
    stop_event = threading.Event()
    thread = threading.Thread(target=f.run, args=(stop_event,))
    thread.start()
    try:
        wait_for(lambda: count(s.settings.ledger_schema, s.settings.namespace) == 30, what="the claimed entries")
        wait_for(lambda: "crashed" not in consumers(s), what="the dead consumer's removal")
    finally:
        stop_event.set()
        thread.join(10)
        f.stop()
    assert consumers(s) == {} and f.reaped >= 1
