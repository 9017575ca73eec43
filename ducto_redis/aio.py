"""AsyncRedisStore: the asyncio store, a thin I/O shell over the same core as RedisStore.

Every method has the sync store's name, arguments and result; only the I/O differs
(``redis.asyncio``). ``AsyncMemoryStore`` is the embedded store's async face: fakeredis's async
client over an in-process server, running the same Lua scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import fakeredis
import redis

from .batch import Batch, ChargeRequest, charge_calls
from .connect import async_client, run_pipelined_async
from .core import Call, StoreCore
from .models import (
    AddCreditsResult,
    BalanceResult,
    CapCheckResult,
    CreditMetadata,
    DeductionResult,
    RateLimitResult,
    ReleaseResult,
    ReserveResult,
    SetupResult,
    SpendCap,
)
from .settings import Settings
from .store import expires_ms

T = TypeVar("T")


class AsyncRedisStore:
    """Credits, reservations and spend caps in Redis, for asyncio code (gateways, async workers)."""

    def __init__(self, client: Any, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        self.settings = Settings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.client = client
        self.core = StoreCore(self.settings)
        self._batcher: _AutoBatcher | None = None
        if self.settings.auto_batch_ms > 0:
            self._batcher = _AutoBatcher(self, self.settings.auto_batch_ms / 1000, self.settings.auto_batch_max)

    @classmethod
    def from_url(cls, url: str | None = None, namespace: str = "ducto", **overrides: Any) -> AsyncRedisStore:
        """An async store on the Redis at ``url`` (default ``DUCTO_REDIS_URL``), keys under ``namespace``."""
        settings = Settings()
        url = url or settings.redis_url
        return cls(async_client(url), settings, namespace=namespace, redis_url=url, **overrides)

    async def _run(self, call: Call[T]) -> T:
        if call.script is None:
            return call.parse(None)
        if self._batcher is not None:
            return await self._batcher.submit(call)
        return call.parse(await call.script.run_async(self.client, call.keys, call.args))

    async def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        batch = Batch(calls, self.core.scripts)
        return batch.assemble(await run_pipelined_async(self.client, batch.calls) if batch.calls else [])

    async def health(self) -> bool:
        """True when a real script call answers on every shard (so on every node of a cluster)."""
        answers: list[bool] = await self._run_many(self.core.health_probes())
        return all(answers)

    async def setup(self, database_url: str | None = None) -> SetupResult:
        """Load every Lua script into Redis (SCRIPT LOAD)."""
        result = SetupResult()
        for name, script in self.core.scripts.items():
            try:
                await self.client.script_load(script.source)
                result.rpcs_created.append(f"{name}.lua")
            except redis.RedisError as exc:
                result.errors.append(f"{name}.lua: {exc}")
        return result

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    # ── balances and credits ──────────────────────────────────────────

    async def get_balance(self, user_id: str) -> BalanceResult:
        """See :meth:`RedisStore.get_balance`."""
        return await self._run(self.core.get_balance(user_id))

    async def add_credits(
        self,
        user_id: str,
        amount: int,
        type: str = "adjustment",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AddCreditsResult:
        """See :meth:`RedisStore.add_credits`."""
        return await self._run(
            self.core.add_credits(user_id, amount, type, metadata, expires_ms(expires_at), idempotency_key)
        )

    # ── reservations and debits ───────────────────────────────────────

    async def reserve_credits(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 5,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
    ) -> ReserveResult:
        """See :meth:`RedisStore.reserve_credits`."""
        return await self._run(
            self.core.reserve_credits(
                user_id, amount, operation_type, metadata, min_balance, idempotency_key, ttl_seconds
            )
        )

    async def deduct_credits(
        self,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> DeductionResult:
        """See :meth:`RedisStore.deduct_credits`."""
        return await self._run(self.core.deduct_credits(user_id, reservation_id, amount, idempotency_key, metadata))

    async def release_reservation(
        self, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> ReleaseResult:
        """See :meth:`RedisStore.release_reservation`."""
        return await self._run(self.core.release_reservation(user_id, reservation_id, idempotency_key))

    async def charge(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
    ) -> DeductionResult:
        """See :meth:`RedisStore.charge`."""
        return await self._run(
            self.core.charge(user_id, amount, operation_type, idempotency_key, metadata, min_balance)
        )

    async def charge_many(
        self, requests: Sequence[ChargeRequest | Mapping[str, Any]]
    ) -> list[DeductionResult]:
        """See :meth:`RedisStore.charge_many`."""
        return await self._run_many(charge_calls(self.core, requests))

    # ── request-rate limits ───────────────────────────────────────────

    async def set_rate_limit(
        self, user_id: str, limit: int | None, period_seconds: float = 1.0, burst: int | None = None
    ) -> None:
        """See :meth:`RedisStore.set_rate_limit`."""
        await self._run(self.core.set_rate_limit(user_id, limit, period_seconds, burst))

    async def hit_rate_limit(self, user_id: str) -> RateLimitResult:
        """See :meth:`RedisStore.hit_rate_limit`."""
        return await self._run(self.core.hit_rate_limit(user_id))

    # ── spend caps ────────────────────────────────────────────────────

    async def set_spend_cap(self, cap: SpendCap) -> None:
        """See :meth:`RedisStore.set_spend_cap`."""
        await self._run(self.core.set_spend_cap(cap))

    async def remove_spend_cap(self, user_id: str, cap_type: str = "daily", model: str | None = None) -> None:
        """See :meth:`RedisStore.remove_spend_cap`."""
        cap = SpendCap(user_id=user_id, cap_type=cap_type, model=model)  # type: ignore[arg-type,unused-ignore]
        await self._run(self.core.set_spend_cap(cap, remove=True))

    async def check_spend_cap(
        self, user_id: str, model: str | None = None, amount: int | None = None
    ) -> CapCheckResult:
        """See :meth:`RedisStore.check_spend_cap`."""
        return await self._run(self.core.check_spend_cap(user_id, model, amount))


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


class AsyncMemoryStore(AsyncRedisStore):
    """The embedded store for asyncio code; pass ``server=memory_store.server`` to share its data."""

    def __init__(
        self, namespace: str = "ducto", *, server: Any = None, settings: Settings | None = None, **overrides: Any
    ) -> None:
        self.server = server or fakeredis.FakeServer()
        client = fakeredis.FakeAsyncRedis(server=self.server, decode_responses=True)
        super().__init__(client, settings or Settings(), namespace=namespace, **overrides)
