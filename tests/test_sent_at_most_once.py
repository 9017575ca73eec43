"""A decision takes effect at most once, however often its script call reaches Redis.

Two halves of one rule (INVARIANTS.md, "sent at most once"):
- the scripts: the very same call (same call id) arriving a second time is answered as a replay and
  changes nothing — whoever re-sent it;
- the stores: they never re-send a call that may have run. A client's own ``Retry`` (redis-py 8 turns
  it on by default) would re-send a command after a dropped connection; the stores write calls to
  the connection themselves, and a connection lost after the write is reported as
  ``DecisionOutcomeUnknown`` instead of being retried.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from conftest import REDIS_URL, drop_namespace, new_namespace, snapshot
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ducto_redis import AsyncRedisStore, DecisionOutcomeUnknown, RedisStore
from ducto_redis.batch import Batch, charge_calls
from ducto_redis.core import Call
from ducto_redis.operations import StoreOps

# ── the scripts: the same call twice ──────────────────────────────────


def call_of(store: RedisStore, method: str, *args: Any, **kwargs: Any) -> Call[Any]:
    """The one script call a store method makes (its definition's body), without running it."""
    op: Any = getattr(StoreOps, method)
    call: Call[Any] = op.build(store, *args, **kwargs)
    return call



def test_the_same_charge_call_sent_twice_debits_once_and_answers_the_replay(store: RedisStore) -> None:
    store.add_credits("u", 1_000, type="purchase")
    call = call_of(store, "charge", "u", 7, "chat")
    first = store._run(call)
    before = snapshot(store)
    again = store._run(call)
    assert (first.error, first.balance_after, first.idempotent) == (None, 993, False)
    assert (again.error, again.balance_after, again.idempotent) == (None, 993, True)
    assert again.transaction_id == first.transaction_id
    assert snapshot(store) == before  # nothing written: no debit, no ledger entry, no rate-limit use
    assert store.get_balance("u").balance == 993


def test_the_same_team_debit_call_sent_twice_debits_the_pool_once(store: RedisStore) -> None:
    team = store.create_team("pool", 500).team_id
    store.add_team_member(team, "m", spend_cap=100)
    call = call_of(store, "deduct_team", team, "m", 30)
    first = store._run(call)
    before = snapshot(store)
    again = store._run(call)
    assert first.error is None and not first.idempotent and again.idempotent
    assert again.transaction_id == first.transaction_id
    assert snapshot(store) == before
    assert store.get_team_balance(team).balance == 470


def test_the_same_reserve_and_settle_calls_sent_twice_hold_and_settle_once(store: RedisStore) -> None:
    store.add_credits("u", 1_000, type="purchase")
    reserve = call_of(store, "reserve_credits", "u", 100, "job")
    hold = store._run(reserve)
    before = snapshot(store)
    again_hold = store._run(reserve)
    assert again_hold.reservation_id == hold.reservation_id and again_hold.idempotent
    assert snapshot(store) == before
    assert store.get_balance("u").held == 100
    settle = call_of(store, "deduct_credits", "u", hold.reservation_id, 60)
    done = store._run(settle)
    before = snapshot(store)
    again = store._run(settle)
    assert again.transaction_id == done.transaction_id and again.idempotent
    assert snapshot(store) == before
    assert (store.get_balance("u").balance, store.get_balance("u").held) == (940, 0)


def test_the_same_top_up_call_sent_twice_credits_once(store: RedisStore) -> None:
    call = call_of(store, "add_credits", "u", 250, type="purchase")
    first = store._run(call)
    before = snapshot(store)
    again = store._run(call)
    assert again.transaction_id == first.transaction_id and again.idempotent
    assert snapshot(store) == before
    assert store.get_balance("u").balance == 250


def test_the_same_batch_sent_twice_debits_each_decision_once(store: RedisStore) -> None:
    for u in range(6):
        store.add_credits(f"u{u}", 100, type="purchase")
    calls = charge_calls(store.core, [{"user_id": f"u{u % 6}", "amount": 3, "operation_type": "req"}
                                      for u in range(12)])
    first = store._run_many(calls)
    before = snapshot(store)
    again = store._run_many(calls)
    assert all(r.error is None and not r.idempotent for r in first)
    assert all(r.idempotent for r in again)
    assert [r.transaction_id for r in again] == [r.transaction_id for r in first]
    assert snapshot(store) == before
    assert all(store.get_balance(f"u{u}").balance == 94 for u in range(6))


# ── the stores: a call written once is never re-sent ───────────────────


class CuttingProxy:
    """A TCP proxy to the shared Redis that counts script calls (FCALL / EVAL) and, while ``cut`` is
    set, drops the client's connection right after Redis has answered one (the reply never arrives).
    ``refuse`` makes it close new connections at once (nothing can be sent)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script_calls = 0
        self.cut = False
        self.refuse = False
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        awaiting_cut = False
        try:
            while not self.stopped:
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        n = data.count(b"FCALL") + data.count(b"EVAL")
                        self.script_calls += n
                        awaiting_cut = awaiting_cut or (n > 0 and self.cut)
                        server.sendall(data)
                    elif awaiting_cut:  # Redis ran it and answered: the answer is lost
                        return
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[CuttingProxy]:
    host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    p = CuttingProxy((host, int(port)))
    yield p
    p.close()


def retrying() -> Retry:
    """A client's own retry policy, as a user's client may have (redis-py 8 retries by default)."""
    return Retry(NoBackoff(), 3)


RETRY_ON: list[type[Exception]] = [redis.ConnectionError, redis.TimeoutError]


@pytest.fixture
def cut_store(proxy: CuttingProxy, redis_client: redis.Redis) -> Iterator[RedisStore]:
    """A RedisStore through the proxy, on a client that retries (as a user's client may)."""
    client = redis.Redis(port=proxy.port, decode_responses=True, retry=retrying(), retry_on_error=RETRY_ON)
    store = RedisStore(client, namespace=new_namespace())
    yield store
    drop_namespace(redis_client, store.settings.namespace)
    client.close()


def test_a_charge_whose_answer_is_lost_is_reported_unknown_and_never_sent_again(
        cut_store: RedisStore, proxy: CuttingProxy) -> None:
    cut_store.add_credits("u", 100, type="purchase")
    proxy.script_calls, proxy.cut = 0, True
    with pytest.raises(DecisionOutcomeUnknown):
        cut_store.charge("u", 10, "chat", idempotency_key="req-1")
    assert proxy.script_calls == 1  # the client's Retry did not send it again
    proxy.cut = False
    assert cut_store.get_balance("u").balance == 90  # it ran, once
    again = cut_store.charge("u", 10, "chat", idempotency_key="req-1")  # the caller's own retry
    assert again.idempotent and again.balance_after == 90


def test_a_batch_whose_answers_are_lost_is_reported_unknown_and_never_sent_again(
        cut_store: RedisStore, proxy: CuttingProxy) -> None:
    for u in range(4):
        cut_store.add_credits(f"u{u}", 100, type="purchase")
    requests = [{"user_id": f"u{u}", "amount": 5, "operation_type": "req"} for u in range(4)]
    packed = Batch(charge_calls(cut_store.core, requests), cut_store.core.scripts).calls
    proxy.script_calls, proxy.cut = 0, True
    with pytest.raises(DecisionOutcomeUnknown):
        cut_store.charge_many(requests)
    assert proxy.script_calls == len(packed)  # one script call per shard, each written once
    proxy.cut = False
    assert all(cut_store.get_balance(f"u{u}").balance == 95 for u in range(4))


def test_a_team_debit_whose_answer_is_lost_is_reported_unknown_and_never_sent_again(
        cut_store: RedisStore, proxy: CuttingProxy) -> None:
    team = cut_store.create_team("pool", 100).team_id
    cut_store.add_team_member(team, "m")
    proxy.script_calls, proxy.cut = 0, True
    with pytest.raises(DecisionOutcomeUnknown):
        cut_store.deduct_team(team, "m", 10)
    assert proxy.script_calls == 1
    proxy.cut = False
    assert cut_store.get_team_balance(team).balance == 90


def test_an_async_charge_whose_answer_is_lost_is_reported_unknown_and_never_sent_again(
        proxy: CuttingProxy, redis_client: redis.Redis) -> None:
    namespace = new_namespace()

    async def go() -> tuple[int, int]:
        client = aredis.Redis(port=proxy.port, decode_responses=True, retry=AsyncRetry(NoBackoff(), 3),
                              retry_on_error=RETRY_ON)
        store = AsyncRedisStore(client, namespace=namespace)
        try:
            await store.add_credits("u", 100, type="purchase")
            proxy.script_calls, proxy.cut = 0, True
            with pytest.raises(DecisionOutcomeUnknown):
                await store.charge("u", 10, "chat")
            sent, proxy.cut = proxy.script_calls, False
            return sent, (await store.get_balance("u")).balance
        finally:
            await client.aclose()

    try:
        assert asyncio.run(go()) == (1, 90)
    finally:
        drop_namespace(redis_client, namespace)


def test_a_charge_that_cannot_connect_raises_a_plain_connection_error_and_changes_nothing(
        cut_store: RedisStore, proxy: CuttingProxy) -> None:
    cut_store.add_credits("u", 100, type="purchase")
    cut_store.client.connection_pool.disconnect()
    proxy.refuse = True
    proxy.script_calls = 0
    with pytest.raises(redis.ConnectionError) as raised:
        cut_store.charge("u", 10, "chat")
    assert not isinstance(raised.value, DecisionOutcomeUnknown)  # nothing was sent: safe to retry
    assert proxy.script_calls == 0
    proxy.refuse = False
    assert cut_store.get_balance("u").balance == 100


def test_a_store_through_the_proxy_answers_normally_when_nothing_is_cut(
        cut_store: RedisStore, proxy: CuttingProxy) -> None:
    cut_store.add_credits("u", 100, type="purchase")
    r = cut_store.charge("u", 10, "chat")
    assert (r.error, r.balance_after, r.idempotent) == (None, 90, False)


# ── the rounds' rules, without I/O (connect._plan): what a reply that says "did not run" leads to ──


def _drive_with(replies_per_send: list[list[Any]]) -> tuple[list[Any], list[str]]:
    """Run connect._plan for one call on a stand-in client, answering each Send with the next list of
    replies; the steps taken and the result (or the exception raised)."""
    from ducto_redis import connect
    from ducto_redis.scripts import scripts

    call: Call[Any] = Call(scripts()["balance"], ["{t:0}:u:x", "{t:0}:u:x:grants"], ["cfg"], lambda r: r)
    plan = connect._plan(object(), [call])
    steps: list[str] = []
    answers = iter(replies_per_send)
    answer: Any = None
    try:
        step = next(plan)
        while True:
            sent = f"{[c[0] for c in step.commands]}" if isinstance(step, connect.Send) else ""
            steps.append(type(step).__name__ + sent)
            answer = next(answers) if isinstance(step, connect.Send) else None
            step = plan.send(answer)
    except StopIteration as done:
        return list(done.value), steps


def test_a_call_that_runs_in_the_last_allowed_round_is_answered_not_reported_as_failed() -> None:
    from redis.exceptions import TryAgainError

    from ducto_redis.connect import MAX_ROUNDS

    tries: list[list[Any]] = [[TryAgainError("TRYAGAIN")] for _ in range(MAX_ROUNDS - 1)]
    result, steps = _drive_with([*tries, ["ok|0|1-0/0"]])
    assert result == ["ok|0|1-0/0"]  # it ran: its answer, never the earlier TRYAGAIN
    assert steps.count("Send['FCALL']") == MAX_ROUNDS


def test_calls_answered_did_not_run_every_time_raise_the_last_answer() -> None:
    from redis.exceptions import TryAgainError

    from ducto_redis.connect import MAX_ROUNDS

    with pytest.raises(TryAgainError):
        _drive_with([[TryAgainError("TRYAGAIN")] for _ in range(MAX_ROUNDS)])


def test_moved_refreshes_the_slot_map_and_is_not_followed_as_an_ask() -> None:
    from redis.exceptions import MovedError

    result, steps = _drive_with([[MovedError("1 127.0.0.1:7001")], ["ok|0|1-0/0"]])
    assert result == ["ok|0|1-0/0"]
    assert steps == ["Send['FCALL']", "Refresh", "Send['FCALL']"]  # no ASKING: MOVED is not ASK


def test_a_reply_remembered_before_the_limit_field_replays_with_no_limit(store: RedisStore) -> None:
    """Idempotency keys keep a decision's reply up to a day; replies remembered before the reply
    gained its ``limit`` field (RateLimit-Limit) lack it, and still replay (as no limit)."""
    store.add_credits("old", 100, type="purchase")
    first = store.charge("old", 5, "chat", idempotency_key="k-old")
    key = store.core.keys.user("old").idempotency("k-old")
    stored = store.client.get(key)
    text = stored.decode() if isinstance(stored, bytes) else stored
    older = text.rsplit("|", 1)[0]  # the nine fields a debit replied before
    assert older.count("|") == 8
    store.client.set(key, older, keepttl=True)
    again = store.charge("old", 5, "chat", idempotency_key="k-old")
    assert again.idempotent and again.transaction_id == first.transaction_id
    assert again.balance_after == 95 and again.rate_limit_limit is None
    assert store.get_balance("old").balance == 95
