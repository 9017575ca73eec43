"""Clients and round trips: single Redis or Redis Cluster, sync or asyncio.

``redis://host:port/0`` gives a plain client; ``redis://host:port?cluster=true`` (or
``rediss://...?cluster=true``) a cluster client. Batches are sent as one plain pipeline per node
(redis-py's cluster pipeline refuses script calls): calls are grouped by the node that owns their
first key's slot. A reply that says the call did not run (function not loaded, NOSCRIPT, MOVED,
ASK, TRYAGAIN) is followed by running that call alone through the cluster-aware client, which
loads the library or follows the redirect; nothing that ran is ever sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError

from .core import Call
from .scripts import fcall_async, function_missing

try:
    import hiredis

    _pack_command: Any = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency; the pipeline path still works
    _pack_command = None

DID_NOT_RUN = (MovedError, AskError, TryAgainError)


def did_not_run(reply: Any) -> bool:
    """Whether an error reply says its call did not run (so it may be sent again)."""
    return isinstance(reply, DID_NOT_RUN) or (isinstance(reply, ResponseError) and function_missing(reply))


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """The URL without its ``cluster=`` query flag, and whether the flag was true."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flag = any(k == "cluster" and v.lower() in ("1", "true", "yes") for k, v in query)
    rest = [(k, v) for k, v in query if k != "cluster"]
    return urlunsplit(parts._replace(query=urlencode(rest))), flag


def sync_client(url: str, **options: Any) -> Any:
    """A redis-py client (``RedisCluster`` when the URL says ``cluster=true``) decoding to str;
    ``options`` go to the client (e.g. ``socket_timeout``)."""
    plain, cluster = split_cluster_flag(url)
    if cluster:
        return RedisCluster.from_url(plain, decode_responses=True, **options)
    return redis.Redis.from_url(plain, decode_responses=True, **options)


def async_client(url: str, **options: Any) -> Any:
    """A redis.asyncio client (cluster when the URL says so) decoding to str; ``options`` as above."""
    plain, cluster = split_cluster_flag(url)
    if cluster:
        return AsyncRedisCluster.from_url(plain, decode_responses=True, **options)
    return aioredis.Redis.from_url(plain, decode_responses=True, **options)


def _groups(client: Any, calls: Sequence[Call[Any]]) -> list[tuple[Any, list[int]]]:
    """(connection to pipeline on, indexes of calls) — one group per cluster node, or one in all."""
    if not isinstance(client, (RedisCluster, AsyncRedisCluster)):
        return [(client, list(range(len(calls))))]
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, c in enumerate(calls):
        node: Any = client.get_node_from_key(c.keys[0])
        conn = client.get_redis_connection(node) if isinstance(client, RedisCluster) else node
        by_node.setdefault(node.name, (conn, []))[1].append(i)
    return list(by_node.values())


def pack_calls(calls: Sequence[Call[Any]]) -> bytes:
    """The FCALL commands of ``calls`` in the Redis protocol, back to back."""
    out = []
    for c in calls:
        assert c.script is not None
        out.append(_pack_command(("FCALL", c.script.function, len(c.keys), *c.keys, *c.args)))
    return b"".join(out)


def writes_direct(client: Any) -> bool:
    """Whether batches can be written straight to a pooled connection (plain client, hiredis)."""
    return _pack_command is not None and type(client) in (redis.Redis, aioredis.Redis)


def _send_direct(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([pack_calls(calls)])
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:  # an error reply: the connection is still in step
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    return replies


async def _send_direct_async(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command([pack_calls(calls)])
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # an error reply: the connection is still in step
                replies.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


def run_pipelined(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    """Raw replies of ``calls`` (each with a script), sent in one pipeline per node."""
    if writes_direct(client):
        return _finish(client, calls, _send_direct(client, calls))
    replies: list[Any] = [None] * len(calls)
    for conn, idx in _groups(client, calls):
        pipe = conn.pipeline(transaction=False)
        for i in idx:
            c = calls[i]
            assert c.script is not None
            pipe.fcall(c.script.function, len(c.keys), *c.keys, *c.args)
        for i, reply in zip(idx, pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    return _finish(client, calls, replies)


def _finish(client: Any, calls: Sequence[Call[Any]], replies: list[Any]) -> list[Any]:
    """Run alone each call whose reply says it did not run; raise any other error reply."""
    for i, reply in enumerate(replies):
        if did_not_run(reply):
            c = calls[i]
            assert c.script is not None
            replies[i] = c.script.run(client, c.keys, c.args)
        elif isinstance(reply, Exception):
            raise reply
    return replies


async def run_pipelined_async(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    """Async twin of :func:`run_pipelined`."""
    if writes_direct(client):
        return await _finish_async(client, calls, await _send_direct_async(client, calls))
    replies: list[Any] = [None] * len(calls)
    for conn, idx in _groups(client, calls):
        if isinstance(client, AsyncRedisCluster):  # a node: run the calls one by one on it
            for i in idx:
                c = calls[i]
                assert c.script is not None
                try:
                    replies[i] = await fcall_async(client, c.script.function, c.keys, c.args)
                except ResponseError as exc:
                    if not did_not_run(exc):
                        raise
                    replies[i] = exc
            continue
        pipe = conn.pipeline(transaction=False)
        for i in idx:
            c = calls[i]
            assert c.script is not None
            pipe.fcall(c.script.function, len(c.keys), *c.keys, *c.args)
        for i, reply in zip(idx, await pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    return await _finish_async(client, calls, replies)


async def _finish_async(client: Any, calls: Sequence[Call[Any]], replies: list[Any]) -> list[Any]:
    for i, reply in enumerate(replies):
        if did_not_run(reply):
            c = calls[i]
            assert c.script is not None
            replies[i] = await c.script.run_async(client, c.keys, c.args)
        elif isinstance(reply, Exception):
            raise reply
    return replies
