"""Redis Cluster specifics: one slot per account, health on every node, a slot moved under load."""

from __future__ import annotations

import threading
import time
import uuid

import redis
from conftest import LocalCluster, drop_namespace, ledger_entries, new_namespace
from redis.crc import key_slot

from ducto_redis import RedisStore
from ducto_redis.aio import AsyncRedisStore


def node_ids(cluster: LocalCluster) -> dict[int, str]:
    return {p: redis.Redis(port=p, decode_responses=True).cluster("MYID") for p in cluster.ports}


def owner_port(cluster: LocalCluster, slot: int) -> int:
    for p in cluster.ports:
        r = redis.Redis(port=p)
        for start, end, *nodes in r.cluster("SLOTS"):
            if start <= slot <= end:
                return int(nodes[0][1])
    raise AssertionError("slot not served")


def migrate_slot(cluster: LocalCluster, slot: int, src: int, dst: int, pause: float = 0.005) -> None:
    """Move one slot key by key (the way redis-cli --cluster reshard does), slowly."""
    ids = node_ids(cluster)
    s, d = redis.Redis(port=src), redis.Redis(port=dst)
    d.cluster("SETSLOT", slot, "IMPORTING", ids[src])
    s.cluster("SETSLOT", slot, "MIGRATING", ids[dst])
    while True:
        keys = s.cluster("GETKEYSINSLOT", slot, 5)
        if not keys:
            break
        s.migrate("127.0.0.1", dst, keys, 0, 5000)
        time.sleep(pause)
    for p in cluster.ports:
        redis.Redis(port=p).cluster("SETSLOT", slot, "NODE", ids[dst])


def test_every_key_of_an_account_is_in_one_slot_on_the_cluster(store: RedisStore) -> None:
    store.add_credits("u", 10)
    store.reserve_credits("u", 1, "x")
    keys = [k for k in store.client.scan_iter(match=f"{{{store.settings.namespace}:*") if ":u:u" in k]
    keys.append(store.core.keys.user("u").ledger)
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_health_runs_a_script_on_every_node(cluster: LocalCluster) -> None:
    store = RedisStore.from_url(cluster.url, namespace=new_namespace())
    assert store.health()
    slots = {owner_port(cluster, key_slot(store.core.keys.probe(s).account.encode()))
             for s in range(store.settings.shards)}
    assert slots == set(cluster.ports)  # the probes reach every primary


def test_async_store_works_on_the_cluster(cluster: LocalCluster) -> None:
    import asyncio

    ns = new_namespace()

    async def go() -> tuple[int, list[int]]:
        s = AsyncRedisStore.from_url(cluster.url, namespace=ns)
        try:
            for i in range(10):
                await s.add_credits(f"a{i}", 10)
            out = await s.charge_many([{"user_id": f"a{i}", "amount": 3, "operation_type": "x"} for i in range(10)])
            return (await s.charge("a1", 1, "x")).balance_after, [r.balance_after for r in out]
        finally:
            await s.close()

    after, batch = asyncio.run(go())
    assert batch == [7] * 10 and after == 6
    drop_namespace(RedisStore.from_url(cluster.url, namespace=ns).client, ns)


def test_moving_a_slot_under_load_loses_and_doubles_no_decision(cluster: LocalCluster) -> None:
    ns = new_namespace()
    store = RedisStore.from_url(cluster.url, namespace=ns)
    shard = store.core.keys.user("hot-0").shard
    users = [u for u in (f"hot-{i}" for i in range(400)) if store.core.keys.user(u).shard == shard][:4]
    for u in users:
        store.add_credits(u, 1_000_000)
    slot = key_slot(store.core.keys.user(users[0]).account.encode())
    src = owner_port(cluster, slot)
    dst = next(p for p in cluster.ports if p != src)
    accepted: dict[str, int] = {u: 0 for u in users}
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(n: int) -> None:
        s = RedisStore.from_url(cluster.url, namespace=ns)
        i = 0
        while not stop.is_set():
            user = users[i % len(users)]
            key = f"w{n}-{i}"
            # while a slot moves, a script whose keys are split between the nodes gets TRYAGAIN
            # (it did not run); a client retries with the same idempotency key, so never twice
            for _attempt in range(400):
                try:
                    r = s.charge(user, 1, "x", idempotency_key=key)
                    break
                except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
                    last = exc
                    time.sleep(0.025)
            else:
                errors.append(last)
                return
            if r.error is None and not r.idempotent:
                with lock:
                    accepted[user] += 1
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    migrate_slot(cluster, slot, src, dst)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not errors, errors
        assert owner_port(cluster, slot) == dst
        entries = ledger_entries(store)
        for u in users:
            assert accepted[u] > 0
            assert store.get_balance(u).balance == 1_000_000 - accepted[u]
            assert sum(1 for e in entries if e["acct"] == u and e["kind"] == "debit") == accepted[u]
    finally:
        drop_namespace(store.client, ns)




def test_flusher_restore_and_reconcile_work_per_shard_on_the_cluster(cluster: LocalCluster) -> None:
    import psycopg
    from conftest import DATABASE_URL, restorable_state
    from test_ledger import workload

    from ducto_redis.ledger.flusher import LedgerFlusher

    schema = "t_" + uuid.uuid4().hex[:10]
    store = RedisStore.from_url(cluster.url, namespace=new_namespace(), ledger_schema=schema,
                                database_url=DATABASE_URL)
    try:
        assert store.setup().success
        made = workload(store, n_users=12)
        assert LedgerFlusher(store, DATABASE_URL, batch=64).drain() == made
        assert store.ledger_lag().backlog == 0
        assert store.reconcile_with_ledger() == {}
        before = restorable_state(store)
        drop_namespace(store.client, store.settings.namespace)
        store.restore_from_ledger()
        assert restorable_state(store) == before
        assert store.reconcile_with_ledger() == {}
    finally:
        drop_namespace(store.client, store.settings.namespace)
        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_single_calls_on_the_cluster_never_ask_the_server_for_fcall_keys(cluster: LocalCluster) -> None:
    """redis-py resolves FCALL's slot with COMMAND GETKEYS (a round trip per call) unless the call
    names its node: ours do, so a charge is one round trip on a cluster too."""
    s = RedisStore.from_url(cluster.url, namespace=new_namespace())
    try:
        s.setup()
        for i in range(10):
            s.add_credits(f"u{i}", 100)
        nodes = [redis.Redis(host=n.host, port=n.port) for n in s.client.get_primaries()]
        for n in nodes:
            n.config_resetstat()
        for i in range(10):
            assert s.charge(f"u{i}", 1, "x").error is None
        getkeys = sum(int(n.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0)) for n in nodes)
        fcalls = sum(int(n.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0)) for n in nodes)
        assert (getkeys, fcalls) == (0, 10)
    finally:
        drop_namespace(s.client, s.settings.namespace)
        s.close()
