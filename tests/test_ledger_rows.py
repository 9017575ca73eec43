"""The ledger row the scripts write (lib.lua's ``ledger``): exact values, every script path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import advance, drop_namespace, ledger_entries, make_store
from test_expiry import in_hours
from test_ledger import workload
from test_plans import with_plans

from ducto_redis import CreditMetadata, RedisStore, SpendCap
from ducto_redis import scripts as scripts_mod

GUARD = "if type(v) ~= 'string' then error('ledger value ' .. fields[i] .. ' is a ' .. type(v)) end"


@pytest.fixture
def guarded_store(redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisStore]:
    """A store whose scripts fail on any ledger value that is not a string (lib.lua drops the
    per-value type() call on the hot path; this proves no script needs it)."""
    read = scripts_mod._read

    def guarded(name: str) -> str:
        text = read(name)
        if name == "lib":
            anchor = "    if v and v ~= '' then\n"
            assert anchor in text
            text = text.replace(anchor, anchor + "      " + GUARD + "\n")
        return text

    monkeypatch.setattr(scripts_mod, "_read", guarded)
    scripts_mod.scripts.cache_clear()
    s = make_store("redis", redis_client)
    try:
        yield s
    finally:
        drop_namespace(redis_client, s.settings.namespace)
        monkeypatch.undo()
        scripts_mod.scripts.cache_clear()


def test_every_script_path_gives_the_ledger_strings_only(guarded_store: RedisStore) -> None:
    s = guarded_store
    assert all(GUARD in v.source for v in s.core.scripts.values() if "local function ledger(" in v.source)
    made = workload(s)
    with_plans(s).set_user_plan("p-user", "pro")
    s.add_credits("p-user", 100)
    assert s.charge_with_allowance("p-user", 150, "chat").error is None
    s.add_credits("g-user", 30, expires_at=in_hours(s, 1))
    debit = s.charge("g-user", 10, "x")
    assert s.refund_credits(debit.transaction_id, reason="bad answer").error is None
    h = s.reserve_credits("g-user", 5, "job", ttl_seconds=60)
    advance(s, 3700)
    s.release_reservation("g-user", h.reservation_id)
    s.sweep_expired_credits()
    s.set_spend_cap(SpendCap(user_id="g-user", cap_type="daily", limit=1, action="deny"))
    assert s.charge("g-user", 5, "x", metadata=CreditMetadata(model="m")).error == "spend_cap_exceeded"
    assert len(ledger_entries(s)) >= made
