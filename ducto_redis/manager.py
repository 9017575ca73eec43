"""CreditManager: ducto 1.0's high-level API — price usage, then charge it atomically — and its events.

ducto 1.0's manager ran allowance → cap check → reserve → deduct as separate store calls, so two
requests could both spend the last of a free allowance, pass a cap together, or strand a hold when
the deduct failed. Here :meth:`CreditManager.deduct` prices the usage with the engine (rounded up
to a whole credit) and then makes ONE script call (``plan_debit.lua``): the plan's free allowance
first, then spend caps and rate limit on the paid rest, then the balance (keeping the engine's
``min_balance``), the debit and one ledger entry recording both parts. Nothing is held, nothing can
be stranded, and a refusal consumes nothing.

Example::

    manager = CreditManager(MemoryStore(), emitter=CreditEventEmitter())
    manager.publish_pricing_from_dict({"models": {"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01"}})
    manager.add_credits("user-1", 1_000, tx_type="purchase")
    r = manager.deduct("user-1", UsageMetrics(model="gpt-4o", input_tokens=1200, output_tokens=350),
                       idempotency_key="req-1")
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import errors as E
from .core import metadata_of
from .errors import InsufficientCreditsError, PricingNotLoadedError
from .events import CreditEvent, CreditEventEmitter, StreamEventReader
from .models import (
    AddCreditsResult,
    AggregateStatsRow,
    AllowanceResult,
    BalanceResult,
    CreditMetadata,
    DailySpendRow,
    GetUserPlanResult,
    PricingConfigData,
    RefundResult,
    ReserveResult,
    SetupResult,
    SetUserPlanResult,
    SpendByMemberRow,
    SpendByModelRow,
    SpendByUserRow,
    SweepResult,
    TeamDeductionResult,
    TopUserRow,
    UsageDeductionResult,
)
from .plans import allowance_table
from .pricing import CostBreakdown, PricingEngine, UsageMetrics

if TYPE_CHECKING:
    from .store import RedisStore


class ChargeRefusedError(InsufficientCreditsError):
    """:meth:`CreditManager.deduct` was refused: ``.code`` is the store's error, ``.result`` its result."""

    def __init__(self, message: str, *, code: str, result: UsageDeductionResult) -> None:
        super().__init__(message, code=code)
        self.result = result


class CreditManager:
    """Prices usage with a :class:`PricingEngine` and charges it on a store, emitting events.

    Args:
        store: a :class:`~ducto_redis.RedisStore` or :class:`~ducto_redis.MemoryStore`.
        engine: a ready engine; otherwise call :meth:`load_pricing_from_store` or publish pricing.
        emitter: receives the events (none are built without one).
        low_balance_threshold: ``credits.low_balance`` is emitted when a debit takes the balance
            from above this to at or below it (once per fall, not on every later debit). Default:
            twice the engine's ``min_balance`` (ducto's threshold).
        event_group: the Redis consumer group :meth:`poll_events` reads the scripts' events with;
            managers sharing a group share the events (each delivered to one of them).
    """

    def __init__(
        self,
        store: RedisStore,
        engine: PricingEngine | None = None,
        emitter: CreditEventEmitter | None = None,
        *,
        low_balance_threshold: int | None = None,
        event_group: str = "ducto-manager",
        event_consumer: str = "manager",
    ) -> None:
        self._store: Any = store
        self._engine = engine
        self._emitter = emitter
        self.low_balance_threshold = low_balance_threshold
        self._reader = StreamEventReader(store.client, event_group, event_consumer)
        self._allowance_cache: tuple[PricingEngine, dict[str, int]] | None = None

    @property
    def store(self) -> RedisStore:
        """The store this manager charges."""
        return self._store  # type: ignore[no-any-return]

    @property
    def engine(self) -> PricingEngine | None:
        """The pricing engine, or None before pricing is loaded."""
        return self._engine

    @property
    def emitter(self) -> CreditEventEmitter | None:
        """The event emitter, if any."""
        return self._emitter

    def _emit(self, type_: str, user_id: str, data: dict[str, Any] | None = None) -> None:
        if self._emitter is not None:
            self._emitter.emit(CreditEvent(type=type_, timestamp=datetime.now(timezone.utc), user_id=user_id,
                                           data=data))

    def _allowances(self, engine: PricingEngine) -> dict[str, int]:
        """The engine's plans as plan id -> monthly allowance (computed once per engine)."""
        cached = self._allowance_cache
        if cached is None or cached[0] is not engine:
            cached = (engine, allowance_table(engine.pricing_schema().plans))
            self._allowance_cache = cached
        return cached[1]

    def _need_engine(self) -> PricingEngine:
        if self._engine is None:
            raise PricingNotLoadedError(
                "PricingEngine not loaded. Call publish_pricing_from_dict() or load_pricing_from_store() first."
            )
        return self._engine

    # ── setup and pricing ─────────────────────────────────────────────

    def setup(self) -> SetupResult:
        """Load the store's scripts (and the ledger schema with a database URL)."""
        return self._store.setup()  # type: ignore[no-any-return]

    def publish_pricing_from_dict(self, data: PricingConfigData | dict[str, Any]) -> str:
        """Validate a config (dict or model), publish it as the store's active pricing and price with it."""
        raw = data if isinstance(data, dict) else data.model_dump(exclude_none=True)
        engine = PricingEngine.from_dict(raw)
        pricing_id: str = self._store.set_active_pricing(engine.pricing_schema())
        self._engine = engine
        return pricing_id

    def publish_pricing(self, config: PricingConfigData, label: str | None = None) -> str:
        """Publish ``config`` (a new version, labelled) and price with it; returns the version's id."""
        engine = PricingEngine(config)
        pricing_id: str = self._store.set_active_pricing(config, label=label)
        self._engine = engine
        return pricing_id

    def load_pricing_from_store(self) -> None:
        """Price with the store's active pricing config (:class:`PricingNotLoadedError` if none)."""
        active = self._store.get_active_pricing()
        if active is None:
            raise PricingNotLoadedError(
                "No active pricing config found in the store. Call publish_pricing_from_dict() or "
                "set_active_pricing() first."
            )
        self._engine = PricingEngine(active.config)

    def price(self, metrics: UsageMetrics) -> CostBreakdown:
        """What ``metrics`` cost: the exact parts and ``total``, and ``credits`` (rounded up) charged."""
        return self._need_engine().calculate(metrics)

    # ── balances and credits ──────────────────────────────────────────

    def get_balance(self, user_id: str) -> BalanceResult:
        """The user's balance (see :meth:`RedisStore.get_balance`)."""
        return self._store.get_balance(user_id)  # type: ignore[no-any-return]

    def add_credits(
        self,
        user_id: str,
        amount: int,
        tx_type: str = "adjustment",
        metadata: CreditMetadata | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AddCreditsResult:
        """Credit a user; emits ``credits.added`` (not for a replayed idempotency key)."""
        result: AddCreditsResult = self._store.add_credits(
            user_id, amount, type=tx_type, metadata=metadata, expires_at=expires_at, idempotency_key=idempotency_key)
        if not result.idempotent:
            self._emit("credits.added", user_id, {
                "transaction_id": result.transaction_id, "amount": result.amount,
                "new_balance": result.new_balance, "type": tx_type,
            })
        return result

    def reserve_credits(
        self,
        user_id: str,
        amount: int,
        operation_type: str = "usage",
        metadata: CreditMetadata | None = None,
        min_balance: int | None = None,
        idempotency_key: str | None = None,
    ) -> ReserveResult:
        """Hold credits for a long job (settle with ``store.deduct_credits``); ``min_balance`` defaults
        to the engine's (the store's ``default_min_balance`` setting, 5, without one)."""
        floor = min_balance if min_balance is not None else self._min_balance()
        return self._store.reserve_credits(  # type: ignore[no-any-return]
            user_id, amount, operation_type, metadata, floor, idempotency_key)

    # ── charging usage ────────────────────────────────────────────────

    @staticmethod
    def _tx_metadata(metrics: UsageMetrics, cost: CostBreakdown, idempotency_key: str | None,
                     metadata: CreditMetadata | dict[str, Any] | None) -> CreditMetadata:
        base: dict[str, Any] = {
            "input_tokens": metrics.input_tokens, "output_tokens": metrics.output_tokens, "model": metrics.model,
            "breakdown_total": cost.total, "credits": cost.credits,
        }
        if metrics.fixed_job:
            base["fixed_job"] = metrics.fixed_job
        if idempotency_key:
            base["idempotency_key"] = idempotency_key
        extra = metadata_of(metadata)
        if extra is not None:
            base.update(extra.model_dump(exclude_none=True))
        return CreditMetadata(**base)

    def _min_balance(self) -> int:
        """The engine's ``min_balance``; without an engine, the store's ``default_min_balance`` setting."""
        return self._engine.min_balance if self._engine else int(self._store.settings.default_min_balance)

    def _check_low_balance(self, user_id: str, before: int, after: int) -> None:
        threshold = self.low_balance_threshold
        if threshold is None:
            threshold = 2 * self._min_balance()
        if before > threshold >= after:
            self._emit("credits.low_balance", user_id, {"balance": after, "threshold": threshold,
                                                         "min_balance": self._min_balance()})

    def deduct(
        self,
        user_id: str,
        metrics: UsageMetrics,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> UsageDeductionResult:
        """Price ``metrics`` and charge the user: free allowance, spend caps, balance — one script call.

        Returns the result (``amount`` = minus the paid part, ``allowance_used``, ``cost``); emits
        ``credits.deducted`` (and ``credits.low_balance`` when the balance falls to the threshold),
        and delivers the cap events the script wrote. A replayed ``idempotency_key`` returns the
        first result and emits nothing.

        Raises:
            PricingNotLoadedError: no pricing loaded.
            InsufficientCreditsError: the charge was refused; ``.code`` is the store's error
                (``insufficient_credits``, ``spend_cap_exceeded``, ``rate_limited``,
                ``ledger_backlog_full``, ``invalid_amount``) and ``.result`` the refused result.
        """
        engine = self._need_engine()
        cost = engine.calculate(metrics)
        if cost.credits == 0:
            balance = self.get_balance(user_id)
            result = UsageDeductionResult(transaction_id="", user_id=user_id, amount=0,
                                          balance_after=balance.balance, cost=0)
            self._emit("credits.deducted", user_id, {"transaction_id": "", "amount": 0, "cost": 0,
                                                     "balance_after": balance.balance, "model": metrics.model})
            return result
        meta = self._tx_metadata(metrics, cost, idempotency_key, metadata)
        result = self._store.charge_with_allowance(
            user_id, cost.credits, metrics.fixed_job or "usage", self._allowances(engine), idempotency_key,
            meta, engine.min_balance,
        )
        if result.cap_action or result.error == E.SPEND_CAP_EXCEEDED:
            self.poll_events(user_id=user_id)
        if result.error:
            raise ChargeRefusedError(self._refusal_message(user_id, metrics, cost.credits, result.error),
                                     code=result.error, result=result)
        if result.amount == 0:  # wholly covered by the free allowance: no credits moved, no transaction
            result.transaction_id = ""
        if not result.idempotent:
            self._emit("credits.deducted", user_id, {
                "transaction_id": result.transaction_id, "amount": result.amount,
                "balance_after": result.balance_after, "model": metrics.model, "cost": result.cost,
                "allowance_used": result.allowance_used, "plan_id": result.plan_id,
                "plan_covered": result.amount == 0,
            })
            self._check_low_balance(user_id, result.balance_after - result.amount, result.balance_after)
        return result  # type: ignore[no-any-return]

    def _refusal_message(self, user_id: str, metrics: UsageMetrics, credits: int, error: str) -> str:
        """ducto's texts: ``Spend cap exceeded: <spend>/<limit> (<model>)`` for a deny cap (the
        figures read after the refusal), ``Credit reservation failed: <code>. User=..., requested=N``
        for any other refusal; both name the user and the credits asked for."""
        if error == E.SPEND_CAP_EXCEEDED:
            cap = self._store.check_spend_cap(user_id, model=metrics.model, amount=credits)
            model_info = f" ({cap.model})" if cap.model else ""
            return (f"Spend cap exceeded: {cap.current_spend}/{cap.cap_limit}{model_info}. "
                    f"User={user_id}, requested={credits}")
        return f"Credit reservation failed: {error}. User={user_id}, requested={credits}"

    def deduct_fixed(
        self,
        user_id: str,
        job_name: str,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> UsageDeductionResult:
        """Charge a fixed-price job from the config's ``fixed`` table (as :meth:`deduct`)."""
        return self.deduct(user_id, UsageMetrics(fixed_job=job_name), idempotency_key, metadata)

    def deduct_team(
        self,
        team_id: str,
        user_id: str,
        metrics: UsageMetrics,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> TeamDeductionResult:
        """Price ``metrics`` and spend it from a team pool for a member (``store.deduct_team``: one
        script). Refusals are returned as the result's ``error``, as in ducto."""
        engine = self._need_engine()
        cost = engine.calculate(metrics)
        if cost.credits == 0:
            bal = self._store.get_team_balance(team_id)
            return TeamDeductionResult(transaction_id="", team_id=team_id, user_id=user_id, amount=0,
                                       team_balance_after=bal.balance, error=bal.error)
        meta = self._tx_metadata(metrics, cost, idempotency_key, metadata)
        result: TeamDeductionResult = self._store.deduct_team(team_id, user_id, cost.credits, meta, idempotency_key)
        if result.error == E.SPEND_CAP_EXCEEDED:
            self.poll_events(team_id=team_id)
        if result.error is None and not result.idempotent:
            self._emit("credits.deducted", user_id, {
                "transaction_id": result.transaction_id, "amount": result.amount,
                "team_balance_after": result.team_balance_after, "team_id": team_id, "deduct_type": "team",
                "model": metrics.model, "cost": cost.credits,
            })
        return result

    # ── plans ─────────────────────────────────────────────────────────

    def set_user_plan(self, user_id: str, plan_id: str) -> SetUserPlanResult:
        """Put a user on a plan; emits ``credits.plan_changed`` when the plan actually changed."""
        result: SetUserPlanResult = self._store.set_user_plan(user_id, plan_id)
        if result.previous_plan_id != plan_id:
            self._emit("credits.plan_changed", user_id, {"old_plan": result.previous_plan_id, "new_plan": plan_id})
        return result

    def get_user_plan(self, user_id: str) -> GetUserPlanResult:
        """The user's plan (see :meth:`RedisStore.get_user_plan`)."""
        return self._store.get_user_plan(user_id)  # type: ignore[no-any-return]

    def check_allowance(self, user_id: str) -> AllowanceResult:
        """What is left of the user's free allowance this month."""
        return self._store.check_allowance(user_id)  # type: ignore[no-any-return]

    # ── refunds and expiry (the store decides; the manager emits) ──────

    def refund_credits(
        self,
        transaction_id: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: CreditMetadata | None = None,
    ) -> RefundResult:
        """Refund a debit in full or in part (``store.refund_credits``); emits ``credits.refunded``
        unless the store answered an error (``transaction_not_found``, ``already_refunded``, ...)."""
        result: RefundResult = self._store.refund_credits(
            transaction_id, amount=amount, reason=reason, metadata=metadata)
        if result.error is None and not getattr(result, "idempotent", False):
            self._emit("credits.refunded", result.user_id, {
                "transaction_id": transaction_id, "refund_transaction_id": result.refund_transaction_id,
                "amount": result.amount, "new_balance": result.new_balance, "reason": reason,
            })
        return result

    def sweep_expired_credits(self, dry_run: bool = False) -> SweepResult:
        """Remove expired credit grants from balances (``store.sweep_expired_credits``); emits
        ``credits.expired`` (user ``"system"``) when something expired and it was not a dry run."""
        result: SweepResult = self._store.sweep_expired_credits(dry_run=dry_run)
        if not dry_run and result.expired_count > 0:
            self._emit("credits.expired", "system", {
                "expired_count": result.expired_count, "expired_amount": result.expired_amount,
            })
        return result

    # ── events written by the scripts ─────────────────────────────────

    def poll_events(self, *, user_id: str | None = None, team_id: str | None = None, count: int = 100) -> int:
        """Deliver to the emitter the events the scripts wrote to Redis (cap warnings and cap
        reached, from any caller) that this manager's consumer group has not seen; each exactly
        once per group. Only the account's shard with ``user_id``/``team_id``, else every shard.
        Returns how many were delivered. :meth:`deduct` calls it when its charge wrote one."""
        keys = self._store.core.keys
        if user_id is not None:
            streams = [keys.user(user_id).events]
        elif team_id is not None:
            streams = [keys.team(team_id).events]
        else:
            streams = keys.all_events_streams()
        return self._reader.poll(self._emitter, streams, count)

    # ── analytics (the Postgres ledger) ───────────────────────────────

    def spend_by_user(self, start: datetime, end: datetime) -> list[SpendByUserRow]:
        """Spend per user in ``[start, end)``."""
        return self._store.spend_by_user(start, end)  # type: ignore[no-any-return]

    def spend_by_model(self, start: datetime, end: datetime) -> list[SpendByModelRow]:
        """Spend per model in ``[start, end)``."""
        return self._store.spend_by_model(start, end)  # type: ignore[no-any-return]

    def top_users(self, limit: int, start: datetime, end: datetime) -> list[TopUserRow]:
        """The ``limit`` biggest spenders in ``[start, end)``."""
        return self._store.top_users(limit, start, end)  # type: ignore[no-any-return]

    def daily_spend(self, start: datetime, end: datetime) -> list[DailySpendRow]:
        """Spend per UTC day in ``[start, end)``."""
        return self._store.daily_spend(start, end)  # type: ignore[no-any-return]

    def aggregate_stats(self, start: datetime, end: datetime) -> AggregateStatsRow:
        """Totals over ``[start, end)``."""
        return self._store.aggregate_stats(start, end)  # type: ignore[no-any-return]

    def spend_by_member(self, team_id: str, start: datetime, end: datetime) -> list[SpendByMemberRow]:
        """A team's spend per member in ``[start, end)``."""
        return self._store.spend_by_member(team_id, start, end)  # type: ignore[no-any-return]
