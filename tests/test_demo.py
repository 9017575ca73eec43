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
    ):
        assert outcome in out, outcome
