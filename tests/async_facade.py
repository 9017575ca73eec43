"""The async stores in the backend table: an async store behind the sync store's face.

:class:`AsyncStoreFacade` runs each coroutine method of an AsyncRedisStore / AsyncMemoryStore on an
event loop of its own (in a thread, so tests that call from several threads run concurrent
coroutines) and returns its result, so every behaviour test written against the sync API also runs
on the async stores. What a test reads besides the methods comes from the async store (``core``,
``settings``, ``server``, ``ledger``); what only a sync store has comes from a sync twin sharing the
server, the namespace and the core (one clock): a sync ``client`` for the tests' key snapshots, and
the sync-only ledger methods (flusher, analytics, restore).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ducto_redis import AsyncMemoryStore, MemoryStore, RedisStore
from ducto_redis.aio import AsyncRedisStore

T = TypeVar("T")


class AsyncStoreFacade:
    """An async store whose coroutine methods are called like the sync store's (see the module docstring)."""

    def __init__(self, aio: AsyncRedisStore, twin: RedisStore) -> None:
        self.aio = aio
        self.twin = twin
        twin.core = aio.core  # one clock offset, one key schema
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-store-loop", daemon=True)
        self._thread.start()

    @classmethod
    def memory(cls, namespace: str, **overrides: Any) -> AsyncStoreFacade:
        """An AsyncMemoryStore, its twin a MemoryStore on the same in-process server (and ledger)."""
        aio = AsyncMemoryStore(namespace, **overrides)
        return cls(aio, MemoryStore(namespace, server=aio.server, settings=aio.settings))

    @classmethod
    def redis(cls, url: str, namespace: str, **overrides: Any) -> AsyncStoreFacade:
        """An AsyncRedisStore on ``url``, its twin a RedisStore there."""
        aio = AsyncRedisStore.from_url(url, namespace=namespace, **overrides)
        return cls(aio, RedisStore.from_url(url, namespace=namespace, **overrides))

    def wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the facade's loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name == "client":
            return self.twin.client
        if inspect.iscoroutinefunction(getattr(type(self.aio), name, None)):
            method = getattr(self.aio, name)
            return functools.wraps(method)(lambda *args, **kwargs: self.wait(method(*args, **kwargs)))
        if hasattr(self.aio, name):
            return getattr(self.aio, name)
        return getattr(self.twin, name)

    def close(self) -> None:
        """Close both stores and stop the loop."""
        try:
            self.wait(self.aio.close())
            self.twin.close()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
