"""Seed notebook 06 (teams) runs unchanged but for its setup line, and its prose holds."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from ducto_redis import RedisStore

NOTEBOOK = Path(__file__).parent / "seeds" / "notebook_06.py"


def test_notebook_06_runs_and_every_claim_of_its_prose_holds(store: RedisStore) -> None:
    source = NOTEBOOK.read_text(encoding="utf-8").replace("store = MemoryStore()\n", "store = __backend__\n")
    ns: dict[str, Any] = {"__backend__": store, "__name__": "notebook_06"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(NOTEBOOK), "exec"), ns)  # the notebook's own asserts run too
    team_id, members, capped = ns["team"].team_id, ns["members"], ns["capped_user"]
    # three members registered, the pool intact
    assert (ns["bal"].balance, ns["bal"].member_count) == (100_000, 3)
    # the team pays, not the member: personal balances stay 0
    assert ns["res"].team_balance_after == 95_000 and ns["res"].error is None
    assert all(store.get_balance(u).balance == 0 for u in [*members, capped])
    # overdraft refused, the pool untouched
    assert ns["res2"].error == "insufficient_team_balance" and ns["res2"].team_balance_after == 95_000
    # the member cap: exactly 3 000 passes, 1 more is refused while the pool has plenty
    assert ns["res3"].error is None and ns["res3"].team_balance_after == 92_000
    assert ns["res4"].error == "spend_cap_exceeded"
    final = store.get_team_balance(team_id)
    assert (final.balance, final.member_count) == (92_000, 4)
    # attribution: who spent what
    spent = {m.user_id: m.total_spent for m in store.get_team_members(team_id)}
    assert spent == {members[0]: 5_000, members[1]: 0, members[2]: 0, capped: 3_000}
    assert "Verification passed" in out.getvalue()
