"""Key schema (hash tags, escaping, isolation), input validation and NOSCRIPT recovery."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from conftest import snapshot
from redis.crc import key_slot

from ducto_redis import InvalidInputError, KeySchema, RedisStore, SpendCap

WEIRD_IDS = [
    "{x}", "a:b", "a}b{c", "user 1", "tab\tnew\nline", "%7B", "*", "", "é" * 512, "x" * 1024,  # 1 024 bytes: the most
]


def test_every_key_of_an_account_shares_one_hash_slot_with_its_ledger_stream() -> None:
    schema = KeySchema("ducto", 64)
    for uid in [w for w in WEIRD_IDS if w] + ["user-1"]:
        k = schema.user(uid)
        names = [k.account, k.grants, k.grant_index, k.idempotency(None), k.idempotency("{evil}:key"), k.ledger,
                 k.events]
        assert len({key_slot(n.encode()) for n in names}) == 1, uid
        assert all(n.startswith(k.tag) for n in names)


def test_escaping_is_injective_so_ids_never_share_keys() -> None:
    schema = KeySchema("ducto", 8)
    ids = [w for w in WEIRD_IDS if w] + ["a%3Ab", "a%253Ab", "a b", "a%20b"]
    accounts = [schema.user(i).account for i in ids]
    assert len(set(accounts)) == len(ids)
    # no escaped id can end one account's key inside another's namespace
    for a in accounts:
        assert a.count("{") == 1 and a.count("}") == 1


def test_namespaces_are_isolated(store: RedisStore) -> None:
    other = RedisStore(store.client, store.settings, namespace=store.settings.namespace + "x")
    store.add_credits("u", 100)
    assert other.get_balance("u").balance == 0
    other.add_credits("u", 5)
    assert store.get_balance("u").balance == 100


@pytest.mark.parametrize("uid", [w for w in WEIRD_IDS if w])
def test_ids_of_any_content_work_and_stay_in_their_account(store: RedisStore, uid: str) -> None:
    store.add_credits(uid, 10)
    store.add_credits(uid[:-1] + "~", 1)
    assert store.get_balance(uid).balance == 10
    r = store.reserve_credits(uid, 3, "op", min_balance=0)
    assert store.deduct_credits(uid, r.reservation_id, 3, idempotency_key="{k}:1").balance_after == 7
    tags = {key.split("}")[0] for key in snapshot(store)}
    assert len(tags) <= 2  # the two accounts' shards only


BAD_AMOUNTS = [1.0, 1.5, math.nan, math.inf, True, False, "10", None, [1]]


@pytest.mark.parametrize("bad", BAD_AMOUNTS, ids=repr)
def test_non_integer_amounts_are_refused_naming_the_field_and_nothing_is_written(
    store: RedisStore, bad: object
) -> None:
    store.add_credits("u", 100)
    r = store.reserve_credits("u", 10, "x")
    before = snapshot(store)
    calls: list[Callable[[], object]] = [
        lambda: store.add_credits("u", bad),  # type: ignore[arg-type]
        lambda: store.reserve_credits("u", bad, "x"),  # type: ignore[arg-type]
        lambda: store.deduct_credits("u", r.reservation_id, bad),  # type: ignore[arg-type]
        lambda: store.charge("u", bad, "x"),  # type: ignore[arg-type]
    ]
    if bad is not None:  # check_spend_cap(amount=None) means "one more credit"
        calls.append(lambda: store.check_spend_cap("u", amount=bad))  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.field == "amount"
    assert snapshot(store) == before


@pytest.mark.parametrize("bad", [0, -1, -5, 2**53, 2**63])
def test_out_of_range_amounts_raise_naming_the_field_on_every_method_and_nothing_is_written(
    store: RedisStore, bad: int
) -> None:
    """One rule for an amount out of range, whatever the method (issue 14: charge(-5) answered
    invalid_amount with amount=5 and balance_after=0 while add_credits(-5) raised)."""
    store.add_credits("u", 100)
    tx = store.charge("u", 10, "x").transaction_id
    hold = store.reserve_credits("u", 10, "x").reservation_id
    tid = store.create_team("t", initial_balance=100).team_id
    store.add_team_member(tid, "u")
    before = snapshot(store)
    calls: list[Any] = [
        lambda: store.reserve_credits("u", bad, "x"),
        lambda: store.charge("u", bad, "x"),
        lambda: store.charge_with_allowance("u", bad, "x", allowances={}),
        lambda: store.deduct_team(tid, "u", bad),
        lambda: store.reserve_team(tid, "u", bad),
        lambda: store.refund_credits(tx, bad),
        lambda: store.charge_many([{"user_id": "u", "amount": bad, "operation_type": "x"}]),
    ]
    if bad != 0:  # 0 is a valid credit (it creates the record) and a valid settlement (releases the hold)
        calls += [lambda: store.add_credits("u", bad), lambda: store.deduct_credits("u", hold, bad),
                  lambda: store.top_up_team(tid, bad)]
    for call in calls:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.field.endswith("amount"), info.value
    assert snapshot(store) == before


def test_settling_zero_releases_the_whole_hold(store: RedisStore) -> None:
    store.add_credits("u", 100)
    r = store.reserve_credits("u", 50, "x")
    d = store.deduct_credits("u", r.reservation_id, 0)
    assert d.error is None and d.balance_after == 100 and store.get_balance("u").held == 0


@pytest.mark.parametrize("field,call", [
    ("user_id", lambda s: s.get_balance("")),
    ("user_id", lambda s: s.add_credits(123, 5)),
    ("user_id", lambda s: s.charge("x" * 4097, 5, "op")),
    ("reservation_id", lambda s: s.deduct_credits("u", "", 5)),
    ("reservation_id", lambda s: s.release_reservation("u", None)),
    ("operation_type", lambda s: s.charge("u", 5, "")),
    ("idempotency_key", lambda s: s.charge("u", 5, "op", idempotency_key="")),
    ("metadata", lambda s: s.charge("u", 5, "op", metadata="gpt-4")),
    ("min_balance", lambda s: s.reserve_credits("u", 5, "op", min_balance=-1)),
    ("expires_at", lambda s: s.add_credits("u", 5, expires_at="tomorrow")),
    ("cap", lambda s: s.set_spend_cap({"user_id": "u", "limit": 5})),
    ("user_id", lambda s: s.set_spend_cap(SpendCap(limit=5))),
])
def test_bad_arguments_raise_naming_the_field_and_write_nothing(
    store: RedisStore, field: str, call: object
) -> None:
    store.add_credits("u", 100)
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as info:
        call(store)  # type: ignore[operator]
    assert info.value.field == field
    assert snapshot(store) == before


def test_scripts_reload_transparently_after_function_and_script_flush(flushable_store: RedisStore) -> None:
    store = flushable_store
    assert store.setup().success
    store.add_credits("u", 100)
    store.client.function_flush()
    assert store.charge("u", 10, "x").balance_after == 90
    store.client.function_flush()
    store.client.script_flush()
    assert store.get_balance("u").balance == 90


def test_setup_loads_one_library_with_a_function_per_script(flushable_store: RedisStore) -> None:
    store = flushable_store
    store.client.function_flush()
    result = store.setup()
    assert result.success and "debit.lua" in result.rpcs_created
    library = next(iter(store.core.scripts.values())).library

    def as_dict(x: Any) -> dict[str, Any]:  # a RESP3 map, or RESP2's flat [name, value, ...]
        pairs = x.items() if isinstance(x, dict) else zip(x[0::2], x[1::2], strict=True)
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in pairs}

    reply = store.client.function_list(library=library.name)
    per_node = list(reply.values()) if isinstance(reply, dict) else [reply]  # a cluster: every primary
    for libraries in per_node:
        (loaded,) = [lib for lib in map(as_dict, libraries)
                     if lib["library_name"] in (library.name, library.name.encode())]
        names = {as_dict(f)["name"] for f in loaded["functions"]}
        assert {n if isinstance(n, str) else n.decode() for n in names} == {
            s.function for s in store.core.scripts.values()}


def test_memory_store_works_without_setup() -> None:
    from ducto_redis import MemoryStore

    s = MemoryStore()
    s.add_credits("u", 5)
    assert s.get_balance("u").balance == 5
