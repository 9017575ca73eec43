"""charge_many: batched decisions equal the same decisions made one by one."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from conftest import embedded, make_store, snapshot

from ducto_redis import CreditMetadata, InvalidInputError, RedisStore, SpendCap
from ducto_redis.aio import AsyncMemoryStore
from ducto_redis.batch import ChargeRequest
from ducto_redis.ledger.copy_text import entry_rows

VOLATILE = {"transaction_id"}


def workload(seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    reqs: list[dict[str, Any]] = []
    for _ in range(300):
        reqs.append({
            "user_id": f"user-{rnd.randint(0, 30)}",
            "amount": rnd.choice([1, 5, 20, 90]),
            "operation_type": "req",
            "idempotency_key": rnd.choice([None, None, f"k{rnd.randint(0, 20)}"]),
            "metadata": rnd.choice([None, CreditMetadata(model="gpt-4")]),
        })
    return reqs


def prepare(store: RedisStore) -> None:
    for u in range(31):
        store.add_credits(f"user-{u}", 400)
        if u % 3 == 0:
            store.set_spend_cap(SpendCap(user_id=f"user-{u}", limit=150))
        if u % 5 == 0:
            store.set_spend_cap(SpendCap(user_id=f"user-{u}", model="gpt-4", limit=60, action="warn"))


def strip(results: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.model_dump().items() if k not in VOLATILE} for r in results]


def test_batched_charges_equal_the_same_charges_one_by_one(store: RedisStore) -> None:
    kind = "memory" if embedded(store) else "redis"
    single = make_store(kind, None)
    try:
        prepare(store)
        prepare(single)
        reqs = workload(1)
        batched = store.charge_many(reqs)
        one_by_one = [single.charge(**r) for r in reqs]
        assert strip(batched) == strip(one_by_one)
        assert {r.error for r in batched} >= {None, "spend_cap_exceeded", "insufficient_credits"}
        for u in range(31):
            assert store.get_balance(f"user-{u}") == single.get_balance(f"user-{u}")
    finally:
        if kind == "redis":
            from conftest import drop_namespace

            drop_namespace(single.client, single.settings.namespace)


def test_a_batch_uses_one_script_call_per_shard(store: RedisStore) -> None:
    from ducto_redis.batch import Batch, charge_calls

    reqs = [ChargeRequest(f"u{i % 7}", 1, "req") for i in range(100)]
    batch = Batch(charge_calls(store.core, reqs), store.core.scripts)
    shards = {store.core.keys.user(f"u{i}").shard for i in range(7)}
    assert len(batch.calls) == len(shards)


def test_batched_charges_survive_function_and_script_flush(flushable_store: RedisStore) -> None:
    store = flushable_store
    store.add_credits("a", 10)
    store.add_credits("b", 10)
    store.client.function_flush()
    store.client.script_flush()
    out = store.charge_many([ChargeRequest("a", 3, "x"), ChargeRequest("b", 11, "x"), ChargeRequest("a", 3, "x")])
    assert [(r.error, r.balance_after) for r in out] == [(None, 7), ("insufficient_credits", 10), (None, 4)]


def test_a_bad_request_in_a_batch_raises_before_anything_is_written(store: RedisStore) -> None:
    store.add_credits("a", 10)
    tid = store.create_team("t", initial_balance=10).team_id
    store.add_team_member(tid, "a")
    before = snapshot(store)
    ok = {"user_id": "a", "amount": 1, "operation_type": "x"}
    team_ok = {"team_id": tid, "user_id": "a", "amount": 1}
    for requests, field in [
        ([ChargeRequest("a", 3, "x"), ChargeRequest("a", 1.5, "x")], "requests[1].amount"),  # type: ignore[arg-type]
        ([ok, {**ok, "amount": 0}], "requests[1].amount"),  # out of range: the same answer as charge(..., 0)
        ([ok, {**ok, "amount": 2**53}], "requests[1].amount"),
        ([ok, {"user_id": "a", "amount": 1}], "requests[1].operation_type"),  # missing: not a TypeError
        ([{**ok, "amuont": 1}], "requests[0]"),
        ([ok, "a"], "requests[1]"),
        ([{**ok, "user_id": "a\x00"}], "requests[0].user_id"),
        # the last of many in many shards: its metadata too long as JSON (checked before any call is built)
        ([{**ok, "user_id": f"v{i}"} for i in range(50)] + [{**ok, "metadata": {"x": "a" * 9000}}],
         "requests[50].metadata"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            store.charge_many(requests)  # type: ignore[arg-type]
        assert info.value.field == field
    for team_requests, field in [
        ([team_ok, {**team_ok, "amount": -5}], "requests[1].amount"),
        ([{"team_id": tid, "amount": 1}], "requests[0].user_id"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            store.deduct_team_many(team_requests)
        assert info.value.field == field
    assert snapshot(store) == before


def test_async_charge_many_matches_sync() -> None:
    from ducto_redis import MemoryStore

    sync = MemoryStore()
    aio = AsyncMemoryStore()
    prepare(sync)

    async def go() -> list[Any]:
        for u in range(31):
            await aio.add_credits(f"user-{u}", 400)
            if u % 3 == 0:
                await aio.set_spend_cap(SpendCap(user_id=f"user-{u}", limit=150))
            if u % 5 == 0:
                await aio.set_spend_cap(SpendCap(user_id=f"user-{u}", model="gpt-4", limit=60, action="warn"))
        return await aio.charge_many(workload(2))

    assert strip(asyncio.run(go())) == strip(sync.charge_many(workload(2)))


def team_setup(store: RedisStore) -> list[str]:
    teams = []
    for t in range(3):
        tid = store.create_team(f"t{t}", initial_balance=2_000, idempotency_key=f"mk-{t}").team_id
        teams.append(tid)
        for m in range(6):
            store.add_credits(f"m{m}", 0)
            store.add_team_member(tid, f"m{m}", spend_cap=300 if m % 2 else None)
    return teams


def team_workload(teams: list[str], seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [{"team_id": rnd.choice([*teams, "no-such-team"]), "user_id": f"m{rnd.randint(0, 7)}",
             "amount": rnd.choice([1, 40, 120, 500]), "idempotency_key": rnd.choice([None, f"t{rnd.randint(0, 9)}"])}
            for _ in range(250)]


def test_batched_team_debits_equal_the_same_debits_one_by_one(store: RedisStore) -> None:
    kind = "memory" if embedded(store) else "redis"
    single = make_store(kind, None)
    try:
        # the same team ids on both stores, so the two workloads match
        teams = _with_fixed_ids(team_setup, store)
        assert _with_fixed_ids(team_setup, single) == teams
        reqs = team_workload(teams, 3)
        batched = store.deduct_team_many(reqs)
        one_by_one = [single.deduct_team(**r) for r in reqs]
        assert strip(batched) == strip(one_by_one)
        assert {r.error for r in batched} >= {None, "team_not_found", "user_not_in_team",
                                              "spend_cap_exceeded", "insufficient_team_balance"}
        for tid in teams:
            assert store.get_team_balance(tid) == single.get_team_balance(tid)
            assert store.get_team_members(tid) == single.get_team_members(tid)
    finally:
        if kind == "redis":
            from conftest import drop_namespace

            drop_namespace(single.client, single.settings.namespace)


def _with_fixed_ids(setup: Any, store: RedisStore) -> Any:
    """``setup(store)`` with the team calls' fresh ids (team ids among them) drawn from a counter."""
    from ducto_redis import team_ops

    counter = iter(range(1000))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(team_ops, "new_id", lambda: f"00000000-0000-4000-8000-{next(counter):012x}")
        return setup(store)


# ── the packed layout of debit_many (shared values once per shard call) ───────────────────────


def ledger_contents(store: RedisStore) -> list[list[dict[str, str]]]:
    """Every shard's ledger rows without per-store ids and times (tx and hold ids, ts, hold expiry)."""
    out = []
    volatile = ("id", "ts", "rid", "exp")
    for shard, stream in enumerate(store.core.keys.all_ledger_streams()):
        rows = [r for sid, fields in store.client.xrange(stream) for r in entry_rows(shard, sid, fields)]
        out.append([{k: v for k, v in r.items() if k not in volatile} for r in rows])
    return out


def test_batched_settlements_charges_and_replays_equal_one_by_one_with_the_same_ledger(store: RedisStore) -> None:
    """Settlements, charges, caps and replayed keys mixed in one batch: the same results, balances
    and ledger entries as the same calls made one by one (the packed layout loses nothing)."""
    from ducto_redis.batch import Batch

    kind = "memory" if embedded(store) else "redis"
    single = make_store(kind, None)
    try:
        holds: dict[int, list[str]] = {}
        for n, s in enumerate((store, single)):
            prepare(s)
            holds[n] = [s.reserve_credits(f"user-{u % 31}", 40, "job").reservation_id for u in range(20)]
        rnd = random.Random(7)
        plan = []
        for _ in range(200):
            u = rnd.randint(0, 30)
            if rnd.random() < 0.3:
                plan.append(("settle", rnd.randint(0, 19), rnd.choice([0, 10, 40, 90]), rnd.choice([None, "s1", "s2"])))
            else:
                plan.append(("charge", u, rnd.choice([1, 5, 60, 300]), rnd.choice([None, "c1", f"c{u}"])))

        def calls_for(n: int, s: RedisStore) -> list[Any]:
            out = []
            for op, who, amount, key in plan:
                if op == "settle":
                    out.append(s.core.debit(f"user-{who % 31}", amount, reservation_id=holds[n][who],
                                            idempotency_key=key, metadata=CreditMetadata(model="gpt-4")))
                else:
                    out.append(s.core.debit(f"user-{who}", amount, operation_type="req", idempotency_key=key))
            return out

        batch = Batch(calls_for(0, store), store.core.scripts)
        batched = batch.assemble(_send(store, batch))
        one_by_one = [single._run(c) for c in calls_for(1, single)]
        assert strip(batched) == strip(one_by_one)
        assert {r.error for r in batched} >= {None, "reservation_not_found", "insufficient_credits"}
        assert any(r.idempotent for r in batched)
        for u in range(31):
            assert store.get_balance(f"user-{u}") == single.get_balance(f"user-{u}")
        assert ledger_contents(store) == ledger_contents(single)
    finally:
        if kind == "redis":
            from conftest import drop_namespace

            drop_namespace(single.client, single.settings.namespace)


def test_a_decision_alone_in_its_shard_is_sent_as_the_single_script_and_decides_the_same(
        store: RedisStore) -> None:
    from ducto_redis.batch import Batch

    keys = store.core.keys
    alone = "alone-0"
    others = [n for n in (f"pair-{i}" for i in range(5000))
              if keys.user(n).shard != keys.user(alone).shard][:1]
    pair = [n for n in (f"pair-{i}" for i in range(5000, 10000))
            if keys.user(n).shard == keys.user(others[0]).shard][:1]
    users = [alone, others[0], pair[0]]
    for u in users:
        store.add_credits(u, 10, type="purchase")
    calls = [store.core.debit(u, 3, operation_type="req") for u in users]
    batch = Batch(calls, store.core.scripts)
    names = [c.script.name for c in batch.calls if c.script is not None]
    assert names == ["debit", "debit_many"]  # the lone decision as itself, the two of one shard packed
    assert batch.calls[0] is calls[0] and batch.count == 2
    results = batch.assemble(_send(store, batch))
    assert [(r.error, r.balance_after) for r in results] == [(None, 7)] * 3
    assert [store.get_balance(u).balance for u in users] == [7, 7, 7]
    assert store.charge_many([{"user_id": alone, "amount": 7, "operation_type": "req"}])[0].balance_after == 0


def _send(store: RedisStore, batch: Any) -> list[Any]:
    from ducto_redis.connect import run_pipelined

    return run_pipelined(store.client, batch.calls)


def same_shard(store: RedisStore, prefix: str, n: int, team: bool = False) -> list[str]:
    """``n`` user (or team) ids of one shard (a decision alone in its shard is sent as the single script)."""
    of = store.core.keys.team if team else store.core.keys.user
    shard = of(f"{prefix}0").shard
    names = [x for x in (f"{prefix}{i}" for i in range(5000)) if of(x).shard == shard][:n]
    assert len(names) == n
    return names


def test_packed_layout_of_plain_charges_is_two_keys_and_three_argv_per_decision(store: RedisStore) -> None:
    from ducto_redis.batch import Batch

    names = same_shard(store, "same-shard-", 3)
    calls = [store.core.debit(n, 1, operation_type="req") for n in names]
    packed = Batch(calls, store.core.scripts).calls[0]
    assert packed.script is not None and packed.script.name == "debit_many"
    # debit.lua: KEYS account ledger [events grants idem]; ARGV cid amount frag [config model floor rid quantities]
    # lean calls (account ledger): the twin is given the shard's events stream from the key schema
    assert all(len(c.keys) == 2 for c in calls)
    events = store.core.keys.user(names[0]).events
    # the shared head: the shard's ledger and events streams, the configuration ("" on the default
    # settings) and the shape, once; then per decision its account and grants hash (no idempotency
    # key: none sent, not the never-written name) and its cid amount frag (no model floor quantities)
    assert packed.keys == [calls[0].keys[1], events, *(k for c in calls for k in (c.keys[0], c.keys[0] + ":grants"))]
    assert all(len(c.args) == (3 if store.core.config() == "" else 8) for c in calls)
    assert packed.args == [store.core.config(), "000", *(a for c in calls for a in c.args[:3])]
    assert len(packed.keys) == 2 + 2 * 3 and len(packed.args) == 2 + 3 * 3
    results = Batch(calls, store.core.scripts).assemble(_send(store, Batch(calls, store.core.scripts)))
    assert [r.error for r in results] == ["insufficient_credits"] * 3  # (accounts without credits: it ran)
    # a position debit.lua gains is never dropped nor assumed shared: the packed layout comes from
    # both specs by name, and a debit position debit_many.lua does not place is refused at import
    from ducto_redis.batch import Twin
    from ducto_redis.specs import DEBIT, DEBIT_MANY, ScriptSpec

    def spec(s: ScriptSpec, keys: str = "", args: str = "") -> ScriptSpec:
        def widen(fields: str, more: str) -> str:  # a new field goes before the optional ones
            fixed, _, optional = fields.partition(" [")
            return f"{fixed}{more} [{optional}"
        return ScriptSpec.of(s.name, widen(s.keys.text(), keys), widen(s.args.text(), args), s.reply.text(), s.shape)

    with pytest.raises(ValueError, match="must place each"):
        Twin.of(spec(DEBIT, " extra_key"), DEBIT_MANY, "rid", "")
    with pytest.raises(ValueError, match="must place each"):
        Twin.of(spec(DEBIT, args=" extra"), DEBIT_MANY, "rid", "")
    many = ScriptSpec.of("debit_many", "ledger events; per decision: account grants extra_key [idem]",
                         "config shape; per decision: cid amount frag extra [model floor quantities]", "", "lines")
    wider = Twin.of(spec(DEBIT, " extra_key", " extra"), many, "rid", "")
    # KEYS account ledger extra_key [events grants idem]
    assert (wider.shared_keys, wider.own_keys, wider.own_keys_optional) == ((1, 3), (0, 4, 2, 5), 1)
    # ARGV cid amount frag extra [config model floor rid quantities]
    assert (wider.shared_args, wider.own_args, wider.own_args_optional, wider.only, wider.shape_at) == (
        (4,), (0, 1, 2, 3, 5, 6, 8), 3, (7, ""), 1)
    # groups with optional fields need the shape; a group's optional KEY must be one a rule stands in for
    with pytest.raises(ValueError, match="need the 'shape' ARGV"):
        Twin.of(DEBIT, ScriptSpec.of("debit_many", DEBIT_MANY.keys.text(), "config; per decision: cid amount frag "
                                     "[model floor quantities]", "", "lines"), "rid", "")
    with pytest.raises(ValueError, match="nothing stands in for it"):
        Twin.of(DEBIT, ScriptSpec.of("debit_many", "ledger events; per decision: grants [account idem]",
                                     DEBIT_MANY.args.text(), "", "lines"), "rid", "")


def test_a_mixed_batch_packs_each_decision_with_its_own_width_and_decides_as_one_by_one(store: RedisStore) -> None:
    """Plain charges, charges with an idempotency key, with a model / floor / quantities, a widened
    account (every KEY, the never-written idempotency name among them) and team debits: each packed
    with the optional parts it has, and the same replies, balances and ledger rows as one by one."""
    from ducto_redis.batch import Batch, team_debit_calls

    kind = "memory" if embedded(store) else "redis"
    single = make_store(kind, None)
    try:
        users = same_shard(store, "mix-", 4)
        teams: dict[int, str] = {}
        for n, s in enumerate((store, single)):
            for u in users:
                s.add_credits(u, 100)
            s.set_quantity_limit(users[2], "tokens", 1_000)
            s.core.wide[s.core.keys.user(users[3]).account] = None  # widened before: every KEY at once
            teams[n] = _with_fixed_ids(lambda s: s.create_team("mix-team", initial_balance=50).team_id, s)
            s.add_team_member(teams[n], users[0])
        assert teams[0] == teams[1]
        gpt = CreditMetadata(model="gpt")

        def user_calls(s: RedisStore) -> list[Any]:
            d = s.core.debit
            return [d(users[0], 5, operation_type="req"),                                    # plain
                    d(users[1], 7, operation_type="req", idempotency_key="k1"),              # its idem KEY
                    d(users[2], 3, operation_type="req", metadata=gpt, min_balance=10,
                      quantities={"tokens": 40}),                                            # model floor quantities
                    d(users[1], 7, operation_type="req", idempotency_key="k2", metadata=gpt),  # both
                    d(users[3], 2, operation_type="req"),                                    # widened, no key
                    d(users[2], 95, operation_type="req", min_balance=10),                   # refused by its floor
                    d(users[1], 7, operation_type="req", idempotency_key="k1")]              # a replay

        def team_calls(s: RedisStore, tid: str) -> list[Any]:
            return team_debit_calls(s.core, [
                {"team_id": tid, "user_id": users[0], "amount": 4},
                {"team_id": tid, "user_id": users[0], "amount": 6, "idempotency_key": "t1"},
                {"team_id": tid, "user_id": users[0], "amount": 8, "metadata": gpt},
                {"team_id": tid, "user_id": users[0], "amount": 6, "idempotency_key": "t1"}])

        calls = user_calls(store)
        tcalls = team_calls(store, teams[0])
        assert len(calls[4].keys) == 5 and calls[4].keys[4] == calls[4].keys[0] + ":i"  # the never-written name
        batch = Batch([*calls, *tcalls], store.core.scripts)
        packed = {c.script.name: c for c in batch.calls if c.script is not None}
        assert set(packed) == {"debit_many", "pool_debit_many"} and len(batch.calls) == 2
        many = packed["debit_many"]
        assert many.args[1] == "0123021"  # '0' + 1 its idempotency key + 2 its model floor quantities
        acct = [c.keys[0] for c in calls]
        assert many.keys[2:] == [acct[0], acct[0] + ":grants", acct[1], acct[1] + ":grants", calls[1].keys[4],
                                 acct[2], acct[2] + ":grants", acct[3], acct[3] + ":grants", calls[3].keys[4],
                                 acct[4], acct[4] + ":grants", acct[5], acct[5] + ":grants",
                                 acct[6], acct[6] + ":grants", calls[6].keys[4]]
        a = [c.args for c in calls]
        assert many.args[2:] == [*a[0][:3], *a[1][:3], *a[2][:3], "gpt", "10", "tokens=40", *a[3][:3], "gpt", "", "",
                                 *a[4][:3], *a[5][:3], "", "10", "", *a[6][:3]]
        team = packed["pool_debit_many"]
        t = [c.args for c in tcalls]
        assert team.args[1] == "0121"
        assert team.keys[2:] == [tcalls[0].keys[0], tcalls[1].keys[0], tcalls[1].keys[-1], tcalls[2].keys[0],
                                 tcalls[3].keys[0], tcalls[3].keys[-1]]
        assert team.args[2:] == [*t[0][:4], *t[1][:4], *t[2][:4], "gpt", *t[3][:4]]
        batched = batch.assemble(_send(store, batch))
        one_by_one = [single._run(c) for c in [*user_calls(single), *team_calls(single, teams[1])]]
        assert strip(batched) == strip(one_by_one)
        assert [(r.error, r.idempotent) for r in batched] == [
            (None, False), (None, False), (None, False), (None, False), (None, False),
            ("insufficient_credits", False), (None, True),
            (None, False), (None, False), (None, False), (None, True)]
        for u in users:
            assert store.get_balance(u) == single.get_balance(u)
        assert store.get_team_balance(teams[0]) == single.get_team_balance(teams[1])
        assert ledger_contents(store) == ledger_contents(single)
    finally:
        if kind == "redis":
            from conftest import drop_namespace

            drop_namespace(single.client, single.settings.namespace)


def test_random_mixed_batches_decide_as_one_by_one_whatever_each_decision_sends(store: RedisStore) -> None:
    """Random batches of charges (with or without a key, a model, a floor, quantities; on plain and
    widened accounts) and team debits (with or without a key, a model), in few shards so most
    decisions are packed with others of other widths: the same replies, balances and ledger rows as
    the same calls one by one."""
    from ducto_redis.batch import Batch, team_debit_calls

    kind = "memory" if embedded(store) else "redis"
    single = make_store(kind, None)
    try:
        users = [f"rm-{u}" for u in range(12)]
        teams: dict[int, list[str]] = {}
        for n, s in enumerate((store, single)):
            for u in users:
                s.add_credits(u, 300)
            for u in users[::4]:
                s.set_quantity_limit(u, "tokens", 500)
            for u in users[1::3]:
                s.core.wide[s.core.keys.user(u).account] = None

            def make_teams(s: RedisStore) -> list[str]:
                tids = [s.create_team(f"rm-t{t}", initial_balance=400).team_id for t in range(2)]
                for tid in tids:
                    for u in users[:6]:
                        s.add_team_member(tid, u, spend_cap=150 if users.index(u) % 2 else None)
                return tids

            teams[n] = _with_fixed_ids(make_teams, s)
        assert teams[0] == teams[1]
        rnd = random.Random(13)
        plan: list[tuple[Any, ...]] = []
        for _ in range(240):
            if rnd.random() < 0.3:
                plan.append(("team", rnd.randrange(2), rnd.choice(users[:7]), rnd.choice([3, 20, 90]),
                             rnd.choice([None, None, f"t{rnd.randrange(6)}"]), rnd.choice([None, "gpt"])))
            else:
                plan.append(("user", rnd.choice(users), rnd.choice([1, 7, 40, 120]),
                             rnd.choice([None, None, f"k{rnd.randrange(8)}"]), rnd.choice([None, "gpt"]),
                             rnd.choice([0, 0, 50]), rnd.choice([None, None, {"tokens": rnd.choice([10, 200])}])))

        def calls_for(n: int, s: RedisStore) -> list[Any]:
            out: list[Any] = []
            for op in plan:
                if op[0] == "team":
                    _, t, u, amount, key, model = op
                    out += team_debit_calls(s.core, [{"team_id": teams[n][t], "user_id": u, "amount": amount,
                                                      "idempotency_key": key,
                                                      "metadata": model and CreditMetadata(model=model)}])
                else:
                    _, u, amount, key, model, floor, qs = op
                    out.append(s.core.debit(u, amount, operation_type="req", idempotency_key=key,
                                            metadata=model and CreditMetadata(model=model), min_balance=floor,
                                            quantities=qs))
            return out

        batch = Batch(calls_for(0, store), store.core.scripts)
        shapes = "".join(c.args[1] for c in batch.calls if c.script is not None and c.script.name.endswith("_many"))
        assert set(shapes) == {"0", "1", "2", "3"}  # every width, packed
        batched = batch.assemble(_send(store, batch))
        one_by_one = [single._run(c) for c in calls_for(1, single)]
        assert strip(batched) == strip(one_by_one)
        assert any(r.idempotent for r in batched) and any(r.error for r in batched)
        for u in users:
            assert store.get_balance(u) == single.get_balance(u)
        for a, b in zip(teams[0], teams[1], strict=True):
            assert store.get_team_balance(a) == single.get_team_balance(b)
            assert store.get_team_members(a) == single.get_team_members(b)
        # the same rows, each account's in the same order (a shard's user and team decisions are
        # two script calls, so its stream may interleave the two kinds otherwise than one by one)
        def by_account(store: RedisStore) -> list[dict[tuple[str, str], list[dict[str, str]]]]:
            out: list[dict[tuple[str, str], list[dict[str, str]]]] = []
            for rows in ledger_contents(store):
                accounts: dict[tuple[str, str], list[dict[str, str]]] = {}
                for r in rows:
                    accounts.setdefault((r.get("ak", ""), r.get("acct", "")), []).append(r)
                out.append(accounts)
            return out

        assert by_account(store) == by_account(single)
    finally:
        if kind == "redis":
            from conftest import drop_namespace

            drop_namespace(single.client, single.settings.namespace)


def test_a_key_replayed_within_a_batch_answers_its_first_decision(store: RedisStore) -> None:
    """The same idempotency key twice in one packed call (and once more in a later batch, read back
    from Redis), on users and on a team: the replays answer the first decision, flagged, and debit
    nothing; the same key on another account is its own."""
    users = same_shard(store, "replay-", 2)
    for u in users:
        store.add_credits(u, 100)
    tid = store.create_team("replay-team", initial_balance=100).team_id
    store.add_team_member(tid, users[0])
    reqs = [ChargeRequest(users[0], 10, "req", idempotency_key="same"),
            ChargeRequest(users[0], 1, "req"),
            ChargeRequest(users[0], 10, "req", idempotency_key="same"),
            ChargeRequest(users[1], 10, "req", idempotency_key="same")]
    first = store.charge_many(reqs)
    assert [(r.error, r.balance_after, r.idempotent) for r in first] == [
        (None, 90, False), (None, 89, False), (None, 90, True), (None, 90, False)]
    assert first[2].transaction_id == first[0].transaction_id != first[3].transaction_id
    again = store.charge_many(reqs[2:])  # read back from Redis: the same answers
    assert [(r.transaction_id, r.balance_after, r.idempotent) for r in again] == [
        (first[0].transaction_id, 90, True), (first[3].transaction_id, 90, True)]
    assert [store.get_balance(u).balance for u in users] == [89, 90]
    team = store.deduct_team_many([{"team_id": tid, "user_id": users[0], "amount": 30, "idempotency_key": "t"},
                                   {"team_id": tid, "user_id": users[0], "amount": 30, "idempotency_key": "t"},
                                   {"team_id": tid, "user_id": users[0], "amount": 5}])
    assert [(r.error, r.team_balance_after, r.idempotent) for r in team] == [
        (None, 70, False), (None, 70, True), (None, 65, False)]
    assert store.get_team_balance(tid).balance == 65


def test_an_error_reply_in_a_batch_raises_and_leaves_the_connection_in_step(store: RedisStore) -> None:
    """One shard call failing (a key of the wrong type) raises; the other shards' decisions ran,
    and the next calls on the same store read their own replies."""
    a, bad = "err-a", "err-bad"
    while store.core.keys.user(bad).shard == store.core.keys.user(a).shard:
        bad += "x"
    store.add_credits(a, 10)
    store.client.set(store.core.keys.user(bad).account, "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        # the failing shard call goes first: the replies after it must still be read off the wire
        store.charge_many([ChargeRequest(bad, 1, "x"), ChargeRequest(a, 3, "x"), ChargeRequest(a, 3, "x")])
    balance = store.get_balance(a).balance
    if not embedded(store):  # fakeredis's pipeline stops at the first error
        assert balance == 4
    assert store.charge(a, balance, "x").balance_after == 0
    assert [r.error for r in store.charge_many([ChargeRequest(a, 1, "x")] * 2)] == ["insufficient_credits"] * 2


def test_a_batch_of_charges_builds_each_call_only_as_it_packs_it(store: RedisStore) -> None:
    """charge_many validates every request first (a bad one raises with nothing sent: above) and
    builds none of their calls until it packs each, so its first script call is ready to be written
    (while Redis runs it, the next ones are built) before most decisions are built."""
    from ducto_redis.batch import Batch, charge_calls

    deferred = charge_calls(store.core, [ChargeRequest(f"lazy-{i}", 1, "req") for i in range(100)])
    built: list[Any] = []  # a decision's own call built, or its part of a shard's packed call written
    build, pack = deferred.build, deferred.pack

    def counted(d: Any) -> Any:
        built.append(d)
        return build(d)

    def packed(ds: list[Any]) -> Any:
        built.extend(ds)
        return pack(ds)

    deferred.build, deferred.pack = counted, packed
    batch = Batch(deferred, store.core.scripts, stream=True)
    assert built == []  # validated and grouped by shard: nothing built yet
    calls = batch.stream()
    next(calls)
    assert 0 < len(built) < 10  # the first call's decisions
    rest = list(calls)
    assert len(built) == 100 and 1 + len(rest) == batch.count


def test_a_batch_built_as_it_is_packed_sends_the_calls_a_batch_built_first_sends(store: RedisStore) -> None:
    """The same requests, their calls built before grouping or only as they are packed: the same script
    calls in the same order (the same KEYS, and ARGV but for the call ids), across shards, with keys,
    models, floors and quantities mixed, alone in a shard or past a call's most decisions in one."""
    import re

    from ducto_redis.batch import MAX_DECISIONS_PER_CALL, Batch, charge_calls

    one = store.core.keys.user("big-0").shard
    big = [u for u in (f"big-{i}" for i in range(60000)) if store.core.keys.user(u).shard == one]
    rnd = random.Random(5)
    reqs: list[ChargeRequest] = [ChargeRequest(u, 1, "req") for u in big[: MAX_DECISIONS_PER_CALL + 5]]
    for i in range(200):
        reqs.insert(rnd.randrange(len(reqs)), ChargeRequest(
            f"mix-{rnd.randrange(40)}", rnd.choice([1, 7]), "req", idempotency_key=rnd.choice([None, f"k{i}"]),
            metadata=rnd.choice([None, CreditMetadata(model="m1"), {"model": "m2", "note": "x\ty"}]),
            min_balance=rnd.choice([0, 3]), quantities=rnd.choice([None, {"tokens": 5}])))
    cid = re.compile(r"[0-9a-f]{20}")

    def sent(batch: Batch[Any]) -> list[tuple[str, list[str], list[Any]]]:
        return [(c.script.name if c.script else "", c.keys, ["<cid>" if cid.fullmatch(str(a)) else a for a in c.args])
                for c in batch.calls]

    first = Batch(list(charge_calls(store.core, reqs)), store.core.scripts)
    packed = Batch(charge_calls(store.core, reqs), store.core.scripts)
    assert packed.count == first.count == len(packed.calls) > 20
    assert sent(packed) == sent(first)
    assert sum(1 for c in packed.calls if c.script is not None and c.script.name == "debit") > 0  # alone in a shard
