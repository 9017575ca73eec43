"""The ledger never lies (issue 16): restore cannot lose data by accident; reconcile walks both sides.

Real Redis and PostgreSQL, each test in its own namespace and schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace, restorable_state, snapshot
from test_ledger import workload

from ducto_redis import RedisStore
from ducto_redis.cli import main as cli
from ducto_redis.layout import Account
from ducto_redis.ledger.flusher import LedgerFlusher
from ducto_redis.ledger.recovery import RestoreRefused


def cli_args(store: RedisStore, namespace: str | None = None) -> list[str]:
    return ["--redis-url", REDIS_URL, "--namespace", namespace or store.settings.namespace,
            "--database-url", DATABASE_URL, "--ledger-schema", store.settings.ledger_schema]


def flush(store: RedisStore) -> None:
    LedgerFlusher(store, DATABASE_URL).drain()


def test_restore_refuses_to_roll_back_a_decision_not_yet_flushed(ledger_store: RedisStore, capsys: Any) -> None:
    """Issue 16.4: a charge still in the stream, then `restore`, and the balance was as if the charge
    never happened (and `reconcile` had said `0 drift`)."""
    s = ledger_store
    s.add_credits("u", 100)
    flush(s)
    assert s.charge("u", 30, "x").error is None  # in Redis and its stream, not in PostgreSQL yet
    before = snapshot(s)
    with pytest.raises(RestoreRefused) as info:
        s.restore_from_ledger()
    assert "1 ledger entries" in str(info.value) and "not in PostgreSQL yet" in str(info.value)
    report = s.reconcile_ledger()
    assert report.drift == {} and report.not_yet_flushed == {"u:u": 1} and report.exit_code == 9
    assert cli([*cli_args(s), "restore"]) == 1  # the answer is no, and why
    assert "not in PostgreSQL yet" in capsys.readouterr().out
    assert snapshot(s) == before and s.get_balance("u").balance == 70  # nothing rolled back
    flush(s)
    with pytest.raises(RestoreRefused, match="live keys"):  # flushed, but the namespace is live
        s.restore_ledger()
    assert s.restore_ledger(force=True).total_accounts == 1  # told to: the ledger holds the charge now
    assert s.get_balance("u").balance == 70 and s.reconcile_ledger().agrees
    drop_namespace(s.client, s.settings.namespace)  # Redis lost everything: nothing stands in the way
    assert cli([*cli_args(s), "restore"]) == 0
    assert s.get_balance("u").balance == 70


def test_restore_with_force_restores_what_the_ledger_holds(ledger_store: RedisStore) -> None:
    s = ledger_store
    s.add_credits("u", 100)
    flush(s)
    s.charge("u", 30, "x")
    report = s.restore_ledger(force=True)  # the operator accepted losing the unflushed charge
    assert report.written and report.unflushed == 1 and not report.refusals
    assert s.get_balance("u").balance == 100


def test_a_dry_run_reports_what_restore_would_write_and_writes_nothing(ledger_store: RedisStore,
                                                                      capsys: Any) -> None:
    s = ledger_store
    workload(s)
    flush(s)
    drop_namespace(s.client, s.settings.namespace)  # Redis lost everything
    empty = snapshot(s)
    report = s.restore_ledger(dry_run=True)
    assert not report.written and not report.refusals and snapshot(s) == empty
    assert cli([*cli_args(s), "restore", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would restore {report.total_accounts} accounts" in out and "holds" in out
    assert snapshot(s) == empty
    restored = s.restore_ledger()  # the real one writes exactly what the dry run said
    assert (restored.accounts, restored.holds, restored.caps, restored.members) == (
        report.accounts, report.holds, report.caps, report.members)
    keys = s.core.keys
    users = [Account.decode(s.client.hgetall(keys.user(f"user-{i}").account), team=False) for i in range(20)]
    assert report.accounts["users"] == 20 and report.accounts["teams"] == 1
    (team_key,) = [k for k in s.client.scan_iter(match=f"{{{s.settings.namespace}:*}}:t:*") if ":i" not in k]
    team = Account.decode(s.client.hgetall(team_key), team=True)
    assert report.members == len(team.members) == 20
    caps = [c for a in users for c in (a.state.day_cap, a.state.month_cap,
                                       *(x for w in a.models.values() for x in (w.day_cap, w.month_cap))) if c]
    assert report.caps == len(caps) == 5
    assert report.holds == sum(len(a.holds) for a in users) + len(team.holds)


def test_a_drill_restores_into_another_namespace_while_the_live_one_runs(ledger_store: RedisStore,
                                                                         capsys: Any) -> None:
    s = ledger_store
    workload(s, n_users=8)
    flush(s)
    s.charge("user-1", 1, "x")  # the live namespace keeps deciding; this one is not flushed yet
    live = snapshot(s)
    drill = new_namespace()
    try:
        assert cli([*cli_args(s), "restore", "--target-namespace", drill]) == 0
        out = capsys.readouterr().out
        assert f"into {drill} (from the ledger of {s.settings.namespace})" in out
        assert "1 entries of" in out  # the note: the ledger does not hold that charge yet
        assert snapshot(s) == live  # the live namespace was only read
        drilled = RedisStore.from_url(REDIS_URL, namespace=drill, ledger_schema=s.settings.ledger_schema,
                                      database_url=DATABASE_URL)
        report = drilled.reconcile_ledger(ledger_namespace=s.settings.namespace)
        assert report.agrees and report.ledger_accounts == report.redis_accounts > 8
        assert cli([*cli_args(s, drill), "reconcile", "--ledger-namespace", s.settings.namespace]) == 0
        capsys.readouterr()
        with pytest.raises(RestoreRefused, match="live keys"):  # a second drill into the same namespace
            s.restore_ledger(target_namespace=drill)
        drilled.charge("user-2", 1, "x")  # a drill namespace is a namespace like any other
    finally:
        drop_namespace(s.client, drill)


@pytest.fixture
def funded(ledger_store: RedisStore) -> Iterator[RedisStore]:
    for i in range(51):
        ledger_store.add_credits(f"u{i}", 100 + i)
    yield ledger_store


def test_reconcile_walks_the_accounts_redis_holds_and_the_ledger_does_not(funded: RedisStore, capsys: Any) -> None:
    """Issue 16.5: 51 funded accounts in Redis, 0 rows in PostgreSQL: reconcile printed `0 drift`."""
    s = funded
    assert cli([*cli_args(s), "reconcile"]) == 9  # not drift, but not judged either: flush first
    out = capsys.readouterr().out
    assert "51 accounts not yet flushed" in out and "0 drift" in out
    report = s.reconcile_ledger()
    assert report.drift == {} and len(report.not_yet_flushed) == 51 and report.redis_accounts == 51
    for stream in s.core.keys.all_ledger_streams():  # the entries never reach the ledger
        s.client.delete(stream)
    assert len(s.reconcile_with_ledger()) == 51
    report = s.reconcile_ledger()
    assert len(report.drift) == 51 and report.exit_code == 1
    assert report.drift["u:u7"] == ["in Redis but not in the ledger: balance=107 held=0"]
    assert cli([*cli_args(s), "reconcile"]) == 1
    assert "51 accounts drift" in capsys.readouterr().out


def test_reconcile_tells_not_yet_flushed_apart_from_drift(funded: RedisStore) -> None:
    s = funded
    flush(s)
    assert s.reconcile_ledger().agrees
    s.charge("u1", 5, "x")  # not flushed yet: not drift
    s.client.hset(s.core.keys.user("u2").account, "b", "999999")  # drift
    report = s.reconcile_ledger()
    assert report.not_yet_flushed == {"u:u1": 1}
    assert list(report.drift) == ["u:u2"] and "balance" in report.drift["u:u2"][0]
    assert s.reconcile_with_ledger() == report.drift
    flush(s)
    report = s.reconcile_ledger()
    assert report.not_yet_flushed == {} and list(report.drift) == ["u:u2"]


def test_restore_then_reconcile_agree_on_everything_after_losing_redis(ledger_store: RedisStore) -> None:
    s = ledger_store
    workload(s)
    flush(s)
    before = restorable_state(s)
    drop_namespace(s.client, s.settings.namespace)
    assert s.reconcile_ledger().exit_code == 1  # every account is missing from Redis now
    s.restore_ledger()
    assert restorable_state(s) == before
    assert s.reconcile_ledger().agrees
