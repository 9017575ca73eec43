"""Seed notebook 05 (spend caps) runs unchanged but for its setup line, and its prose holds."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from ducto_redis import RedisStore

NOTEBOOK = Path(__file__).parent / "seeds" / "notebook_05.py"


def run_notebook(store: RedisStore) -> tuple[dict[str, Any], str]:
    source = NOTEBOOK.read_text(encoding="utf-8")
    assert source.count("store = MemoryStore()\n") == 1
    source = source.replace("store = MemoryStore()\n", "store = __backend__\n")
    ns: dict[str, Any] = {"__backend__": store, "__name__": "notebook_05"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(NOTEBOOK), "exec"), ns)
    return ns, out.getvalue()


def test_notebook_05_runs_and_every_claim_of_its_prose_holds(store: RedisStore) -> None:
    from test_spend_caps import at_start_of_a_day

    at_start_of_a_day(store)  # the 3 000 + 3 000 must land in the same UTC day
    ns, printed = run_notebook(store)
    # the 3 000 debit under the 5 000 deny cap passes
    assert ns["ded"].error is None and ns["ded"].balance_after == 47_000
    assert (ns["check"].capped, ns["check"].current_spend) == (False, 3_000)
    # the next 3 000 is denied with an error; the credits stay; the reservation is released
    assert ns["ded2"].error == "spend_cap_exceeded"
    bal = store.get_balance(ns["user"])
    assert (bal.balance, bal.held, bal.available) == (47_000, 0, 47_000)
    assert store.release_reservation(ns["user"], ns["res2"].reservation_id).error == "reservation_not_found"
    # the warn cap lets the debit through and reports the overage
    assert ns["ded3"].error is None and ns["ded3"].balance_after == 49_000
    c2 = ns["check2"]
    assert (c2.current_spend, c2.cap_limit, c2.action, c2.capped) == (1_000, 500, "warn", False)
    assert "Deduction denied: spend_cap_exceeded" in printed
    assert "Current spend: 1000 Cap limit: 500 Action: warn" in printed
