"""The README's first command, `ducto-redis demo`: the seed scenarios on the embedded store."""

from __future__ import annotations

from typing import Any

from ducto_redis.cli import main as cli


def test_the_demo_runs_the_seed_scenarios_on_the_embedded_store(capsys: Any) -> None:
    assert cli(["demo"]) in (0, None)
    out = capsys.readouterr().out
    for outcome in (
        "store: MemoryStore",
        "second 3000 refused: error=spend_cap_exceeded; balance 47000, held 0",   # notebook 05: deny
        "cap action warn",                                                        # notebook 05: warn
        "replay idempotent=True, balance still 48990",
        "ana spends 5000 from the pool -> 95000",                                 # notebook 06: teams
        "error=insufficient_team_balance; pool still 95000",
        "then 1 more: error=spend_cap_exceeded",
        "= 9 credits; dev's balance 100 -> 91",                                   # priced and charged
        "analytics from the SQLite ledger: 4019 credits consumed by 3 users today",  # the embedded ledger
    ):
        assert outcome in out, outcome


def test_the_demo_restarts_its_file_backed_store_and_finds_every_balance(capsys: Any) -> None:
    assert cli(["demo"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    before = next(ln for ln in lines if ln.startswith("13.")).split("before the restart: ")[1]
    after = next(ln for ln in lines if ln.startswith("14.")).split("rebuilt its state: ")[1]
    assert before == "demo-user balance 47000 held 1000, daily cap 3000/5000; pool 92000 (3 members); dev 91"
    assert after == before + " (the same)"
