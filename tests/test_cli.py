"""The `ducto-redis` command as a user meets it: options where they are put, --version, --json,
one-line errors with their exit codes, completion, tables, progress bars on a terminal only."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import DATABASE_URL, REDIS_URL, advance, drop_namespace, new_namespace

from ducto_redis import RedisStore, __version__
from ducto_redis.cli import ExitCode, cli
from ducto_redis.ledger.flusher import LedgerFlusher

CLOSED_PORT = "redis://127.0.0.1:1/0"
PG_DOWN = "postgresql://postgres@127.0.0.1:1/test"


def ducto(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command's entry point, in a process of its own."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUCTO_")}
    return subprocess.run([sys.executable, "-m", "ducto_redis.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=120)


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def ledger_args(store: RedisStore) -> list[str]:
    return ["--redis-url", REDIS_URL, "--namespace", store.settings.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", store.settings.ledger_schema]


@pytest.fixture
def seeded(redis_client: Any) -> Any:
    ns = new_namespace()
    store = RedisStore.from_url(REDIS_URL, namespace=ns)
    store.add_credits("ana", 1_200, type="purchase")
    store.reserve_credits("ana", 200, "job")
    yield store
    drop_namespace(redis_client, ns)
    store.close()


# ── options, version, JSON ────────────────────────────────────────────


def test_shared_options_work_before_or_after_the_subcommand(seeded: RedisStore) -> None:
    ns = seeded.settings.namespace
    for args in (["--redis-url", REDIS_URL, "--namespace", ns, "--json", "balance", "ana"],
                 ["balance", "ana", "--namespace", ns, "--redis-url", REDIS_URL, "--json"],
                 ["--redis-url", REDIS_URL, "balance", "--json", "ana", "--namespace", ns]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["balance"] == 1_200, args


def test_an_option_after_a_nested_subcommand_is_honoured(tmp_path: Path, seeded: RedisStore) -> None:
    ns = seeded.settings.namespace
    r = invoke("pricing", "get", "--redis-url", REDIS_URL, "--namespace", ns)
    assert r.exit_code == 1  # nothing published in this namespace
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"models": {"m": "input_tokens * 1"}}))
    assert invoke("pricing", "set", str(p), "--namespace", ns, "--redis-url", REDIS_URL).exit_code == 0
    assert seeded.get_active_pricing() is not None


def test_the_environment_gives_the_settings_and_an_option_beats_it(seeded: RedisStore) -> None:
    ns = seeded.settings.namespace
    r = ducto("balance", "ana", "--json", env={"DUCTO_REDIS_URL": REDIS_URL, "DUCTO_NAMESPACE": ns})
    assert json.loads(r.stdout)["balance"] == 1_200
    r = ducto("balance", "ana", "--json", "--namespace", ns, env={"DUCTO_REDIS_URL": REDIS_URL,
                                                                  "DUCTO_NAMESPACE": "elsewhere"})
    assert json.loads(r.stdout)["balance"] == 1_200


def test_version() -> None:
    r = ducto("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"ducto-redis {__version__}")


def test_every_read_command_speaks_json(tmp_path: Path, seeded: RedisStore, ledger_store: RedisStore) -> None:
    ns = ["--redis-url", REDIS_URL, "--namespace", seeded.settings.namespace]
    b = json.loads(invoke(*ns, "balance", "ana", "--json").output)
    assert (b["balance"], b["held"], b["available"], b["lifetime_purchased"]) == (1_200, 200, 1_000, 1_200)
    ledger_store.add_credits("u", 5)
    st = json.loads(invoke(*ledger_args(ledger_store), "status", "--json").output)
    assert st["backlog"] == 1 and sum(st["per_shard"].values()) == 1 and st["shards"] == 64
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    rec = json.loads(invoke(*ledger_args(ledger_store), "reconcile", "--json").output)
    assert (rec["drift"], rec["accounts_drifting"], rec["not_yet_flushed"]) == ({}, 0, {})
    sw = json.loads(invoke(*ns, "sweep-credits", "--dry-run", "--json").output)
    assert (sw["expired_count"], sw["dry_run"]) == (0, True)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"models": {"m": "input_tokens * 1"}}))
    assert json.loads(invoke("pricing", "validate", str(p), "--json").output)["valid"] is True
    assert invoke(*ns, "pricing", "set", str(p), "--json").exit_code == 0
    assert json.loads(invoke(*ns, "pricing", "get", "--json").output)["version"] == 1


# ── tables ────────────────────────────────────────────────────────────


def test_balance_is_a_table(seeded: RedisStore) -> None:
    out = invoke("balance", "ana", "--redis-url", REDIS_URL, "--namespace", seeded.settings.namespace).output
    header = next(line for line in out.splitlines() if "available" in line)
    assert [w.strip() for w in header.strip("│┃ ").split("┃")] == ["balance", "held", "available",
                                                                    "lifetime purchased"]
    assert [w.strip() for w in out.splitlines()[-2].strip("│ ").split("│")] == ["1,200", "200", "1,000", "1,200"]


def test_status_shows_each_shard_with_a_backlog(ledger_store: RedisStore) -> None:
    users = [f"u{i}" for i in range(40)]
    for u in users:
        ledger_store.add_credits(u, 1)
    lag = ledger_store.ledger_lag()
    out = invoke(*ledger_args(ledger_store), "status").output
    assert f"({len(lag.per_shard)} of 64 shards hold entries)" in out
    for shard, n in lag.per_shard.items():
        assert any(line.split("│")[1:3] and [c.strip() for c in line.split("│")[1:3]] == [str(shard), str(n)]
                   for line in out.splitlines()), (shard, n)
    assert "backlog 40 entries, pending 0" in out


def test_reconcile_lists_drift_in_a_table_and_exits_1(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("ana", 10)
    LedgerFlusher(ledger_store, DATABASE_URL).drain()
    ledger_store.client.hset(ledger_store.core.keys.user("ana").account, "b", "99")
    r = invoke(*ledger_args(ledger_store), "reconcile")
    assert r.exit_code == ExitCode.NO and r.exit_code == 1
    row = next(line for line in r.output.splitlines() if "u:ana" in line)
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["u:ana", "balance", "redis=99 ledger=10"]
    assert r.output.splitlines()[-1] == "1 accounts drift"


# ── errors: one line, a distinct documented code, tracebacks only with --debug ──


def test_each_failure_is_one_line_with_its_own_exit_code(tmp_path: Path) -> None:
    cases = {
        "closed Redis port": (["status", "--redis-url", CLOSED_PORT], ExitCode.REDIS_DOWN, "cannot reach Redis"),
        "malformed Redis URL": (["status", "--redis-url", "redis//nope"], ExitCode.CONFIG, "malformed Redis URL"),
        "PostgreSQL down": (["migrate", "--database-url", PG_DOWN], ExitCode.POSTGRES_DOWN,
                            "cannot reach PostgreSQL"),
        "bad DUCTO_DATABASE_URL": (["migrate"], ExitCode.DATABASE, "database URL is malformed"),
        "missing pricing file": (["pricing", "validate", str(tmp_path / "nope.json")], ExitCode.NO_FILE,
                                 "cannot read"),
        "flush --batch 0": (["flush", "--batch", "0"], ExitCode.USAGE, "'--batch': 0 is not in the range"),
    }
    codes = set()
    for what, (args, code, message) in cases.items():
        r = ducto(*args, env={"DUCTO_DATABASE_URL": "not a url"})
        assert r.returncode == code, (what, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("ducto-redis: "), (what, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (what, r.stderr)
        codes.add(r.returncode)
    assert len(codes) == len(cases)


def test_unknown_database_role_and_missing_ledger_table_say_so() -> None:
    r = ducto("reconcile", "--database-url", "postgresql://nobody-here@127.0.0.1:5432/test")
    assert (r.returncode, r.stderr.count("\n")) == (ExitCode.DATABASE, 1)
    assert "PostgreSQL refused the database URL" in r.stderr
    r = ducto("reconcile", "--database-url", DATABASE_URL, "--ledger-schema", "no_such_schema_here",
              "--namespace", new_namespace())
    assert r.returncode == ExitCode.DATABASE and "run `ducto-redis migrate` first" in r.stderr


def test_debug_shows_the_traceback() -> None:
    r = ducto("status", "--redis-url", CLOSED_PORT, "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConnectionError" in r.stderr


def test_a_malformed_setting_from_the_environment_names_the_field() -> None:
    r = ducto("status", env={"DUCTO_NAMESPACE": "has space"})
    assert r.returncode == ExitCode.CONFIG and "namespace" in r.stderr and r.stderr.count("\n") == 1


# ── completion ────────────────────────────────────────────────────────


def test_shell_completion_completes_commands_and_options() -> None:
    assert "_DUCTO_REDIS_COMPLETE" in ducto("completion", "bash").stdout
    env = {"_DUCTO_REDIS_COMPLETE": "bash_complete", "COMP_WORDS": "ducto-redis sta", "COMP_CWORD": "1"}
    assert "plain,status" in ducto(env=env).stdout.splitlines()
    env = {"_DUCTO_REDIS_COMPLETE": "bash_complete", "COMP_WORDS": "ducto-redis flush --onc", "COMP_CWORD": "2"}
    assert "plain,--once" in ducto(env=env).stdout.splitlines()


# ── progress: a bar with rate and ETA on a terminal, nothing otherwise ──


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal; returns its exit code and what it drew."""
    master, slave = pty.openpty()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DUCTO_")}, "TERM": "xterm",
           "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "ducto_redis.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_long_commands_draw_a_progress_bar_with_rate_and_eta_on_a_terminal(ledger_store: RedisStore) -> None:
    n = 30
    for i in range(n):
        ledger_store.add_credits(f"u{i}", 100 + i)
    args = ledger_args(ledger_store)
    code, drawn = on_a_terminal(*args, "flush", "--once")
    assert code == 0 and f"{n}/{n}" in drawn and "entries/s" in drawn and "eta" in drawn, drawn
    for command in ("reconcile", "restore"):  # restore over a live namespace: --force (docs/ledger.md)
        code, drawn = on_a_terminal(*args, command, *(["--force"] if command == "restore" else []))
        assert code == 0 and f"{n}/{n}" in drawn and "accounts/s" in drawn and "eta" in drawn, (command, drawn)
    advance(ledger_store, -3600)  # granted "an hour ago" for 30 minutes: due on the command's clock
    for i in range(n):
        ledger_store.add_credits(f"u{i}", 5, expires_at=datetime.now(timezone.utc) - timedelta(minutes=30))
    code, drawn = on_a_terminal(*args, "sweep-credits")
    assert code == 0 and f"{n}/{n}" in drawn and "accounts/s" in drawn, drawn
    assert ledger_store.get_balance("u0").balance == 100


def test_no_progress_bar_when_stderr_is_not_a_terminal(ledger_store: RedisStore) -> None:
    ledger_store.add_credits("u", 5)
    for command in (["flush", "--once"], ["reconcile"], ["restore", "--force"], ["sweep-credits"]):
        r = ducto(*ledger_args(ledger_store), *command)
        assert r.returncode == 0 and "━" not in r.stderr and "eta" not in r.stderr, (command, r.stderr)
