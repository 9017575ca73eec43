"""Pydantic models: ducto 1.0's inputs and results, with the same names and fields.

Inputs are validated here before anything reaches Redis; results are what every store returns.
Where ducto 1.0 had a flaw (``SpendCap(cap_type="monthly")`` silently becoming daily), the model
here does the right thing: both ``cap_type=`` and ``type=`` are accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .settings import DEFAULT_MIN_BALANCE
from .validation import MAX_AMOUNT, invalid_input


class InputModel(BaseModel):
    """An input model: a wrong field raises :class:`~ducto_redis.errors.InvalidInputError` naming it
    (a ``ValueError``, as pydantic's own error is), so bad input gets the same answer everywhere."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_input(exc) from exc


# ── Metadata ──────────────────────────────────────────────────────────


class CreditMetadata(InputModel):
    """Metadata attached to a credit transaction; unknown fields pass through to the ledger."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    reference_type: str | None = None
    reference_id: str | None = None
    idempotency_key: str | None = None
    fixed_job: str | None = None


# ── Plans and pricing ─────────────────────────────────────────────────


class PlanDefinition(BaseModel):
    """A subscription plan with a free monthly allowance and optional rate overrides."""

    id: str
    name: str
    free_allowance: int = Field(default=0, ge=0, le=MAX_AMOUNT)
    rate_overrides: dict[str, str] | None = None
    features: dict[str, Any] | None = None


class PricingConfigData(BaseModel):
    """Pricing configuration: formulas per model, tool, search and cache, fixed job prices."""

    version: Literal[1] = 1
    models: dict[str, str]
    tools: dict[str, str] = Field(default_factory=lambda: {"_default": "tool_calls * 0"})
    search: dict[str, str] = Field(default_factory=dict)
    cache: dict[str, str] = Field(default_factory=dict)
    fixed: dict[str, int] = Field(default_factory=dict)
    min_balance: int = DEFAULT_MIN_BALANCE
    plans: dict[str, PlanDefinition] | None = None


class PricingConfigResult(BaseModel):
    """Versioned pricing configuration fetched from the store."""

    id: str
    config: PricingConfigData
    version: int = 1
    label: str | None = None


# ── Runtime results ───────────────────────────────────────────────────


class SetupResult(BaseModel):
    """What `setup()` created or loaded."""

    tables_created: list[str] = Field(default_factory=list)
    rpcs_created: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)

    @property
    def success(self) -> bool:
        """True when setup reported no errors."""
        return not self.errors


class BalanceResult(BaseModel):
    """A user's balance. ``held`` is the sum of open reservations; ``available`` = balance − held."""

    user_id: str
    balance: int = 0
    lifetime_purchased: int = 0
    held: int = 0

    @property
    def available(self) -> int:
        """Credits that can still be reserved or charged."""
        return self.balance - self.held


class AddCreditsResult(BaseModel):
    """Result of adding credits to a user's account."""

    transaction_id: str
    user_id: str
    amount: int
    new_balance: int
    lifetime_purchased: int = 0
    idempotent: bool = False


class ReserveResult(BaseModel):
    """Result of reserving (holding) credits for an operation."""

    reservation_id: str
    user_id: str
    amount: int
    balance: int = 0
    reserved_total: int = 0
    error: str | None = None
    expires_at_ms: int = 0
    idempotent: bool = False
    retry_after_ms: int = 0
    rate_limit_remaining: int | None = None
    rate_limit_limit: int | None = None
    """The account's request-rate limit (requests per period) when the hold applied it, else None."""


class DeductionResult(BaseModel):
    """Result of a debit (``deduct_credits`` or ``charge``); ``amount`` is negative for a debit."""

    transaction_id: str
    user_id: str
    amount: int
    balance_after: int
    idempotent: bool = False
    error: str | None = None
    cap_action: str | None = None
    retry_after_ms: int = 0
    rate_limit_remaining: int | None = None
    rate_limit_limit: int | None = None
    """The account's request-rate limit (requests per period) when the charge applied it, else None."""


class ReleaseResult(BaseModel):
    """Result of releasing a reservation without spending it."""

    reservation_id: str
    user_id: str
    amount: int = 0
    balance: int = 0
    held: int = 0
    idempotent: bool = False
    error: str | None = None


class RateLimitResult(BaseModel):
    """Whether one request was admitted by an account's rate limit (``remaining`` and ``limit``, the
    requests per period, None: no limit)."""

    user_id: str
    allowed: bool
    retry_after_ms: int = 0
    remaining: int | None = None
    limit: int | None = None
    error: str | None = None


class SpendCap(InputModel):
    """A daily or monthly (UTC calendar) spend cap for a user, optionally for one model only."""

    model_config = ConfigDict(populate_by_name=True)

    user_id: str = Field(default="", strict=True)
    cap_type: Literal["daily", "monthly"] = Field(default="daily", alias="type")
    model: str | None = Field(default=None, strict=True)
    limit: int = Field(default=0, ge=0, le=MAX_AMOUNT, strict=True)
    action: Literal["deny", "warn", "notify"] = "deny"


class CapCheckResult(BaseModel):
    """The state of the cap that matters most for a user (and model): real spend, limit, action."""

    capped: bool = False
    current_spend: int = 0
    cap_limit: int = 0
    action: str | None = None
    model: str | None = None
    cap_type: str | None = None


# ── Teams ──────────────────────────────────────────────────────────────


class Team(BaseModel):
    """A team with a shared credit pool."""

    team_id: str = ""
    name: str = ""
    balance: int = 0
    member_count: int = 0
    created_at: str = ""


class TeamBalanceResult(BaseModel):
    """A team's pool balance and member count (``error`` set when the team does not exist)."""

    team_id: str = ""
    name: str = ""
    balance: int = 0
    member_count: int = 0
    held: int = 0
    error: str | None = None


class TeamMemberSpend(BaseModel):
    """One line of a team's spend report: who spent what, this period and all time."""

    user_id: str
    role: str = "member"
    spend_cap: int | None = None
    cap_period: str = "total"
    total_spent: int = 0
    spent_today: int = 0
    spent_this_month: int = 0
    held: int = 0


class TeamMember(BaseModel):
    """A member of a team with an optional spend cap."""

    user_id: str = ""
    role: str = ""
    spend_cap: int | None = None
    total_spent: int = 0
    cap_period: str = "total"
    period_spent: int = 0


class CreateTeamResult(BaseModel):
    """Result of creating a team."""

    team_id: str = ""
    name: str = ""


class AddTeamMemberResult(BaseModel):
    """Result of adding a team member."""

    team_id: str = ""
    user_id: str = ""
    role: str = "member"
    error: str | None = None


class TeamDeductionResult(BaseModel):
    """Result of a debit from a team pool."""

    transaction_id: str = ""
    team_id: str = ""
    user_id: str = ""
    amount: int = 0
    team_balance_after: int = 0
    error: str | None = None
    idempotent: bool = False


# ── Later issues (kept here so every store returns the same models) ──


class GetUserPlanResult(BaseModel):
    """A user's current plan."""

    user_id: str
    plan_id: str | None = None
    plan_name: str | None = None
    free_allowance: int = 0


class SetUserPlanResult(BaseModel):
    """Result of assigning a plan to a user (``previous_plan_id``: the plan before, None if none)."""

    user_id: str
    plan_id: str
    previous_plan_id: str | None = None


class AllowanceResult(BaseModel):
    """What is left of a plan's free allowance this period."""

    plan_id: str
    allowance_remaining: int
    period_start: str
    period_end: str


class RefundResult(BaseModel):
    """Result of refunding a debit (all of it or a part); ``amount`` is positive, credited back.

    ``user_id`` is the user whose debit it was (read from the debit's ledger row; "" when not found);
    for a team debit, the member who spent, and ``team_id`` the pool credited.
    """

    refund_transaction_id: str
    original_transaction_id: str
    user_id: str
    team_id: str | None = None
    amount: int = 0
    new_balance: int = 0
    error: str | None = None
    idempotent: bool = False


class ExpiredCredit(BaseModel):
    """One expiring grant's remainder removed from a balance (one ledger entry ``entry_id``; "" in a dry run)."""

    user_id: str
    grant_id: str
    amount: int
    expires_at_ms: int
    entry_id: str = ""


class SweepResult(BaseModel):
    """Result of sweeping expired credits; ``expired`` lists each expiry (for ``credits.expired`` events)."""

    expired_count: int = 0
    expired_amount: int = 0
    dry_run: bool = False
    expired: list[ExpiredCredit] = Field(default_factory=list)


class SpendByUserRow(BaseModel):
    """Aggregated spend of one user in a time window."""

    user_id: str = ""
    total_spend: int = 0
    transaction_count: int = 0


class SpendByModelRow(BaseModel):
    """Aggregated spend of one model in a time window."""

    model: str = ""
    total_spend: int = 0
    transaction_count: int = 0


class TopUserRow(BaseModel):
    """A top-spending user in a time window."""

    user_id: str = ""
    total_spend: int = 0


class DailySpendRow(BaseModel):
    """Spend of one UTC day."""

    date: str = ""
    total_spend: int = 0
    transaction_count: int = 0


class AggregateStatsRow(BaseModel):
    """Aggregate statistics across all users in a time window."""

    total_credits_consumed: int = 0
    active_users: int = 0
    avg_daily_spend: int = 0
    top_model: str = ""
    top_user: str = ""


class SpendByMemberRow(BaseModel):
    """A team member's spend from the pool in a time window."""

    user_id: str = ""
    total_spend: int = 0
    transaction_count: int = 0


class SpendByTeamRow(BaseModel):
    """A team pool's spend in a time window (all its members together)."""

    team_id: str = ""
    total_spend: int = 0
    transaction_count: int = 0


class LedgerLag(BaseModel):
    """How far the durable ledger is behind Redis: entries not yet stored in Postgres."""

    backlog: int = 0
    pending: int = 0
    oldest_unflushed_age_ms: int = 0
    per_shard: dict[int, int] = Field(default_factory=dict)


# ── Plans, allowances and stored pricing (ducto_redis/plans.py) ──────


class UsageDeductionResult(DeductionResult):
    """A charge with the plan allowance consumed first (``charge_with_allowance``, ``CreditManager.deduct``).

    ``amount`` is minus what left the balance (the paid part); ``allowance_used`` is what the plan's
    free allowance covered, so ``cost == allowance_used - amount``; ``allowance_remaining`` is
    what is left of the allowance this month after this charge.
    """

    cost: int = 0
    allowance_used: int = 0
    plan_id: str | None = None
    allowance_remaining: int = 0


class PricingHistoryItem(BaseModel):
    """One published pricing version (``get_pricing_history``)."""

    id: str
    version: int
    label: str | None = None
    created_at: str = ""
    active: bool = False
