"""AsyncRedisStore: the asyncio store. Its methods are the sync store's, written once
(:class:`~ducto_redis.operations.StoreOps`), with the same names, arguments and results; only the
I/O differs (``redis.asyncio``): ``_run`` and ``_run_many`` (see ``methods.py``).
``AsyncMemoryStore`` is the embedded store's async face: fakeredis's async client over an
in-process server, running the same Lua scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

from .batch import Batch
from .connect import async_client, run_pipelined_async
from .core import Call
from .memory import Embedded
from .methods import AsyncRunner
from .operations import StoreOps
from .settings import Settings, given

T = TypeVar("T")
_AsyncStore = TypeVar("_AsyncStore", bound="AsyncRedisStore")


class AsyncRedisStore(AsyncRunner, StoreOps):
    """Credits, reservations and spend caps in Redis, for asyncio code (gateways, async workers)."""

    def __init__(self, client: Any, settings: Settings | None = None, **overrides: Any) -> None:
        self._attach(client, settings, overrides)
        self._batcher: _AutoBatcher | None = None
        if self.settings.auto_batch_ms > 0:
            self._batcher = _AutoBatcher(self, self.settings.auto_batch_ms / 1000, self.settings.auto_batch_max)

    @classmethod
    def from_url(cls, url: str | None = None, namespace: str | None = None, **overrides: Any) -> AsyncRedisStore:
        """An async store on the Redis at ``url`` (default ``DUCTO_REDIS_URL``), keys under ``namespace``
        (default ``DUCTO_NAMESPACE``); every other setting from its ``DUCTO_*`` variable unless given."""
        settings = Settings()
        url = url or settings.redis_url
        return cls(async_client(url), settings, redis_url=url, **given(namespace=namespace), **overrides)

    async def _run(self, call: Call[T]) -> T:
        if call.script is None:
            return call.parse(None)
        if self._batcher is not None:
            return await self._batcher.submit(call)
        return call.parse((await run_pipelined_async(self.client, [call]))[0])

    async def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        batch = Batch(calls, self.core.scripts)
        return batch.assemble(await run_pipelined_async(self.client, batch.calls) if batch.calls else [])

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    async def __aenter__(self: _AsyncStore) -> _AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``async with store:`` closes its connections."""
        await self.close()


class _AutoBatcher:
    """Coalesces the calls made within a short window into one pipeline (TigerBeetle-style).

    The first call of a window schedules a flush ``window`` seconds later (or at once when
    ``max_size`` calls are waiting); every call then gets its own result, in order per account.
    """

    def __init__(self, store: AsyncRedisStore, window: float, max_size: int) -> None:
        self.store = store
        self.window = window
        self.max_size = max_size
        self.pending: list[tuple[Call[Any], asyncio.Future[Any]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight: set[asyncio.Task[None]] = set()

    def submit(self, call: Call[T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self.pending.append((call, fut))
        if len(self.pending) >= self.max_size:
            self._flush_now()
        elif self.timer is None:
            self.timer = loop.call_later(self.window, self._flush_now)
        return fut

    def _flush_now(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _send(self, batch: list[tuple[Call[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self.store._run_many([c for c, _ in batch])
        except Exception as exc:  # a real failure: every caller of the batch sees it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)


class AsyncMemoryStore(Embedded, AsyncRedisStore):
    """The embedded store for asyncio code; pass ``server=memory_store.server`` to share its data (and
    its SQLite ledger: in memory, or ``ledger_file`` it restores from, see
    :class:`~ducto_redis.MemoryStore`)."""

    asynchronous = True

    async def _run(self, call: Call[T]) -> T:
        try:
            return await super()._run(call)
        finally:  # the embedded ledger, as MemoryStore's
            self.ledger.after(call.keys)

    async def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        try:
            return await super()._run_many(calls)
        finally:
            self.ledger.after({k for c in calls for k in c.keys})

