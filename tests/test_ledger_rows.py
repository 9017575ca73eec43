"""The ledger rows the scripts write (``row`` in lua/lib/03_ledger.lua): exact values, every script path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import advance, drop_namespace, ledger_entries, make_store
from test_expiry import in_hours
from test_ledger import workload
from test_plans import with_plans

from ducto_redis import CreditMetadata, RedisStore, SpendCap
from ducto_redis import scripts as scripts_mod

LIBRARY_SOURCE = scripts_mod.library_source  # the real one (the fixture below replaces it)
ROW = "local function row(ctx, id, kind, amount, bal, held, hold, exp, cap, reason, extra, frag, sign)\n"
GUARD = ("  local vs = { id, kind, amount, bal, held, hold, exp, cap, reason, extra, frag }\n"
         "  for i = 1, 11 do\n"
         "    if type(vs[i]) ~= 'string' then error('ledger value ' .. i .. ' is a ' .. type(vs[i])) end\n"
         "  end\n"
         "  if sign ~= nil and sign ~= '-' then error('ledger sign is ' .. tostring(sign)) end\n")


def guarded_library() -> str:
    """The shared helpers with ``row`` refusing any value that is not a string (a number would be
    joined into the row as Lua's 14-digit text; ``row`` itself checks nothing, it is on the hot path)."""
    text = LIBRARY_SOURCE()
    assert text.count(ROW) == 1, "every ledger row goes through row(): the guard needs its first line"
    return text.replace(ROW, ROW + GUARD)


def test_the_guard_refuses_a_number_in_a_row(redis_client: Any) -> None:
    """The guard below is not vacuous: a number given to row() fails the call."""
    probe = ("\nreturn row({ rows = {}, nrows = 0, c = { sec = '1', msx = '' } }, 'id', 'debit', %s, '0', '0', "
             "'', '', '', '', '', '')")
    assert redis_client.eval(guarded_library() + probe % "'-5'", 0) == 0
    with pytest.raises(redis.ResponseError, match="ledger value 3 is a number"):
        redis_client.eval(guarded_library() + probe % "-5", 0)


@pytest.fixture
def guarded_store(redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisStore]:
    """A store whose scripts fail on any ledger value that is not a string (``row`` joins values
    with no per-value type() check on the hot path; this proves no script needs one)."""
    monkeypatch.setattr(scripts_mod, "library_source", guarded_library)
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
    assert all(GUARD in v.source and GUARD in v.library.source for v in s.core.scripts.values())
    made = workload(s)
    with_plans(s).set_user_plan("p-user", "pro")
    s.add_credits("p-user", 100)
    assert s.charge_with_allowance("p-user", 30, "chat").error is None  # wholly covered by the allowance
    assert s.charge_with_allowance("p-user", 150, "chat").error is None
    s.increment_usage_window("p-user", "pro", 5)
    s.set_quantity_limit("p-user", "tokens", 1_000, 60)
    live = s.reserve_credits("p-user", 5, "job")
    assert s.release_reservation("p-user", live.reservation_id).error is None  # a live hold released
    capped = s.reserve_credits("p-user", 5, "job")
    s.set_spend_cap(SpendCap(user_id="p-user", cap_type="daily", limit=1, action="deny"))
    assert s.deduct_credits("p-user", capped.reservation_id, 5).error == "spend_cap_exceeded"  # hold released
    tid = s.create_team("rows", initial_balance=100).team_id
    s.add_team_member(tid, "m")
    team_hold = s.reserve_team(tid, "m", 5)
    assert s.release_team_reservation(tid, "m", team_hold.reservation_id).error is None
    team_hold = s.reserve_team(tid, "m", 5)
    s.set_team_spend_cap(tid, "daily", 1, "deny")
    assert s.settle_team_reservation(tid, "m", team_hold.reservation_id, 5).error == "spend_cap_exceeded"
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
