"""RedisStore: the synchronous store. Its methods are written once in the operation mixins
(:class:`~ducto_redis.operations.StoreOps`); this shell only says how a call is sent: ``_run`` and
``_run_many`` (see ``methods.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .batch import Batch
from .connect import lane_of, run_lane, run_pipelined, stream_lane, sync_client
from .core import Call
from .ledger.store_api import LedgerStoreMixin
from .methods import SyncRunner
from .operations import StoreOps
from .settings import Settings, given

T = TypeVar("T")
_Store = TypeVar("_Store", bound="RedisStore")


class RedisStore(LedgerStoreMixin, SyncRunner, StoreOps):
    """Credits, reservations and spend caps in Redis; every decision is one atomic Lua script.

    Build it with :meth:`from_url` (``RedisStore.from_url("redis://127.0.0.1:6379", namespace="ducto")``),
    :meth:`from_settings`, or pass a ``redis.Redis`` client. Method names, arguments and results are
    ducto 1.0's; docs/differences-from-ducto.md lists the deliberate differences.
    """

    def __init__(self, client: Any, settings: Settings | None = None, **overrides: Any) -> None:
        self._attach(client, settings, overrides)
        self._lane = lane_of(client)

    @classmethod
    def from_url(cls, url: str | None = None, namespace: str | None = None, **overrides: Any) -> RedisStore:
        """A store on the Redis at ``url`` (default ``DUCTO_REDIS_URL``), keys under ``namespace``
        (default ``DUCTO_NAMESPACE``); every other setting from its ``DUCTO_*`` variable unless given.

        ``?cluster=true`` in the URL connects to a Redis Cluster; a ``RedisCluster`` client can also
        be passed to the constructor.
        """
        settings = Settings()
        url = url or settings.redis_url
        return cls(sync_client(url), settings, redis_url=url, **given(namespace=namespace), **overrides)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RedisStore:
        """A store configured entirely from a :class:`Settings` (by default, the environment)."""
        settings = settings or Settings()
        return cls(sync_client(settings.redis_url), settings)

    # ── I/O ───────────────────────────────────────────────────────────

    def _send(self, calls: Sequence[Call[Any]]) -> list[Any]:
        lane = self._lane
        if lane is not None:
            return run_lane(lane, self.client, calls)
        return run_pipelined(self.client, calls)

    def _run(self, call: Call[T]) -> T:
        if call.script is None:
            return call.parse(None)
        return call.parse(self._send((call,))[0])

    def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        lane = self._lane
        if lane is None:
            batch = Batch(calls, self.core.scripts)
            return batch.assemble(run_pipelined(self.client, batch.calls) if batch.calls else [])
        # the lane: each script call written as soon as it is built, each reply parsed as soon as it
        # is read, so the client's work overlaps Redis'; any other case goes the general way, in order
        batch = Batch(calls, self.core.scripts, stream=True)
        if not batch.count:
            return batch.taken()
        failed: list[BaseException] = []

        def take(i: int, reply: Any) -> None:
            if failed:
                return
            if isinstance(reply, Exception):
                failed.append(reply)
                return
            try:
                batch.take(i, reply)
            except Exception as exc:  # raised again below, in the decisions' order
                failed.append(exc)

        replies = stream_lane(lane, self.client, batch.stream(), batch.count, take)
        if not failed:
            return batch.taken()
        if any(isinstance(r, Exception) for r in replies):
            replies = run_pipelined(self.client, batch.calls, replies)
        return batch.assemble(replies)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with store:`` stops its background flusher, if one runs, and closes its connections."""
        self.stop_flusher()
        self.close()
