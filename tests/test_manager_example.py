"""examples/price_and_charge.py: one LLM call turned into credits and charged, with the printed numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ducto_redis import MemoryStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "price_and_charge.py"


def test_the_example_charges_9_credits_a_call_allowance_first(capsys: Any) -> None:
    spec = importlib.util.spec_from_file_location("price_and_charge", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["price_and_charge"] = mod
    spec.loader.exec_module(mod)
    store = MemoryStore()
    events = mod.run(store, "user-1")
    out = capsys.readouterr().out
    assert "model 6.5 + tools 2.5 = 9 credits exactly -> 9 charged" in out
    assert "call 3: cost 9 = 2 from the free allowance + 7 paid; balance 93, allowance left 0, cap warn" in out
    assert store.get_balance("user-1").balance == 93
    assert [e.type for e in events] == ["credits.added", "credits.plan_changed", "credits.deducted",
                                        "credits.deducted", "credits.cap_warning", "credits.deducted"]
