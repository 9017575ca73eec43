"""The lean sync path (connect.Lane): a plain client's connections kept between a store's calls,
under every rule of "sent at most once" (connect.py's docstring).

Each test here fails without what it names: the lane's own connection reuse, its check before a
write (a connection the server closed is opened again, nothing sent twice nor reported unknown),
the "did not run" rounds after a lane write, one connection per call at a time across threads,
a forked child that never writes on its parent's connections, the pool's connections given back
past the lane's bound.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import RedisStore
from ducto_redis.connect import LANE_IDLE_MAX, Lane, _Wire, lane_of
from ducto_redis.core import Call
from ducto_redis.scripts import Library, Script, _read, library_source

pytestmark = pytest.mark.redis


@pytest.fixture
def lean(redis_client: redis.Redis) -> Iterator[RedisStore]:
    """A RedisStore on a plain client of its own (so its lane is its own)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStore(client, namespace=new_namespace())
    yield store
    drop_namespace(redis_client, store.settings.namespace)
    client.close()


def lane(store: RedisStore) -> Lane:
    assert store._lane is not None
    return store._lane


def counting_gets(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pool's get_connection calls from now on."""
    pool: Any = store.client.connection_pool
    real, count = pool.get_connection, [0]

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", get_connection)
    return count


def test_a_plain_client_gets_a_lane_and_a_cluster_or_blocking_pool_does_not(lean: RedisStore) -> None:
    assert lane_of(lean.client) is lane(lean)  # one lane per pool, shared by every store on it
    blocking = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL))
    assert lane_of(blocking) is None
    blocking.close()


def test_charges_on_a_plain_client_reuse_one_connection_without_asking_the_pool(
        lean: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    lean.add_credits("u", 100)
    gets = counting_gets(lean, monkeypatch)
    results = [lean.charge("u", 1, "chat") for _ in range(5)]
    assert [r.balance_after for r in results] == [99, 98, 97, 96, 95]
    assert gets[0] == 0  # every call on the lane's connection, none taken from the pool
    assert len(lane(lean).idle) == 1


def test_a_lane_connection_the_server_closed_is_opened_again_before_the_call_is_written(
        lean: RedisStore, redis_client: redis.Redis) -> None:
    lean.add_credits("u", 100)
    lean.charge("u", 1, "chat")
    (wire,) = lane(lean).idle
    host, port = wire.sock.getsockname()[:2]
    assert redis_client.client_kill_filter(addr=f"{host}:{port}", skipme=True) == 1
    r = lean.charge("u", 1, "chat")  # not DecisionOutcomeUnknown: nothing had been written
    assert (r.error, r.balance_after) == (None, 98)
    assert lean.get_balance("u").balance == 98  # it ran once


def test_a_call_answered_function_not_found_on_the_lane_loads_the_library_and_runs_once(
        lean: RedisStore, redis_client: redis.Redis) -> None:
    lean.add_credits("u", 100)
    # a library of its own (a name nobody has loaded): its first FCALL is answered "Function not found"
    library = Library(library_source() + f"\n-- {uuid.uuid4().hex}", {"debit": _read("debit")})
    call = lean.core.debit("u", 7, operation_type="chat")
    call.script = Script("debit", library)
    try:
        assert not redis_client.function_list(library=library.name)
        r = lean._run(call)
        assert (r.error, r.balance_after, r.idempotent) == (None, 93, False)
        assert redis_client.function_list(library=library.name)  # loaded by the "did not run" round
        assert lean.get_balance("u").balance == 93
        assert len(lane(lean).idle) == 1  # the lane's connection is still in step
        assert lean.charge("u", 1, "chat").balance_after == 92
    finally:
        redis_client.function_delete(library.name)


def test_an_error_reply_on_the_lane_is_raised_and_the_connection_stays_in_step(lean: RedisStore) -> None:
    lean.add_credits("u", 100)
    call = lean.core.debit("u", 7, operation_type="chat")
    call.keys = call.keys[:1]  # too few KEYS: the script fails (an error reply of a call that ran)
    with pytest.raises(redis.ResponseError):
        lean._run(call)
    assert len(lane(lean).idle) == 1
    assert lean.charge("u", 1, "chat").balance_after == 99


def test_threads_sharing_one_store_each_get_their_own_connection_and_every_decision_counts(
        lean: RedisStore) -> None:
    users = [f"u{i}" for i in range(8)]
    for u in users:
        lean.add_credits(u, 10_000)
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def work(u: str) -> None:
        try:
            barrier.wait()
            for n in range(200):
                r = lean.charge(u, 1, "chat")
                assert (r.error, r.balance_after) == (None, 10_000 - n - 1)
            assert [r.error for r in lean.charge_many([{"user_id": u, "amount": 1, "operation_type": "b"}] * 3)] \
                == [None] * 3
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert all(lean.get_balance(u).balance == 10_000 - 203 for u in users)
    idle = lane(lean).idle
    assert 1 <= len(idle) <= LANE_IDLE_MAX
    assert len({id(w.conn) for w in idle}) == len(idle)  # never one connection twice


def test_connections_past_the_lanes_bound_go_back_to_the_pool(lean: RedisStore) -> None:
    lean.add_credits("u", 1_000)
    pool: Any = lean.client.connection_pool
    taken = [pool.get_connection() for _ in range(LANE_IDLE_MAX + 2)]
    for conn in taken:  # as if that many threads had each just finished a call
        lane(lean)._give_back(pool, _Wire.of(conn))
    assert len(lane(lean).idle) == LANE_IDLE_MAX
    assert len(pool._available_connections) >= 2
    assert lean.charge("u", 1, "chat").balance_after == 999


def test_a_closed_client_opens_its_lane_connection_again(lean: RedisStore) -> None:
    lean.add_credits("u", 100)
    lean.charge("u", 1, "chat")
    lean.client.close()  # disconnects every connection of the pool, the lane's too
    assert lean.charge("u", 1, "chat").balance_after == 98


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_never_writes_on_its_parents_lane_connections(lean: RedisStore) -> None:
    lean.add_credits("u", 100)
    lean.charge("u", 1, "chat")
    parent_wire = lane(lean).idle[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its lane starts empty, its charge on a connection of its own
        try:
            ok = not lane(lean).idle and lean.charge("u", 1, "chat").balance_after == 98
            ok = ok and lane(lean).idle[0].sock is not parent_wire.sock
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert lane(lean).idle == [parent_wire]
    assert lean.charge("u", 1, "chat").balance_after == 97  # the parent's connection still in step


def test_another_namespace_on_the_same_client_shares_the_lane(lean: RedisStore, redis_client: redis.Redis) -> None:
    other = RedisStore(lean.client, namespace=new_namespace())
    try:
        assert other._lane is lean._lane
        other.add_credits("u", 5)
        lean.add_credits("u", 9)
        assert (other.charge("u", 1, "x").balance_after, lean.charge("u", 1, "x").balance_after) == (4, 8)
        assert len(lane(lean).idle) == 1
    finally:
        drop_namespace(redis_client, other.settings.namespace)


# ── charge_many on the lane: each script call written as soon as it is built ──


def spread(store: RedisStore, n: int) -> list[dict[str, Any]]:
    """``n`` charges of 5 on ``n`` users (each with 100), over most of the namespace's shards."""
    for i in range(n):
        store.add_credits(f"s{i}", 100)
    return [{"user_id": f"s{i}", "amount": 5, "operation_type": "req"} for i in range(n)]


def counting_writes(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every piece the lane writes from now on (the socket's sendall, seen from the lane's _Wire)."""
    writes: list[bytes] = []
    real_of = _Wire.of

    class Spy:
        def __init__(self, sock: Any) -> None:
            self.sock = sock

        def sendall(self, data: bytes) -> None:
            writes.append(bytes(data))
            self.sock.sendall(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sock, name)

    def of(conn: Any) -> _Wire:
        wire = real_of(conn)
        wire.sock = Spy(wire.sock)
        return wire

    monkeypatch.setattr(_Wire, "of", staticmethod(of))
    monkeypatch.setattr(_Wire, "ready", lambda self: False)  # rebuild the lane's wire through the spy
    return writes


def test_a_large_batch_is_written_in_pieces_as_it_is_built_and_answers_as_one_write_would(
        lean: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducto_redis.batch import Batch, charge_calls
    from ducto_redis.connect import FIRST_PIECE, PIECE

    requests = spread(lean, 60)
    count = Batch(charge_calls(lean.core, requests), lean.core.scripts).count
    assert count > PIECE
    writes = counting_writes(lean, monkeypatch)
    results = lean.charge_many(requests)
    assert [(r.error, r.balance_after) for r in results] == [(None, 95)] * 60
    sizes, size, left = [], FIRST_PIECE, count  # pieces of 1, 2, 4, ... calls, then PIECE each
    while left > 0:
        sizes.append(min(size, left))
        left, size = left - size, min(2 * size, PIECE)
    assert [w.count(b"FCALL") for w in writes] == sizes
    assert sizes[:5] == [1, 2, 4, 8, 16] and all(n == PIECE for n in sizes[5:-1])
    assert all(lean.get_balance(f"s{i}").balance == 95 for i in range(60))


def test_a_small_batch_is_one_write(lean: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = spread(lean, 3)
    writes = counting_writes(lean, monkeypatch)
    assert [r.balance_after for r in lean.charge_many(requests)] == [95] * 3
    assert len(writes) == 1


def test_a_batch_whose_packing_fails_after_its_first_write_is_reported_unknown_and_nothing_runs_twice(
        lean: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducto_redis import DecisionOutcomeUnknown, connect

    requests = spread(lean, 60)
    writes = counting_writes(lean, monkeypatch)
    real, packed = connect._pack_command, [0]

    def failing(command: Any) -> bytes:
        packed[0] += 1
        if packed[0] == 3:  # the first piece (one call) is written by now
            raise RuntimeError("packing failed")
        return real(command)  # type: ignore[no-any-return]

    monkeypatch.setattr(connect, "_pack_command", failing)
    with pytest.raises(DecisionOutcomeUnknown):
        lean.charge_many(requests)
    monkeypatch.setattr(connect, "_pack_command", real)
    assert [w.count(b"FCALL") for w in writes] == [1]  # written: the first call only, once
    balances = [lean.get_balance(f"s{i}").balance for i in range(60)]
    assert set(balances) <= {95, 100} and 0 < balances.count(95) < 60  # the first call's decisions ran, once
    assert lean.charge("s0", 1, "x").error is None  # the lane goes on, on a connection in step


def test_a_batch_whose_packing_fails_before_any_write_raises_as_it_is_and_keeps_the_connection(
        lean: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducto_redis import DecisionOutcomeUnknown, connect

    requests = spread(lean, 60)
    lean.charge("s0", 1, "x")
    (wire,) = lane(lean).idle

    def failing(command: Any) -> bytes:
        raise RuntimeError("packing failed")

    monkeypatch.setattr(connect, "_pack_command", failing)
    with pytest.raises(RuntimeError) as raised:
        lean.charge_many(requests)
    assert not isinstance(raised.value, DecisionOutcomeUnknown)  # nothing was sent
    assert lane(lean).idle == [wire]
    monkeypatch.undo()
    assert all(lean.get_balance(f"s{i}").balance == (99 if i == 0 else 100) for i in range(60))


def test_a_streamed_batch_cut_after_its_first_answer_is_reported_unknown_and_never_sent_again(
        redis_client: redis.Redis) -> None:
    from test_sent_at_most_once import RETRY_ON, CuttingProxy, retrying

    from ducto_redis import DecisionOutcomeUnknown
    from ducto_redis.batch import Batch, charge_calls

    host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    proxy = CuttingProxy((host, int(port)))
    client = redis.Redis(port=proxy.port, decode_responses=True, retry=retrying(), retry_on_error=RETRY_ON)
    store = RedisStore(client, namespace=new_namespace())
    try:
        assert store._lane is not None
        requests = spread(store, 60)
        count = Batch(charge_calls(store.core, requests), store.core.scripts).count
        proxy.script_calls, proxy.cut = 0, True
        with pytest.raises(DecisionOutcomeUnknown):
            store.charge_many(requests)
        sent, proxy.cut = proxy.script_calls, False
        assert 1 <= sent <= count  # each call written at most once, none sent again
        balances = [store.get_balance(f"s{i}").balance for i in range(60)]
        assert set(balances) <= {95, 100} and balances.count(95) >= 1
    finally:
        drop_namespace(redis_client, store.settings.namespace)
        client.close()
        proxy.close()


def test_a_batch_answered_function_not_found_on_the_lane_runs_every_decision_once(
        lean: RedisStore, redis_client: redis.Redis) -> None:
    from ducto_redis.batch import MANY_TWINS

    requests = spread(lean, 60)
    library = Library(library_source() + f"\n-- {uuid.uuid4().hex}",
                      {"debit": _read("debit"), "debit_many": _read("debit_many")})
    fresh = {name: Script(name, library) for name in ("debit", "debit_many")}
    calls = [lean.core.debit(r["user_id"], r["amount"], operation_type=r["operation_type"]) for r in requests]
    for call in calls:
        call.script = fresh["debit"]
    assert MANY_TWINS["debit"].name == "debit_many"
    real = lean.core.scripts
    lean.core.scripts = {**real, **fresh}
    try:
        results = lean._run_many(calls)
        assert [(r.error, r.balance_after) for r in results] == [(None, 95)] * 60
        assert all(lean.get_balance(f"s{i}").balance == 95 for i in range(60))
        assert len(lane(lean).idle) == 1
    finally:
        lean.core.scripts = real
        redis_client.function_delete(library.name)


def test_a_batch_with_an_error_reply_raises_it_after_reading_every_reply(lean: RedisStore) -> None:
    requests = spread(lean, 30)
    calls: list[Call[Any]] = [lean.core.debit(r["user_id"], r["amount"], operation_type=r["operation_type"])
                              for r in requests]
    calls[7] = lean.core.user_exists("s7")  # another script: sent on its own, between the packed calls
    calls[7].keys, calls[7].args = [], []  # no KEYS, no ARGV: an error reply of a call that ran
    with pytest.raises(redis.ResponseError):
        lean._run_many(calls)
    assert len(lane(lean).idle) == 1  # every reply was read: the connection is still in step
    assert lean.charge("s0", 1, "x").balance_after in (94, 99)


def test_a_batchs_count_is_the_number_of_script_calls_it_builds(lean: RedisStore) -> None:
    from ducto_redis.batch import MAX_DECISIONS_PER_CALL, Batch

    one_user: list[Call[Any]] = [lean.core.debit("same", 1, operation_type="x")
                                 for _ in range(2 * MAX_DECISIONS_PER_CALL + 1)]
    mixed: list[Call[Any]] = [*one_user[:5], lean.core.user_exists("same"), *one_user[5:]]
    nothing: list[Call[Any]] = []
    for calls, expected in ((one_user, 3), (mixed, 4), (nothing, 0)):
        streamed = Batch(calls, lean.core.scripts, stream=True)
        assert streamed.count == expected and not streamed.calls
        assert len(list(streamed.stream())) == expected == len(Batch(calls, lean.core.scripts).calls)
