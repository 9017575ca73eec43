"""Events: the emitter's API, and the scripts' cap events delivered to it exactly once each."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import CreditEvent, CreditEventEmitter, CreditManager, RedisStore, SpendCap


def ev(t: str = "credits.added") -> CreditEvent:
    return CreditEvent(type=t, timestamp=datetime.now(timezone.utc), user_id="u", data={"amount": 1})


def test_emitter_calls_handlers_of_the_type_in_order_and_off_removes_one() -> None:
    em = CreditEventEmitter()
    seen: list[str] = []

    def a(e: CreditEvent) -> None:
        seen.append("a:" + e.type)

    def b(e: CreditEvent) -> None:
        seen.append("b:" + e.type)

    em.on("credits.added", a)
    em.on("credits.added", b)
    em.on("credits.deducted", a)
    em.emit(ev())
    em.emit(ev("credits.expired"))  # nobody listens: nothing happens
    assert seen == ["a:credits.added", "b:credits.added"]
    em.off("credits.added", a)
    em.off("credits.added", a)  # absent: no error
    em.emit(ev())
    assert seen[-1] == "b:credits.added" and len(seen) == 3
    em.clear_type("credits.added")
    em.emit(ev())
    em.emit(ev("credits.deducted"))
    assert seen[-1] == "a:credits.deducted"
    em.clear_all()
    em.emit(ev("credits.deducted"))
    assert len(seen) == 4


def warned_store(store: RedisStore, users: int, charges: int) -> None:
    """A gateway (no manager) charges past warn caps: ``users * charges`` cap_warning events."""
    for i in range(users):
        u = f"u{i}"
        store.add_credits(u, 1_000)
        store.set_spend_cap(SpendCap(user_id=u, cap_type="daily", limit=1, action="warn"))
        for _ in range(charges):
            assert store.charge(u, 2, "chat").cap_action == "warn"


def collecting_manager(store: RedisStore, group: str = "g1", consumer: str = "c1") -> tuple[CreditManager, list[Any]]:
    em = CreditEventEmitter()
    got: list[Any] = []
    em.on("credits.cap_warning", got.append)
    em.on("credits.cap_reached", got.append)
    return CreditManager(store, emitter=em, event_group=group, event_consumer=consumer), got


def test_script_events_are_delivered_once_each_per_group(store: RedisStore) -> None:
    warned_store(store, users=3, charges=2)
    m1, got1 = collecting_manager(store)
    assert m1.poll_events() == 6
    assert m1.poll_events() == 0
    assert {e.user_id for e in got1} == {"u0", "u1", "u2"} and len(got1) == 6
    first = got1[0]
    assert first.type == "credits.cap_warning" and first.data["limit"] == 1 and first.data["action"] == "warn"
    assert first.data["account_kind"] == "user" and first.data["transaction_id"]
    same_group, got_same = collecting_manager(store, consumer="c2")
    assert same_group.poll_events() == 0 and got_same == []
    other_group, got_other = collecting_manager(store, group="audit")
    assert other_group.poll_events() == 6 and len({e.data["event_id"] for e in got_other}) == 6


def test_a_handler_that_fails_gets_its_event_again_and_the_rest_once(store: RedisStore) -> None:
    warned_store(store, users=1, charges=3)
    em = CreditEventEmitter()
    got: list[str] = []
    failed = {"done": False}

    def flaky(e: CreditEvent) -> None:
        if not failed["done"] and len(got) == 1:
            failed["done"] = True
            raise RuntimeError("webhook down")
        got.append(e.data["event_id"] if e.data else "")

    em.on("credits.cap_warning", flaky)
    m = CreditManager(store, emitter=em)
    with pytest.raises(RuntimeError):
        m.poll_events()
    assert m.poll_events(user_id="u0") == 2
    assert m.poll_events() == 0
    assert len(got) == 3 and len(set(got)) == 3


def test_two_managers_racing_in_one_group_share_the_events_without_duplicates(redis_client: Any) -> None:
    ns = new_namespace()
    store = RedisStore.from_url(REDIS_URL, namespace=ns)
    try:
        warned_store(store, users=8, charges=5)
        ids: list[str] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            s = RedisStore.from_url(REDIS_URL, namespace=ns)
            em = CreditEventEmitter()

            def keep(e: CreditEvent) -> None:
                with lock:
                    ids.append(e.data["event_id"] if e.data else "")

            em.on("credits.cap_warning", keep)
            m = CreditManager(s, emitter=em, event_group="shared", event_consumer=f"c{i}")
            for _ in range(3):
                m.poll_events(count=2)
            s.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == 40 and len(set(ids)) == 40
    finally:
        drop_namespace(store.client, ns)
        store.close()


def test_a_team_cap_refusal_is_delivered_with_the_team_as_account(store: RedisStore) -> None:
    from ducto_redis import UsageMetrics

    team = store.create_team("Eng", initial_balance=100)
    store.add_credits("alice", 0)
    store.add_team_member(team.team_id, "alice")
    store.set_team_spend_cap(team.team_id, cap_type="daily", limit=5, action="deny")
    em = CreditEventEmitter()
    got: list[CreditEvent] = []
    em.on("credits.cap_reached", got.append)
    m = CreditManager(store, emitter=em)
    m.publish_pricing_from_dict({"models": {"_default": "input_tokens * 1"}})
    assert m.deduct_team(team.team_id, "alice", UsageMetrics(input_tokens=6)).error == "spend_cap_exceeded"
    assert [(e.user_id, (e.data or {}).get("account_kind")) for e in got] == [(team.team_id, "team")]
    assert m.poll_events() == 0


def test_a_reader_recovers_when_its_stream_was_deleted(store: RedisStore) -> None:
    warned_store(store, users=1, charges=1)
    m, got = collecting_manager(store)
    assert m.poll_events(user_id="u0") == 1
    store.client.delete(store.core.keys.user("u0").events)
    store.charge("u0", 2, "chat")  # a new stream, without the group
    assert m.poll_events(user_id="u0") == 1 and len(got) == 2
