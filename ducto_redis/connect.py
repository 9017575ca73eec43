"""Clients and round trips: single Redis or Redis Cluster, sync or asyncio; every call sent at most once.

``redis://host:port/0`` gives a plain client; ``redis://host:port?cluster=true`` (or
``rediss://...?cluster=true``) a cluster client.

**A decision is written to Redis at most once.** The stores never hand an FCALL to redis-py's
command methods, whose ``Retry`` (on by default in redis-py 8, and on any client a user passes in)
sends a command again after a timeout or a dropped connection: a decision that had already run would
run twice. Instead the calls are packed and written straight to a connection taken from the client's
pool (one write for a whole batch, one per node of a cluster), and their replies read back:

- the connection cannot be opened: nothing was sent, the ``redis.ConnectionError`` is raised as is;
- it fails once the calls are written: :class:`~ducto_redis.errors.DecisionOutcomeUnknown` (a
  ``redis.ConnectionError`` too) — the caller repeats the decision with its idempotency key;
- a reply that says its call did NOT run is the one case that sends it again, after the remedy:
  "Function not found" (load the library, call again; if still missing, EVAL the source), MOVED
  (re-read the slot map), ASK (``ASKING`` + the call on the named node), TRYAGAIN (a short pause),
  DUCTO_KEYS (a lean call, sent with only some of its KEYS, whose decision needs the others: its
  ``widen`` form, the same call id and ARGV with every KEY, is sent instead; nothing of the lean
  one was written, so this is not a second run). Any other error reply is raised.

The rules are written once, as a generator of steps (:func:`_plan`); each step
(:data:`Step`) runs itself synchronously or returns its awaitable, so the sync and the async driver
only carry the steps out. The embedded store's in-process fakeredis takes the same rounds through
its own pipeline (no network, nothing to lose).

**The lean path** (:class:`Lane`): a sync store on a plain ``redis.Redis`` (its default
``ConnectionPool``, TCP or Unix socket, no client-side cache, no credential provider) keeps the
connections its calls used in a lane of its own (one per pool, shared by every store on it) instead
of taking each from the pool and giving it back, which cost more than the rest of a charge's round
trip; the first write of a call goes straight to the socket and its replies are read through the
connection's parser. The rules above hold as they are: a lane connection is checked (one ``poll``)
before each use and opened again if the server closed it (nothing sent yet), any failure once
written is :class:`~ducto_redis.errors.DecisionOutcomeUnknown` and drops the connection, and a
reply that says "did not run" goes on through :func:`_plan` (its later rounds by the generic path).
A batch (``charge_many``) is streamed: each script call is written as soon as it is built, a few
per write (:func:`stream_lane`), and each reply parsed as soon as it is read, so the client's work
overlaps Redis' instead of adding to it; a failure once the first piece is written (the connection,
or building a later piece) is ``DecisionOutcomeUnknown`` as above, and nothing is ever written
twice. A connection serves one call at a time (taken from the lane's list, put back once every reply is
read), so one store is safe to share by threads; a forked child forgets its parent's lane
connections. A lane holds at most :data:`LANE_IDLE_MAX` idle connections; they count as in use for
the pool (``client.close()`` still closes them: the next call opens them again).
"""

from __future__ import annotations

import asyncio
import os
import select
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError

from .core import Call
from .errors import DecisionOutcomeUnknown
from .scripts import Library, function_missing, keys_short

try:
    import hiredis

    _pack_command: Any = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency; redis-py's own packer still works
    _pack_command = None

DID_NOT_RUN = (MovedError, AskError, TryAgainError)
MAX_ROUNDS = 6  # sends of one call at most: each after a reply that says it did not run
TRYAGAIN_PAUSE = 0.05  # seconds, before sending again calls answered TRYAGAIN (a slot migrating)


def did_not_run(reply: Any) -> bool:
    """Whether an error reply says its call did not run (so it may be sent again)."""
    return isinstance(reply, DID_NOT_RUN) or (isinstance(reply, ResponseError)
                                              and (function_missing(reply) or keys_short(reply)))


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


def command(call: Call[Any], source: bool = False) -> tuple[Any, ...]:
    """The call as one Redis command: FCALL of its function, or (``source``) EVAL of its source."""
    script = call.script
    assert script is not None
    if source:
        return ("EVAL", script.source, len(call.keys), *call.keys, *call.args)
    return ("FCALL", script.function, len(call.keys), *call.keys, *call.args)


def pack_calls(calls: Sequence[Call[Any]]) -> bytes:
    """The FCALL commands of ``calls`` in the Redis protocol, back to back (hiredis' packer)."""
    return b"".join(_pack_command(command(c)) for c in calls)


def _packed(conn: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    if _pack_command is not None:
        return [b"".join(_pack_command(c) for c in commands)]
    return conn.pack_commands(commands)


# ── the rules: which calls to send where, and what a reply that says "did not run" asks for ──


@dataclass(slots=True)
class Send:
    """Write ``commands`` to ``target`` (a client, or an asyncio cluster node) and read one reply each."""

    target: Any
    commands: list[tuple[Any, ...]]

    def sync(self) -> list[Any]:
        return _send(self.target, self.commands)

    def aio(self) -> Awaitable[list[Any]]:
        return _send_async(self.target, self.commands)


@dataclass(slots=True)
class Load:
    """Load the function library (on every primary of a cluster)."""

    library: Library
    client: Any

    def sync(self) -> bool:
        return self.library.load(self.client)

    def aio(self) -> Awaitable[bool]:
        return self.library.load_async(self.client)


@dataclass(slots=True)
class Refresh:
    """Read a cluster's slot map again (after MOVED)."""

    client: Any

    def sync(self) -> Any:
        return self.client.nodes_manager.initialize()

    def aio(self) -> Awaitable[Any]:
        return self.client.nodes_manager.initialize()  # type: ignore[no-any-return]


@dataclass(slots=True)
class Pause:
    """Wait before sending again (after TRYAGAIN)."""

    seconds: float

    def sync(self) -> None:
        time.sleep(self.seconds)

    def aio(self) -> Awaitable[None]:
        return asyncio.sleep(self.seconds)


@dataclass(slots=True)
class Initialize:
    """An asyncio cluster client reads its slot map before its first call (a no-op afterwards)."""

    client: Any

    def sync(self) -> None:
        return None

    def aio(self) -> Awaitable[Any]:
        return self.client.initialize()  # type: ignore[no-any-return]


Step = Send | Load | Refresh | Pause | Initialize
"""One step of I/O, written for both drivers: ``sync()`` runs it, ``aio()`` is its awaitable."""


def _target(client: Any, key: str) -> Any:
    cluster: Any = client  # redis-py's cluster methods are untyped
    if isinstance(client, RedisCluster):
        return cluster.get_redis_connection(cluster.get_node_from_key(key))
    if isinstance(client, AsyncRedisCluster):
        return cluster.get_node_from_key(key)
    return client


def _groups(client: Any, calls: Sequence[Call[Any]], pending: list[int],
            asking: dict[int, Any]) -> Iterable[tuple[Any, list[int]]]:
    """A cluster's pending calls by the node to send them to: the one an ASK named, else their slot's."""
    groups: dict[int, tuple[Any, list[int]]] = {}
    for i in pending:
        target = asking[i] if i in asking else _target(client, calls[i].keys[0])
        groups.setdefault(id(target), (target, []))[1].append(i)
    return groups.values()


def _node(client: Any, exc: AskError) -> Any:
    """The target an ASK redirect names (None when the slot map does not know it yet)."""
    node = client.get_node(host=exc.host, port=int(exc.port))
    if node is None or isinstance(client, AsyncRedisCluster):
        return node
    return client.get_redis_connection(node)


def _plan(client: Any, calls: Sequence[Call[Any]],
          first: list[Any] | None = None) -> Generator[Step, Any, list[Any]]:
    """The raw replies of ``calls``: one write per target (a plain client is one target, so one
    write of them all, almost always the end of it), then again for any call whose reply says it
    did not run, after its remedy, until each has an answer that is not "did not run"; an error
    reply of a call that ran is raised. ``first``: a plain client's replies to that first write,
    already made (by a :class:`Lane`). A lean call refused for its KEYS is replaced, from then on, by
    its widened form (:attr:`~ducto_redis.core.Call.widen`)."""
    # plain clients first: isinstance against redis-py's cluster classes costs ~0.7 us
    cluster = not isinstance(client, (redis.Redis, aioredis.Redis))
    if cluster and isinstance(client, AsyncRedisCluster):
        yield Initialize(client)
    replies: list[Any]
    if cluster:
        replies = [None] * len(calls)
    elif first is not None:
        replies = first
    else:
        replies = yield Send(client, [command(c) for c in calls])
    sent = 0 if cluster else 1
    own: list[Call[Any]] | None = None  # the calls, once one is widened
    use_source: set[int] = set()
    asking: dict[int, Any] = {}
    loaded = False
    last: Exception | None = None
    while True:
        load = refresh = pause = False
        for i, reply in enumerate(replies):
            if not isinstance(reply, Exception):
                continue
            if not did_not_run(reply):
                raise reply
            last, replies[i] = reply, None
            if isinstance(reply, MovedError):  # before AskError: redis-py's MovedError is an AskError
                refresh = True
            elif isinstance(reply, AskError):
                node = _node(client, reply)
                refresh = refresh or node is None
                if node is not None:
                    asking[i] = node
            elif isinstance(reply, TryAgainError):
                pause = True
            elif keys_short(reply):
                widen = calls[i].widen
                if widen is None:  # only a lean call can be refused for its KEYS
                    raise reply
                if own is None:  # the caller's list stays as it was
                    calls = own = list(calls)
                own[i] = widen(own[i])
            elif loaded:  # loaded after an earlier answer, and gone again: EVAL cannot miss
                use_source.add(i)
            else:
                load = True
        pending = [i for i, r in enumerate(replies) if r is None]
        if not pending:  # after every round, the last one too: a call that ran is never reported as failed
            return replies
        if sent == MAX_ROUNDS:
            assert last is not None
            raise last
        if load:
            loaded = True
            script = calls[pending[0]].script
            assert script is not None
            yield Load(script.library, client)
        if refresh:
            yield Refresh(client)
        if pause:
            yield Pause(TRYAGAIN_PAUSE)
        for target, idx in _groups(client, calls, pending, asking) if cluster else ((client, pending),):
            commands: list[tuple[Any, ...]] = []
            for i in idx:
                if i in asking:
                    commands.append(("ASKING",))
                commands.append(command(calls[i], i in use_source))
            answers = iter((yield Send(target, commands)))
            for i in idx:
                if i in asking:
                    next(answers)  # ASKING's OK
                replies[i] = next(answers)
        asking = {}
        sent += 1


def _in_process(client: Any) -> bool:
    """The embedded store's fakeredis: its own pipeline, nothing on a wire."""
    return type(client).__module__.startswith("fakeredis")


# ── sync driver ──


def _send(target: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    if _in_process(target):
        pipe = target.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        return list(pipe.execute(raise_on_error=False))
    pool = target.connection_pool
    conn = pool.get_connection()  # connected here: a failure so far means nothing was sent
    try:
        conn.send_packed_command(_packed(conn, commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:  # an error reply: the connection is still in step
                replies.append(exc)
        return replies
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        conn.disconnect()
        raise DecisionOutcomeUnknown(f"the connection failed after the call was sent: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def run_pipelined(client: Any, calls: Sequence[Call[Any]], first: list[Any] | None = None) -> list[Any]:
    """Raw replies of ``calls`` (each with a script): one write per node, each call run at most once.
    ``first``: a plain client's replies to the first write of them all, already made (a :class:`Lane`)."""
    plan = _plan(client, calls, first)
    try:
        step = next(plan)
        while True:
            step = plan.send(step.sync())
    except StopIteration as done:
        replies: list[Any] = done.value
        return replies


# ── the lean sync path: a plain client's connections kept between calls ──


LANE_IDLE_MAX = 8  # idle connections a lane keeps; more (after a burst of threads) go back to the pool
_LANE_CONNECTIONS = (Connection, UnixDomainSocketConnection)


@dataclass(slots=True, eq=False)
class _Wire:
    """One connection of a lane, with the socket it was checked on and a poller of that socket."""

    conn: Any
    sock: Any
    poller: Any

    @classmethod
    def of(cls, conn: Any) -> _Wire:
        poller = select.poll()
        poller.register(conn._sock, select.POLLIN)
        return cls(conn, conn._sock, poller)

    def ready(self) -> bool:
        """Still open and in step: the same socket, with nothing to read (a server that closed it
        makes it readable: EOF)."""
        return self.conn._sock is self.sock and not self.poller.poll(0)


class Lane:
    """A plain client's connections kept between calls (see the module docstring): idle ones in a
    list, each taken by one call at a time."""

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: list[_Wire] = []

    def _take(self, pool: Any) -> _Wire:
        """An open connection, checked, with nothing sent on it yet (a failure here: nothing was sent)."""
        try:
            wire = self.idle.pop()
        except IndexError:
            return _Wire.of(pool.get_connection())  # connected and checked by the pool
        if wire.ready():
            return wire
        conn = wire.conn
        try:
            conn.disconnect()
            conn.connect()
        except BaseException:
            pool.release(conn)
            raise
        return _Wire.of(conn)

    def _give_back(self, pool: Any, wire: _Wire) -> None:
        if len(self.idle) < LANE_IDLE_MAX and not wire.conn.should_reconnect():
            self.idle.append(wire)
        else:
            pool.release(wire.conn)

    def exchange(self, client: Any, packed: Iterable[bytes], count: int,
                 each: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Write ``packed`` (``count`` commands, in one or more pieces, each written as soon as the
        iterable gives it) on one connection and read their ``count`` replies, an error reply as its
        exception (the connection stays in step); ``each(i, reply)`` is called as each is read.

        A failure before the first write (opening the connection, packing the first piece) leaves
        nothing sent and is raised as it is; any failure once a write began (the connection, or
        packing a later piece) is :class:`~ducto_redis.errors.DecisionOutcomeUnknown`."""
        pool = client.connection_pool
        wire = self._take(pool)
        conn = wire.conn
        pieces = iter(packed)
        try:
            piece = next(pieces, None)
        except BaseException:
            self._give_back(pool, wire)  # nothing written: the connection is still in step
            raise
        try:
            sendall = wire.sock.sendall
            while piece is not None:
                sendall(piece)
                piece = next(pieces, None)
            read = conn._parser.read_response
            replies = []
            for i in range(count):
                reply = read()
                replies.append(reply)
                if each is not None:
                    each(i, reply)
        except Exception as exc:  # the connection's, or packing a later piece: some calls may have run
            conn.disconnect()
            pool.release(conn)
            raise DecisionOutcomeUnknown(f"the connection failed after the call was sent: {exc}") from exc
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self._give_back(pool, wire)
        return replies


_LANES: weakref.WeakKeyDictionary[Any, Lane] = weakref.WeakKeyDictionary()


def lane_of(client: Any) -> Lane | None:
    """The lane of a plain ``redis.Redis`` client's pool (made at the first ask), or None for any
    other client, which takes the generic path: a cluster, fakeredis, another pool class (blocking),
    TLS or another connection class, a client-side cache, a credential provider (its
    re-authentication runs when a connection goes back to the pool), no ``select.poll`` or no hiredis."""
    if type(client) is not redis.Redis or not hasattr(select, "poll") or _pack_command is None:
        return None
    pool = client.connection_pool
    if (type(pool) is not ConnectionPool or pool.connection_class not in _LANE_CONNECTIONS
            or getattr(pool, "cache", None) is not None
            or pool.connection_kwargs.get("credential_provider") is not None):
        return None
    return _LANES.setdefault(pool, Lane())


def _forget_lanes() -> None:
    """In a forked child: the parent's connections are not this process's to use."""
    for lane in list(_LANES.values()):
        lane.idle = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_lanes)


FIRST_PIECE = 1  # calls in a streamed batch's first write: Redis runs it while the next ones are packed
PIECE = 16  # at most this many calls per later write (each write is a syscall here and a read event in Redis)
SMALL = 8  # a batch of at most this many calls is written at once: nothing worth overlapping


def _pieces(calls: Iterable[Call[Any]], count: int) -> Iterator[bytes]:
    """The ``count`` calls packed, a few per piece, each piece given as soon as its calls are built
    (all in one piece when they are at most :data:`SMALL`). The pieces grow 1, 2, 4, ... up to
    :data:`PIECE` calls, so Redis has the next piece before it is done with the one before while the
    client is still building them (a batch of Deferred calls builds each as it packs it); 16 rather
    than 8 at most: fewer read events for Redis (``python bench/hotpath.py`` batches of 100 users in
    64 shards, one run: 1,209 against 1,238 µs per batch, 1..32 1,251, 1..64 1,685)."""
    pending: list[bytes] = []
    flush = FIRST_PIECE if count > SMALL else count
    for call in calls:
        pending.append(_pack_command(command(call)))
        if len(pending) == flush:
            yield b"".join(pending)
            pending, flush = [], min(2 * flush, PIECE)
    if pending:
        yield b"".join(pending)


def stream_lane(lane: Lane, client: Any, calls: Iterable[Call[Any]], count: int,
                each: Callable[[int, Any], None]) -> list[Any]:
    """The first write of ``count`` calls through a lane, each written as soon as ``calls`` builds it
    (a few per write) and ``each(i, reply)`` called as each reply is read (while Redis runs the next):
    the raw replies, for :func:`run_pipelined` (``first``) when one says "did not run"."""
    return lane.exchange(client, _pieces(calls, count), count, each)


def run_lane(lane: Lane, client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    """:func:`run_pipelined` on a plain client through its lane: the first write of every call
    there, any later round (a reply that says "did not run") by the rules of :func:`_plan`."""
    replies = lane.exchange(client, (pack_calls(calls),), len(calls))
    for reply in replies:
        if isinstance(reply, Exception):
            return run_pipelined(client, calls, replies)
    return replies


# ── async driver ──


async def _send_async(target: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    if _in_process(target):
        pipe = target.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        return list(await pipe.execute(raise_on_error=False))
    conn: Any
    if isinstance(target, AsyncClusterNode):
        conn = target.acquire_connection()
        pool = None
    else:
        pool = target.connection_pool
        conn = await pool.get_connection()
    try:
        try:
            await conn.connect()  # a failure here means nothing was sent
        except BaseException:
            await conn.disconnect()
            raise
        try:
            await conn.send_packed_command(_packed(conn, commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the connection is still in step
                    replies.append(exc)
            return replies
        except (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError) as exc:
            await conn.disconnect()
            raise DecisionOutcomeUnknown(f"the connection failed after the call was sent: {exc}") from exc
        except BaseException:  # cancelled mid-read: the connection is out of step
            await conn.disconnect()
            raise
    finally:
        if pool is None:
            target.release(conn)
        else:
            await pool.release(conn)


async def run_pipelined_async(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    """:func:`run_pipelined` on an asyncio client."""
    plan = _plan(client, calls)
    try:
        step = next(plan)
        while True:
            step = plan.send(await step.aio())
    except StopIteration as done:
        replies: list[Any] = done.value
        return replies
