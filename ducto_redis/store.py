"""RedisStore: the synchronous store, a thin I/O shell over :class:`~ducto_redis.core.StoreCore`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import redis

from . import errors
from .batch import Batch, ChargeRequest, TeamDebitRequest, charge_calls, team_debit_calls
from .connect import run_pipelined, sync_client
from .core import Call, StoreCore
from .errors import InvalidInputError
from .ledger.store_api import LedgerStoreMixin
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
from .plans import PlanStoreMixin
from .progress import ProgressFn
from .settings import Settings, given
from .team_ops import check_period
from .validation import check_amount, check_id, check_label

T = TypeVar("T")
_Store = TypeVar("_Store", bound="RedisStore")


def expires_ms(expires_at: datetime | None) -> int | None:
    """A datetime (naive = UTC) as epoch milliseconds."""
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise InvalidInputError("expires_at", f"must be a datetime or None, got {type(expires_at).__name__}")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=timezone.utc)
    return int(expires_at.timestamp() * 1000)


class RedisStore(LedgerStoreMixin, PlanStoreMixin):
    """Credits, reservations and spend caps in Redis; every decision is one atomic Lua script.

    Build it with :meth:`from_url` (``RedisStore.from_url("redis://127.0.0.1:6379", namespace="ducto")``),
    :meth:`from_settings`, or pass a ``redis.Redis`` client. Method names, arguments and results are
    ducto 1.0's; docs/differences-from-ducto.md lists the deliberate differences.
    """

    def __init__(self, client: Any, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        if overrides:
            self.settings = Settings.model_validate(self.settings.model_dump())
        self.client = client
        self.core = StoreCore(self.settings)

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

    def _run(self, call: Call[T]) -> T:
        if call.script is None:
            return call.parse(None)
        return call.parse(run_pipelined(self.client, [call])[0])

    def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        batch = Batch(calls, self.core.scripts)
        return batch.assemble(run_pipelined(self.client, batch.calls) if batch.calls else [])

    def health(self) -> bool:
        """True when a real script call answers on every shard (so on every node of a cluster)."""
        answers: list[bool] = self._run_many(self.core.health_probes())
        return all(answers)

    def setup(self, database_url: str | None = None) -> SetupResult:
        """Load the scripts' function library into Redis (FUNCTION LOAD); with a database URL (or
        ``DUCTO_DATABASE_URL``) also create the ledger schema in Postgres. Safe to call again."""
        result = SetupResult()
        library = next(iter(self.core.scripts.values())).library
        if library.load(self.client):  # one function library holds every script
            result.rpcs_created.extend(f"{name}.lua" for name in self.core.scripts)
        else:  # no functions here (Redis < 7): the scripts are sent with EVAL
            for name, script in self.core.scripts.items():
                try:
                    self.client.script_load(script.source)
                    result.rpcs_created.append(f"{name}.lua")
                except redis.RedisError as exc:
                    result.errors.append(f"{name}.lua: {exc}")
        url = database_url or self.settings.database_url
        if url:
            self._setup_database(url, result)
        return result

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with store:`` stops its background flusher, if one runs, and closes its connections."""
        self.stop_flusher()
        self.close()

    # ── balances and credits ──────────────────────────────────────────

    def get_balance(self, user_id: str) -> BalanceResult:
        """Balance, held amount (``available`` = balance − held) and lifetime purchases; 0 if unknown."""
        return self._run(self.core.get_balance(user_id))

    def add_credits(
        self,
        user_id: str,
        amount: int,
        type: str = "adjustment",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AddCreditsResult:
        """Credit a user (``amount`` 0 creates the record). A replayed idempotency key changes nothing."""
        return self._run(
            self.core.add_credits(user_id, amount, type, metadata, expires_ms(expires_at), idempotency_key)
        )

    # ── refunds and expiring credits ──────────────────────────────────

    def refund_credits(
        self,
        transaction_id: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> RefundResult:
        """Give back a debit (``charge`` or settlement), in full (``amount`` None) or in part, once.

        The debit is found from its id alone: in its shard's ledger stream while it is not flushed,
        then in the ledger database (``DUCTO_DATABASE_URL``; the embedded store's own ledger), so any
        debit the ledger holds can be refunded, user or team (credits go back to the pool).
        ``error``: ``already_refunded`` once the debit has been refunded, ``invalid_amount`` for more
        than the debit or less than 1, ``transaction_not_found`` (unknown, or not a debit),
        ``transaction_flushed`` (flushed, and no ledger database to read it from). Credits spent
        from an expiring grant go back to that grant, with its expiry.
        """
        found = self._run(self.core.refunds.find(transaction_id, amount, reason, metadata, idempotency_key))
        if isinstance(found, RefundResult):
            return found
        if not found.account_id:  # not in the stream: flushed (or never a debit)
            reader = self.ledger_reader()
            if reader is None:
                return self.core.refunds.not_found(
                    found, errors.TRANSACTION_FLUSHED if found.flushed else errors.TRANSACTION_NOT_FOUND)
            found = self.core.refunds.from_database(found, reader.entry(self.settings.namespace, transaction_id))
            if isinstance(found, RefundResult):
                return found
        return self._run(self.core.refunds.apply(found))

    def sweep_expired_credits(self, dry_run: bool = False, progress: ProgressFn | None = None) -> SweepResult:
        """Remove expired unspent grant remainders from balances, on every shard (one ledger entry each).

        Idempotent (a second sweep finds nothing); ``dry_run`` reports and writes nothing. Expired
        credits are never spendable even before a sweep: every script expires them lazily. With
        ``progress``, the sweep runs a few shards per round trip and calls ``progress(accounts swept,
        accounts due)`` after each.
        """
        due: list[list[str]] = self._run_many(self.core.refunds.due_accounts())
        replies: list[list[str]] = []
        for step in self.core.refunds.sweep_steps(due, dry_run, progress):
            replies += self._run_many(step)
        return self.core.refunds.sweep_result(replies, dry_run)

    # ── reservations and debits ───────────────────────────────────────

    def reserve_credits(
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
        """Hold credits for an operation; the hold expires after ``hold_ttl_seconds`` on its own."""
        return self._run(
            self.core.reserve_credits(
                user_id, amount, operation_type, metadata, min_balance, idempotency_key, ttl_seconds,
                quantities=quantities, rate_limit=rate_limit,
            )
        )

    def deduct_credits(
        self,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        *,
        quantities: dict[str, int] | None = None,
    ) -> DeductionResult:
        """Settle a reservation with the actual amount; spend caps are enforced in the same script."""
        return self._run(
            self.core.deduct_credits(user_id, reservation_id, amount, idempotency_key, metadata, quantities)
        )

    def release_reservation(
        self, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> ReleaseResult:
        """Return a reservation's credits without spending them."""
        return self._run(self.core.release_reservation(user_id, reservation_id, idempotency_key))

    def charge(
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
        """Check caps and balance and debit in one round trip, with no hold (the gateway's call)."""
        return self._run(
            self.core.charge(user_id, amount, operation_type, idempotency_key, metadata, min_balance, quantities)
        )

    def charge_many(self, requests: Sequence[ChargeRequest | Mapping[str, Any]]) -> list[DeductionResult]:
        """Many ``charge`` decisions in one round trip (one script call per shard), results in order.

        Each request is a :class:`ChargeRequest` or a dict of ``charge``'s arguments. Every decision
        is all-or-nothing on its own, exactly as if ``charge`` were called once per request.
        """
        return self._run_many(charge_calls(self.core, requests))

    # ── request-rate limits ───────────────────────────────────────────

    def set_rate_limit(
        self, user_id: str, limit: int | None, period_seconds: float = 1.0, burst: int | None = None
    ) -> None:
        """Allow ``limit`` requests per ``period_seconds`` (GCRA); ``None`` removes it. Checked by ``charge``."""
        self._run(self.core.set_rate_limit(user_id, limit, period_seconds, burst))

    def set_quantity_limit(
        self, user_id: str, quantity: str, limit: int | None, period_seconds: float = 60.0, model: str | None = None
    ) -> None:
        """Allow ``limit`` units of ``quantity`` (e.g. ``"tokens"``) per ``period_seconds``, for one
        ``model`` or (None) all; ``None`` removes it. ``charge(..., quantities={"tokens": n})`` and
        ``reserve_credits(..., quantities=...)`` are checked against it in the same script as caps
        and balance; ``deduct_credits(..., quantities=actual)`` corrects a hold's estimate."""
        self._run(self.core.set_quantity_limit(user_id, quantity, limit, period_seconds, model))

    def hit_rate_limit(self, user_id: str) -> RateLimitResult:
        """Admit one request against the rate limit without moving money (free routes)."""
        return self._run(self.core.hit_rate_limit(user_id))

    # ── spend caps ────────────────────────────────────────────────────

    def set_spend_cap(self, cap: SpendCap) -> None:
        """Set a daily or monthly cap (replacing the one of the same period and model)."""
        self._run(self.core.set_spend_cap(cap))

    def remove_spend_cap(self, user_id: str, cap_type: str = "daily", model: str | None = None) -> None:
        """Remove a user's cap of one period (and model)."""
        cap = SpendCap(user_id=user_id, cap_type=cap_type, model=model)  # type: ignore[arg-type,unused-ignore]
        self._run(self.core.set_spend_cap(cap, remove=True))

    def check_spend_cap(
        self, user_id: str, model: str | None = None, amount: int | None = None
    ) -> CapCheckResult:
        """The real current spend, limit and action of the cap that matters; ``capped`` if deny refuses."""
        return self._run(self.core.check_spend_cap(user_id, model, amount))

    # ── teams ─────────────────────────────────────────────────────────

    def create_team(
        self, name: str, initial_balance: int = 0, idempotency_key: str | None = None
    ) -> CreateTeamResult:
        """Create a team pool holding ``initial_balance`` credits (a fresh uuid id)."""
        return self._run(self.core.teams.create_team(name, initial_balance, idempotency_key))

    def get_team_balance(self, team_id: str) -> TeamBalanceResult:
        """Pool balance, held, name and member count, in O(1)."""
        return self._run(self.core.teams.get_team_balance(team_id))

    def top_up_team(
        self,
        team_id: str,
        amount: int,
        type: str = "purchase",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TeamBalanceResult:
        """Credit a team pool (typed, idempotent); ``error='team_not_found'`` if unknown."""
        return self._run(self.core.teams.top_up(team_id, amount, type, metadata, idempotency_key))

    def add_team_member(
        self,
        team_id: str,
        user_id: str,
        role: str = "member",
        spend_cap: int | None = None,
        cap_period: str = "total",
    ) -> AddTeamMemberResult:
        """Add (or update) a member: any user id, as in ducto (a team member needs no personal
        balance: the pool pays); ``team_not_found`` for an unknown team."""
        fields = self.core.teams.add_member_fields(role, spend_cap, cap_period)
        return self._run(self.core.teams.member(team_id, user_id, "add", fields))

    def set_member_cap(
        self, team_id: str, user_id: str, spend_cap: int | None, cap_period: str | None = None
    ) -> AddTeamMemberResult:
        """Change or (``None``) remove one member's cap, over ``total``/``daily``/``monthly``."""
        fields: dict[str, Any] = {"cap": "-1" if spend_cap is None else str(check_amount(spend_cap, "spend_cap", 0))}
        if cap_period is not None:
            fields["period"] = check_period(cap_period)
        return self._run(self.core.teams.member(team_id, user_id, "update", fields))

    def set_member_role(self, team_id: str, user_id: str, role: str) -> AddTeamMemberResult:
        """Change a member's role."""
        return self._run(self.core.teams.member(team_id, user_id, "update", {"role": check_label(role, "role")}))

    def remove_team_member(self, team_id: str, user_id: str) -> AddTeamMemberResult:
        """Remove a member; their spend history stays in the report and the ledger."""
        return self._run(self.core.teams.member(team_id, user_id, "remove", {}))

    def get_team_members(self, team_id: str) -> list[TeamMember]:
        """Members with role, spend_cap and total_spent (ducto's list)."""
        return self._run(self.core.teams.get_team_members(team_id))

    def team_spend_report(self, team_id: str) -> list[TeamMemberSpend]:
        """Who spent what: per member all time, today, this month, and held."""
        return self._run(self.core.teams.members(team_id))

    def set_team_spend_cap(
        self, team_id: str, cap_type: str = "daily", limit: int = 0, action: str = "deny", model: str | None = None
    ) -> None:
        """A team-level daily or monthly cap (deny / warn / notify), like a user's."""
        self._run(self.core.set_team_spend_cap(team_id, cap_type, limit, action, model))

    def deduct_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TeamDeductionResult:
        """Spend from the pool for a member: membership, member cap, team caps, pool, one script."""
        return self._run(self.core.teams.deduct_team(team_id, user_id, amount, metadata, idempotency_key))

    def deduct_team_many(
        self, requests: Sequence[TeamDebitRequest | Mapping[str, Any]]
    ) -> list[TeamDeductionResult]:
        """Many ``deduct_team`` decisions in one round trip (one script call per team shard), in order.

        Each request is a :class:`TeamDebitRequest` or a dict of ``deduct_team``'s arguments.
        """
        return self._run_many(team_debit_calls(self.core, requests))

    def reserve_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        operation_type: str = "team_job",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
    ) -> ReserveResult:
        """Hold pool credits for a member's long job (counts toward their cap; expires)."""
        return self._run(self.core.teams.reserve_team(
            team_id, user_id, amount, operation_type, metadata, idempotency_key, ttl_seconds))

    def settle_team_reservation(
        self,
        team_id: str,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> TeamDeductionResult:
        """Spend the actual amount of a team hold; the rest returns to the pool."""
        return self._run(self.core.teams.deduct_team(
            team_id, user_id, amount, metadata, idempotency_key,
            reservation_id=check_id(reservation_id, "reservation_id")))

    def release_team_reservation(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> ReleaseResult:
        """Give a team hold back to the pool untouched."""
        return self._run(self.core.teams.release_team(team_id, user_id, reservation_id, idempotency_key))
