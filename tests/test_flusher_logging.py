"""What the flusher tells an operator through `logging`, and the CLI's log levels."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from conftest import DATABASE_URL, REDIS_URL

from ducto_redis import RedisStore
from ducto_redis.ledger.flusher import LedgerFlusher
from ducto_redis.ledger.watch import ThroughputLog, database_label


def test_throughput_is_logged_once_per_interval_with_its_rate(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    watch = ThroughputLog(10.0, backlog=lambda: 42, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="ducto_redis"):
        watch.tick(500)          # 0 s in: nothing yet
        now[0] = 105.0
        watch.tick(900)          # 5 s: still nothing
        now[0] = 110.0
        watch.tick(1_000)        # 10 s: one line
        now[0] = 121.0
        watch.tick(1_000)        # idle for 11 s: a debug line only
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.INFO, "flushed 1,000 entries in the last 10 s (100/s), 1,000 in all; backlog 42"),
        (logging.DEBUG, "flushed 0 entries in the last 11 s (0/s), 1,000 in all; backlog 42"),
    ]


def test_the_database_is_named_without_its_password() -> None:
    assert database_label("postgresql://app:s3cret@db.internal:6432/ledger") == "db.internal:6432/ledger"
    assert "s3cret" not in database_label("host=db password=s3cret dbname=x")


def test_a_running_flusher_says_it_started_what_it_waits_for_and_that_it_stopped(
        ledger_store: RedisStore, caplog: pytest.LogCaptureFixture) -> None:
    ledger_store.add_credits("u", 5)
    flusher = LedgerFlusher(ledger_store, "postgresql://postgres@127.0.0.1:1/test", block_ms=5)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="ducto_redis"):
        thread = threading.Thread(target=flusher.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 10
        while flusher.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        flusher.database_url = DATABASE_URL  # PostgreSQL is back
        while flusher.flushed < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        thread.join()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"started: namespace {ledger_store.settings.namespace!r}, 65 streams -> PostgreSQL 127.0.0.1:1/test" in text
    assert "waiting for ledger entries" in text
    assert "waiting for PostgreSQL, retrying in" in text
    assert "flushing again after" in text
    assert "stopped after 1 entries" in text


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUCTO_")}
    return subprocess.run([sys.executable, "-m", "ducto_redis.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_cli_logs_the_flusher_by_default_and_other_commands_only_when_asked(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("u", 5)
    args = ["--redis-url", REDIS_URL, "--namespace", ledger_store.settings.namespace, "--database-url",
            DATABASE_URL, "--ledger-schema", ledger_store.settings.ledger_schema]
    r = cli(*args, "flush", "--once")
    assert "INFO ducto_redis.flusher: flusher" in r.stderr and "draining: namespace" in r.stderr
    assert "drained 1 entries in" in r.stderr and r.stdout == "flushed 1 entries\n"
    assert cli(*args, "flush", "--once", "--log-level", "warning").stderr == ""
    assert cli(*args, "restore", "--force").stderr == ""  # warnings only, by default
    assert "INFO ducto_redis.ledger: restored 1 accounts" in cli(*args, "restore", "--force", "-v").stderr
    quiet: Any = cli(*args, "restore", "--force", "-v", "--log-level", "error")
    assert quiet.stderr == ""  # --log-level wins over -v
