"""Every Lua script's layout is written once, in ducto_redis/specs.py: its header says the same, its
replies have the shape the spec gives, and the call builders and batch layouts follow the spec."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_namespace, make_store

from ducto_redis.batch import MANY_TWINS, Batch, ChargeRequest, TeamDebitRequest
from ducto_redis.core import Call
from ducto_redis.models import PricingConfigData, SpendCap
from ducto_redis.scripts import SCRIPT_NAMES, library_source, lua_files
from ducto_redis.specs import DEBIT, SPECS, Fields, ScriptSpec
from ducto_redis.store import RedisStore

LUA = Path(__file__).resolve().parent.parent / "lua"
_LAYOUT = re.compile(r"-- (KEYS|ARGV): ?(.*)")
_REPLY = re.compile(r"-- REPLY \(([a-z]+)\): ?(.*)")


def header(text: str) -> dict[str, str]:
    """The KEYS, ARGV, REPLY and shape lines of a script's leading comment block (each exactly once)."""
    found: dict[str, list[str]] = {"KEYS": [], "ARGV": [], "REPLY": [], "shape": []}
    for line in takewhile(lambda s: s.startswith("--"), text.splitlines()):
        if m := _LAYOUT.fullmatch(line):
            found[m.group(1)].append(m.group(2))
        elif m := _REPLY.fullmatch(line):
            found["shape"].append(m.group(1))
            found["REPLY"].append(m.group(2))
        elif re.match(r"-- *(KEYS|ARGV|REPLY)\b", line):
            found.setdefault("malformed", []).append(line)
    bad = {k: v for k, v in found.items() if len(v) != 1}
    assert not bad, f"each of KEYS, ARGV and 'REPLY (<shape>)' exactly once in the header: {bad}"
    return {k: v[0] for k, v in found.items()}


def drift(spec: ScriptSpec, text: str) -> list[str]:
    """How a script's header differs from its spec (empty when they agree)."""
    h = header(text)
    out = [f"{part}: header says {h[part]!r}, spec says {fields.text()!r}"
           for part, fields in (("KEYS", spec.keys), ("ARGV", spec.args), ("REPLY", spec.reply))
           if Fields.parse(h[part], part) != fields]
    if h["shape"] != spec.shape:
        out.append(f"REPLY shape: header says {h['shape']!r}, spec says {spec.shape!r}")
    return out


def test_every_script_file_has_a_spec_and_every_spec_a_file() -> None:
    assert sorted(p.stem for p in LUA.glob("*.lua")) == sorted(SPECS)
    assert tuple(SPECS) == SCRIPT_NAMES


@pytest.mark.parametrize("name", list(SPECS))
def test_each_lua_header_names_its_specs_keys_argv_and_reply_in_order(name: str) -> None:
    assert drift(SPECS[name], (LUA / f"{name}.lua").read_text()) == []


def test_a_header_drifting_from_its_spec_is_caught() -> None:
    text = (LUA / "debit.lua").read_text()
    # the drift issue 18 found: debit.lua's header listing 7 reply fields while it returns more
    short = text.replace(" cap retry remaining limit\n", "\n", 1)
    assert drift(DEBIT, short) == [
        "REPLY: header says 'status idempotent ref amount balance held', spec says "
        "'status idempotent ref amount balance held cap retry remaining limit'"]
    swapped = text.replace("-- KEYS: account ledger [events grants", "-- KEYS: account ledger [grants events", 1)
    assert [d.split(":")[0] for d in drift(DEBIT, swapped)] == ["KEYS"]
    required = text.replace("ledger [events grants idem]", "ledger events grants [idem]", 1)  # optional as required
    assert [d.split(":")[0] for d in drift(DEBIT, required)] == ["KEYS"]
    assert drift(DEBIT, text.replace("REPLY (text)", "REPLY (table)", 1)) == [
        "REPLY shape: header says 'table', spec says 'text'"]
    with pytest.raises(AssertionError, match="exactly once"):
        header(text.replace("-- ARGV:", "-- ARGS:", 1))


def test_a_layout_reads_back_as_it_is_written_and_refuses_what_is_not_a_name() -> None:
    for spec in SPECS.values():
        for fields in (spec.keys, spec.args, spec.reply):
            assert Fields.parse(fields.text()) == fields
    with pytest.raises(ValueError, match="not a field name"):
        Fields.parse("account grants-hash")
    with pytest.raises(ValueError, match="appears twice"):
        Fields.parse("a b a")
    with pytest.raises(ValueError, match="per <what>"):
        Fields.parse("a; b c")
    with pytest.raises(ValueError, match="optional fields go last"):
        Fields.parse("a [b] c]")


def test_optional_fields_are_sent_only_when_one_of_them_is_not_empty() -> None:
    f = Fields.parse("a b [c d]")
    assert (f.names, f.optional, f.text()) == (("a", "b", "c", "d"), 2, "a b [c d]")
    assert f.pack(a="1", b="2", c="", d="") == ["1", "2"]
    assert f.pack(a="1", b="2", c="", d="x") == ["1", "2", "", "x"]
    assert f.pack(a="1", b="", c="y", d="") == ["1", "", "y", ""]
    assert (f.pos.c, f.pos.d) == (2, 3)
    # debit.lua: a plain charge on the default settings sends 3 ARGV, one with a model all 8
    assert DEBIT.args.text() == "cid amount frag [config model floor rid quantities]"


def test_a_repeated_group_may_end_with_optional_fields_said_per_group_by_the_shape() -> None:
    f = Fields.parse("config shape; per decision: cid amount frag [model floor quantities]")
    assert (f.names, f.each, f.each_optional) == (("config", "shape"), ("cid", "amount", "frag", "model", "floor",
                                                                        "quantities"), 3)
    assert f.text() == "config shape; per decision: cid amount frag [model floor quantities]"
    assert Fields.parse("per decision: team [idem]") == Fields((), "decision", ("team", "idem"), 0, 1)
    assert f.pack_each(cid="c", amount="1", frag="f", model="", floor="", quantities="") == ["c", "1", "f"]
    rich = f.pack_each(cid="c", amount="1", frag="f", model="", floor="5", quantities="")
    assert rich == ["c", "1", "f", "", "5", ""]
    with pytest.raises(ValueError, match="no one width"):
        list(f.groups(["", "0", "c", "1", "f"]))
    with pytest.raises(ValueError, match="optional fields go last"):
        Fields.parse("a; per x: b [c] d")
    with pytest.raises(ValueError, match="optional fields go last"):
        Fields.parse("a [b] c; per x: d")
    # the "many" twins: a plain decision's group is its required part only
    from ducto_redis.specs import DEBIT_MANY, POOL_DEBIT_MANY, SHAPE_CHARS

    assert DEBIT_MANY.keys.text() == "ledger events; per decision: account grants [idem]"
    assert DEBIT_MANY.args.text() == "config shape; per decision: cid amount frag [model floor quantities]"
    assert POOL_DEBIT_MANY.args.text() == "config shape; per decision: cid amount member frag [model]"
    assert [ord(c) % 2 == 1 for c in SHAPE_CHARS] == [False, True, False, True]  # the scripts' tests
    assert [ord(c) >= 50 for c in SHAPE_CHARS] == [False, False, True, True]


def test_packing_and_reading_by_name_follow_the_spec_positions() -> None:
    values = {n: f"<{n}>" for n in DEBIT.args.names}
    assert DEBIT.args.pack(**values) == [f"<{n}>" for n in DEBIT.args.names]
    with pytest.raises(TypeError):
        DEBIT.args.pack(**{**values, "unknown": "x"})
    with pytest.raises(TypeError):
        DEBIT.keys.pack(account="a")  # every name is required
    reply = DEBIT.reply.names
    assert [DEBIT.reply.pos.ref, DEBIT.reply.pos.status] == [reply.index("ref"), 0]
    with pytest.raises(AttributeError):
        DEBIT.reply.pos.balance_after  # noqa: B018  (a name the spec does not have)
    with pytest.raises(AttributeError, match="read-only"):
        DEBIT.reply.pos.ref = 0
    read = SPECS["pool_read"].reply
    members = [*read.names, *("a", "admin", "", "t", "1", "0", "0", "0"),
               *("b", "member", "5", "d", "2", "2", "2", "1")]
    assert [(g[read.each_pos.id], g[read.each_pos.cap]) for g in read.groups(members)] == [("a", ""), ("b", "5")]
    # plan_debit.lua always takes every KEY a charge may leave out (it has no lean form)
    assert set(SPECS["plan_debit"].keys.names) == set(DEBIT.keys.names)


def test_the_many_twins_place_every_position_of_their_single_script_once() -> None:
    for single, twin in MANY_TWINS.items():
        one, many = SPECS[single], SPECS[twin.name]
        assert sorted((*twin.shared_keys, *twin.own_keys)) == list(range(one.keys.size))
        assert sorted((*twin.shared_args, *twin.own_args, twin.only[0])) == list(range(one.args.size))
        assert many.reply.each == one.reply.names  # a twin answers each decision as its single script does
    # a lean call's left-out KEYS come from keys.py's one rule; an optional KEY no rule makes is refused
    from ducto_redis.batch import Twin
    from ducto_redis.keys import KeySchema
    from ducto_redis.specs import DEBIT_MANY

    k = KeySchema("ns", 8).user("x")
    assert MANY_TWINS["debit"].left_out.fill([k.account, k.ledger]) == [
        k.account, k.ledger, k.events, k.grants, k.idempotency(None)]
    odd = ScriptSpec.of("debit", "account ledger [events grants idem other]", DEBIT.args.text(), DEBIT.reply.text(),
                        "text")
    many = ScriptSpec.of("debit_many", "ledger events; per decision: account grants idem other",
                         DEBIT_MANY.args.text(), DEBIT_MANY.reply.text(), "lines")
    with pytest.raises(ValueError, match="no rule makes the optional KEY 'other'"):
        Twin.of(odd, many, "rid", "")


def test_the_scripts_are_read_through_importlib_resources_from_the_package() -> None:
    lua = lua_files()
    assert lua.is_dir() and (lua / "debit.lua").read_text(encoding="utf-8") == (LUA / "debit.lua").read_text()
    lib = sorted(p.name for p in (LUA / "lib").glob("*.lua"))
    assert [int(n.split("_", 1)[0]) for n in lib] == list(range(1, len(lib) + 1))  # the join order, by number
    source = library_source()
    assert [source.index(f"-- lib/{n}:") for n in lib] == sorted(source.index(f"-- lib/{n}:") for n in lib)


# ── what the scripts send has the shape their specs give ───────────────


FREE_TEXT = {"role", "plan", "who"}


def check_shape(spec: ScriptSpec, raw: Any) -> None:
    """A raw reply against its spec: the right number of fields (and of repeated groups)."""
    where = f"{spec.name}.lua replied {raw!r}"
    if spec.shape == "special":
        assert isinstance(raw, str), where
    elif spec.shape == "table":
        assert isinstance(raw, list) and len(raw) >= spec.reply.size, where
        width = len(spec.reply.each)
        extra = len(raw) - spec.reply.size
        assert (extra % width == 0) if width else extra == 0, where
    else:
        lines = raw.split("\n") if spec.shape == "lines" else [raw]
        fields = spec.reply.each if spec.shape == "lines" else spec.reply.names
        for line in lines:
            parts = line.split("|", len(fields) - 1)
            assert len(parts) == len(fields), f"{where}: {line!r} is not {' '.join(fields)}"
            # only a last field of free text (a role, a plan id, the refund's JSON) may hold '|' itself
            assert "|" not in parts[-1] or fields[-1] in FREE_TEXT, f"{where}: more fields than {' '.join(fields)}"


class Recorder:
    """A store's two I/O seams, replaced: each call runs straight through its script, its raw reply
    checked against its spec (a batch's packed calls too), then parsed as the store would."""

    def __init__(self, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store, self.seen = store, set[str]()
        monkeypatch.setattr(store, "_run", self.run)
        monkeypatch.setattr(store, "_run_many", self.many)

    def raw(self, call: Call[Any]) -> Any:
        assert call.script is not None
        raw = call.script.run(self.store.client, call.keys, call.args)
        check_shape(call.script.spec, raw)
        self.seen.add(call.script.name)
        return raw

    def run(self, call: Call[Any]) -> Any:
        return call.parse(None if call.script is None else self.raw(call))

    def many(self, calls: list[Call[Any]]) -> list[Any]:
        batch = Batch(calls, self.store.core.scripts)
        return batch.assemble([self.raw(c) for c in batch.calls])


@pytest.fixture(params=["memory", "redis"])
def spec_store(request: pytest.FixtureRequest, redis_client: Any) -> Iterator[RedisStore]:
    s = make_store(request.param, redis_client)
    yield s
    if request.param != "memory":
        drop_namespace(s.client, s.settings.namespace)
        s.close()


def test_every_script_replies_with_the_shape_of_its_spec(spec_store: RedisStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec_store
    r = Recorder(s, monkeypatch)
    s.add_credits("u1", 1000, "purchase")
    s.add_credits("u3", 50, "promo", expires_at=datetime.fromtimestamp(1, timezone.utc))  # due at once
    s.set_spend_cap(SpendCap(user_id="u1", cap_type="daily", limit=900, action="warn"))
    s.set_rate_limit("u1", 100, 1.0)
    s.set_quantity_limit("u1", "tokens", 10_000)
    assert s.check_spend_cap("u1").cap_limit == 900
    assert s.hit_rate_limit("u1").allowed
    hold = s.reserve_credits("u1", 10, "job", quantities={"tokens": 5})
    assert s.deduct_credits("u1", hold.reservation_id, 8).error is None
    hold = s.reserve_credits("u1", 10, "job")
    assert s.release_reservation("u1", hold.reservation_id).error is None
    charged = s.charge("u1", 5, "req")
    assert [d.error for d in s.charge_many([ChargeRequest("u1", 1, "x"), ChargeRequest("u2", 1, "x")])] == [
        None, "insufficient_credits"]
    # two decisions of one shard are packed into debit_many (a lone one is sent as debit.lua)
    assert [d.error for d in s.charge_many([ChargeRequest("u1", 1, "x"), ChargeRequest("u1", 10**15, "x")])] == [
        None, "insufficient_credits"]
    assert s.get_balance("u1").balance > 0
    # teams
    team = s.create_team("Team", 100).team_id
    s.add_team_member(team, "u1", "lead|ops", spend_cap=50, cap_period="daily")
    assert s.deduct_team(team, "u1", 3).error is None
    assert [d.error for d in s.deduct_team_many([TeamDebitRequest(team, "u1", 1)] * 2)] == [None, None]
    held = s.reserve_team(team, "u1", 4)
    assert s.release_team_reservation(team, "u1", held.reservation_id).error is None
    assert [m.role for m in s.get_team_members(team)] == ["lead|ops"]
    assert s.get_team_balance(team).member_count == 1
    # plans and pricing
    s.set_active_pricing(PricingConfigData(models={"m": "1"}))
    assert s.get_active_pricing() is not None and s.get_pricing_history()
    s.set_user_plan("u1", "pro|plus")
    s.increment_usage_window("u1", "pro|plus", 1)
    assert s.get_user_plan("u1").plan_id == "pro|plus"
    assert s.charge_with_allowance("u1", 3, "req", {"pro|plus": 2}).allowance_used == 1
    # refunds and expiring credits
    assert s.refund_credits(charged.transaction_id).error is None
    assert s.sweep_expired_credits().expired_count == 1
    assert r.seen == set(SPECS), f"not run: {set(SPECS) - r.seen}"


def test_a_store_on_the_default_settings_sends_no_config_and_the_library_holds_the_defaults(
        redis_client: Any) -> None:
    from ducto_redis.settings import DEFAULT_SCRIPT_CONFIG

    assert library_source().startswith(f"local DEFAULT_CONFIG = '{DEFAULT_SCRIPT_CONFIG}'")
    plain = make_store("redis", redis_client)
    shorter = make_store("redis", redis_client, idempotency_ttl_seconds=60)
    try:
        assert plain.core.config() == "" and shorter.core.config().split("|")[1] == "60"
        assert len(plain.core.debit("u", 1, operation_type="x").args) == 3  # cid amount frag
        assert len(shorter.core.debit("u", 1, operation_type="x").args) == 8  # and the optional ones, config first
        # each script reads its settings: the default TTL from the library, 60 s from the argument
        for store, ttl in ((plain, 86400), (shorter, 60)):
            store.add_credits("u", 10)
            store.charge("u", 1, "x", idempotency_key="k1")
            key = store.core.keys.user("u").idempotency("k1")
            assert ttl - 5 <= redis_client.ttl(key) <= ttl
    finally:
        drop_namespace(redis_client, plain.settings.namespace)
        drop_namespace(redis_client, shorter.settings.namespace)
