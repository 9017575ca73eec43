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

import redis

from . import errors
from .batch import Batch, ChargeRequest, TeamDebitRequest, charge_calls, team_debit_calls
from .connect import async_client, run_pipelined_async
from .core import Call, StoreCore
from .ledger.database import LedgerReader
from .models import (
    AddCreditsResult,
    AddTeamMemberResult,
    BalanceResult,
    CapCheckResult,
    CreateTeamResult,
    CreditMetadata,
    DeductionResult,
    RateLimitResult,
    RefundResult,
    ReleaseResult,
    ReserveResult,
    SetupResult,
    SpendCap,
    SweepResult,
    TeamBalanceResult,
    TeamDeductionResult,
    TeamMember,
    TeamMemberSpend,
)
from .plans import AsyncPlanStoreMixin
from .progress import ProgressFn
from .settings import Settings, given
from .store import expires_ms
from .team_ops import check_period
from .validation import check_amount, check_id, check_label

T = TypeVar("T")
_AsyncStore = TypeVar("_AsyncStore", bound="AsyncRedisStore")


class AsyncRedisStore(AsyncPlanStoreMixin):
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

    async def health(self) -> bool:
        """True when a real script call answers on every shard (so on every node of a cluster)."""
        answers: list[bool] = await self._run_many(self.core.health_probes())
        return all(answers)

    async def setup(self, database_url: str | None = None) -> SetupResult:
        """Load the scripts' function library into Redis (FUNCTION LOAD)."""
        result = SetupResult()
        library = next(iter(self.core.scripts.values())).library
        if await library.load_async(self.client):  # one function library holds every script
            result.rpcs_created.extend(f"{name}.lua" for name in self.core.scripts)
        else:  # no functions here (Redis < 7): the scripts are sent with EVAL
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

    async def __aenter__(self: _AsyncStore) -> _AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``async with store:`` closes its connections."""
        await self.close()

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

    # ── refunds and expiring credits ──────────────────────────────────

    async def refund_credits(
        self,
        transaction_id: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> RefundResult:
        """See :meth:`RedisStore.refund_credits`."""
        found = await self._run(self.core.refunds.find(transaction_id, amount, reason, metadata, idempotency_key))
        if isinstance(found, RefundResult):
            return found
        if not found.account_id:  # not in the stream: flushed (or never a debit)
            reader = self._ledger_reader()
            if reader is None:
                return self.core.refunds.not_found(
                    found, errors.TRANSACTION_FLUSHED if found.flushed else errors.TRANSACTION_NOT_FOUND)
            row = await asyncio.to_thread(reader.entry, self.settings.namespace, transaction_id)
            found = self.core.refunds.from_database(found, row)
            if isinstance(found, RefundResult):
                return found
        return await self._run(self.core.refunds.apply(found))

    def _ledger_reader(self) -> LedgerReader | None:
        """Finds one ledger entry by id once it has left the Redis stream: the PostgreSQL ledger, or
        None without a database URL (see :meth:`RedisStore.ledger_reader`)."""
        if not self.settings.database_url:
            return None
        from .ledger.database import PostgresLedger

        return PostgresLedger(self.settings.database_url, self.settings.ledger_schema)

    async def sweep_expired_credits(self, dry_run: bool = False, progress: ProgressFn | None = None) -> SweepResult:
        """See :meth:`RedisStore.sweep_expired_credits`."""
        due: list[list[str]] = await self._run_many(self.core.refunds.due_accounts())
        replies: list[list[str]] = []
        for step in self.core.refunds.sweep_steps(due, dry_run, progress):
            replies += await self._run_many(step)
        return self.core.refunds.sweep_result(replies, dry_run)

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
        *,
        quantities: dict[str, int] | None = None,
        rate_limit: bool = False,
    ) -> ReserveResult:
        """See :meth:`RedisStore.reserve_credits`."""
        return await self._run(
            self.core.reserve_credits(
                user_id, amount, operation_type, metadata, min_balance, idempotency_key, ttl_seconds,
                quantities=quantities, rate_limit=rate_limit,
            )
        )

    async def deduct_credits(
        self,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        *,
        quantities: dict[str, int] | None = None,
    ) -> DeductionResult:
        """See :meth:`RedisStore.deduct_credits`."""
        return await self._run(
            self.core.deduct_credits(user_id, reservation_id, amount, idempotency_key, metadata, quantities)
        )

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
        *,
        quantities: dict[str, int] | None = None,
    ) -> DeductionResult:
        """See :meth:`RedisStore.charge`."""
        return await self._run(
            self.core.charge(user_id, amount, operation_type, idempotency_key, metadata, min_balance, quantities)
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

    async def set_quantity_limit(
        self, user_id: str, quantity: str, limit: int | None, period_seconds: float = 60.0, model: str | None = None
    ) -> None:
        """See :meth:`RedisStore.set_quantity_limit`."""
        await self._run(self.core.set_quantity_limit(user_id, quantity, limit, period_seconds, model))

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

    # ── teams ─────────────────────────────────────────────────────────

    async def create_team(
        self, name: str, initial_balance: int = 0, idempotency_key: str | None = None
    ) -> CreateTeamResult:
        """See :meth:`RedisStore.create_team`."""
        return await self._run(self.core.teams.create_team(name, initial_balance, idempotency_key))

    async def get_team_balance(self, team_id: str) -> TeamBalanceResult:
        """See :meth:`RedisStore.get_team_balance`."""
        return await self._run(self.core.teams.get_team_balance(team_id))

    async def top_up_team(
        self,
        team_id: str,
        amount: int,
        type: str = "purchase",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TeamBalanceResult:
        """See :meth:`RedisStore.top_up_team`."""
        return await self._run(self.core.teams.top_up(team_id, amount, type, metadata, idempotency_key))

    async def add_team_member(
        self,
        team_id: str,
        user_id: str,
        role: str = "member",
        spend_cap: int | None = None,
        cap_period: str = "total",
    ) -> AddTeamMemberResult:
        """See :meth:`RedisStore.add_team_member`."""
        fields = self.core.teams.add_member_fields(role, spend_cap, cap_period)
        return await self._run(self.core.teams.member(team_id, user_id, "add", fields))

    async def set_member_cap(
        self, team_id: str, user_id: str, spend_cap: int | None, cap_period: str | None = None
    ) -> AddTeamMemberResult:
        """See :meth:`RedisStore.set_member_cap`."""
        fields: dict[str, Any] = {"cap": "-1" if spend_cap is None else str(check_amount(spend_cap, "spend_cap", 0))}
        if cap_period is not None:
            fields["period"] = check_period(cap_period)
        return await self._run(self.core.teams.member(team_id, user_id, "update", fields))

    async def set_member_role(self, team_id: str, user_id: str, role: str) -> AddTeamMemberResult:
        """See :meth:`RedisStore.set_member_role`."""
        return await self._run(self.core.teams.member(team_id, user_id, "update", {"role": check_label(role, "role")}))

    async def remove_team_member(self, team_id: str, user_id: str) -> AddTeamMemberResult:
        """See :meth:`RedisStore.remove_team_member`."""
        return await self._run(self.core.teams.member(team_id, user_id, "remove", {}))

    async def get_team_members(self, team_id: str) -> list[TeamMember]:
        """See :meth:`RedisStore.get_team_members`."""
        return await self._run(self.core.teams.get_team_members(team_id))

    async def team_spend_report(self, team_id: str) -> list[TeamMemberSpend]:
        """See :meth:`RedisStore.team_spend_report`."""
        return await self._run(self.core.teams.members(team_id))

    async def set_team_spend_cap(
        self, team_id: str, cap_type: str = "daily", limit: int = 0, action: str = "deny", model: str | None = None
    ) -> None:
        """See :meth:`RedisStore.set_team_spend_cap`."""
        await self._run(self.core.set_team_spend_cap(team_id, cap_type, limit, action, model))

    async def deduct_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TeamDeductionResult:
        """See :meth:`RedisStore.deduct_team`."""
        return await self._run(self.core.teams.deduct_team(team_id, user_id, amount, metadata, idempotency_key))

    async def deduct_team_many(
        self, requests: Sequence[TeamDebitRequest | Mapping[str, Any]]
    ) -> list[TeamDeductionResult]:
        """See :meth:`RedisStore.deduct_team_many`."""
        return await self._run_many(team_debit_calls(self.core, requests))

    async def reserve_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        operation_type: str = "team_job",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
    ) -> ReserveResult:
        """See :meth:`RedisStore.reserve_team`."""
        return await self._run(self.core.teams.reserve_team(
            team_id, user_id, amount, operation_type, metadata, idempotency_key, ttl_seconds))

    async def settle_team_reservation(
        self,
        team_id: str,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> TeamDeductionResult:
        """See :meth:`RedisStore.settle_team_reservation`."""
        return await self._run(self.core.teams.deduct_team(
            team_id, user_id, amount, metadata, idempotency_key,
            reservation_id=check_id(reservation_id, "reservation_id")))

    async def release_team_reservation(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> ReleaseResult:
        """See :meth:`RedisStore.release_team_reservation`."""
        return await self._run(self.core.teams.release_team(team_id, user_id, reservation_id, idempotency_key))


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
    """The embedded store for asyncio code; pass ``server=memory_store.server`` to share its data (and
    its SQLite ledger: in memory, or ``ledger_file`` it restores from, see
    :class:`~ducto_redis.MemoryStore`)."""

    def __init__(
        self, namespace: str | None = None, *, server: Any = None, settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        import fakeredis  # imported here: code that never builds an embedded store never loads it (nor lupa)

        from .ledger.embedded import EmbeddedLedger

        self.server = server or fakeredis.FakeServer()
        client = fakeredis.FakeAsyncRedis(server=self.server, decode_responses=True)
        super().__init__(client, settings or Settings(), **given(namespace=namespace), **overrides)
        self.ledger = EmbeddedLedger.open(self.server, self.settings, self.core.keys)

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

    def _ledger_reader(self) -> LedgerReader | None:
        """The embedded SQLite ledger (see :meth:`MemoryStore.ledger_reader`)."""
        return self.ledger
