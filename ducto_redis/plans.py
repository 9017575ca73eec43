"""Plans with free monthly allowances, and the pricing configuration stored in Redis (versioned).

The calls every store shell runs (validation, keys, ARGV, reply parsing), as :mod:`team_ops` does
for teams, and the store methods themselves as two mixins (sync and async) so the stores only
list them among their bases.

* A user's plan id lives in the user's account hash (``plan``) and the allowance used this month
  in ``{ns:N}:u:<id>:pw`` (field ``p|<plan id>``, UTC calendar month): both under the user's hash
  tag, so ``plan_debit.lua`` consumes the allowance in the same script as the paid debit.
* Plan definitions (name, ``free_allowance``) come from the pricing config's ``plans``: the store
  methods read the active config; :meth:`charge_with_allowance` takes the allowances explicitly
  (the manager passes its engine's) or reads the active config.
* Pricing versions live under their own hash tag ``{ns:pricing}``; every version stays readable.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from .core import (
    Call,
    StoreCore,
    _err,
    _parts,
    _reply,
    construct,
    new_id,
    ready,
    tx_of,
)
from .errors import ConfigError, InvalidInputError
from .layout import fragment
from .models import (
    AllowanceResult,
    CreditMetadata,
    GetUserPlanResult,
    PlanDefinition,
    PricingConfigData,
    PricingConfigResult,
    PricingHistoryItem,
    SetUserPlanResult,
    UsageDeductionResult,
)
from .validation import check_amount, check_id, check_label

T = TypeVar("T")


class PricingConfigError(InvalidInputError, ConfigError):
    """A pricing configuration refused before anything was written (``field`` names where)."""


def find_plan(plans: dict[str, PlanDefinition] | None, plan_id: str) -> PlanDefinition | None:
    """The plan with this key in ``plans``, else the plan whose ``id`` it is, else None."""
    plans = plans or {}
    if plan_id in plans:
        return plans[plan_id]
    return next((p for p in plans.values() if p.id == plan_id), None)


def allowance_table(plans: dict[str, PlanDefinition] | None) -> dict[str, int]:
    """Plan key and plan id -> free allowance per month (what ``plan_debit.lua`` looks up)."""
    table: dict[str, int] = {}
    for key, plan in (plans or {}).items():
        table[key] = plan.free_allowance
    for plan in (plans or {}).values():
        table.setdefault(plan.id, plan.free_allowance)
    return table


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def check_pricing_config(config: object) -> PricingConfigData:
    """A :class:`PricingConfigData` whose every formula an engine accepts, else :class:`PricingConfigError`."""
    from .pricing import PricingEngine

    if isinstance(config, dict):
        try:
            config = PricingConfigData.model_validate(config)
        except ValidationError as exc:
            raise PricingConfigError("config", str(exc)) from exc
    if not isinstance(config, PricingConfigData):
        raise PricingConfigError("config", f"must be a PricingConfigData, got {type(config).__name__}")
    try:
        PricingEngine(config)
    except ConfigError as exc:
        raise PricingConfigError("config", str(exc)) from exc
    return config


def _pricing_record(raw: str) -> PricingConfigResult:
    rec = json.loads(raw)
    return PricingConfigResult(
        id=rec["id"], config=PricingConfigData.model_validate(rec["config"]), version=int(rec["version"]),
        label=rec.get("label") or None,
    )


class PlanOps:
    """Plan, allowance and stored-pricing calls over a :class:`StoreCore`'s keys and scripts."""

    def __init__(self, core: StoreCore) -> None:
        self.core = core

    def _pricing_keys(self) -> list[str]:
        return [self.core.keys.pricing_active(), self.core.keys.pricing_versions()]

    # ── pricing ───────────────────────────────────────────────────────

    def set_active_pricing(self, config: PricingConfigData, label: str | None = None) -> Call[str]:
        """Publish ``config`` as the next version (the active one); answers its id."""
        cfg = check_pricing_config(config)
        lab = "" if label is None else check_label(label, "label")
        args = [str(uuid.uuid4()), lab, cfg.model_dump_json(exclude_none=True), self.core.config()]
        keys = [*self._pricing_keys(), self.core.keys.pricing_ledger()]
        return Call(self.core.scripts["pricing_set"], keys, args, lambda raw: _reply(raw, 4)[2])

    def read_pricing(self, version: int | None = None) -> Call[PricingConfigResult | None]:
        """The active pricing (``version`` None) or one version; None when there is none."""
        sel = "" if version is None else str(check_amount(version, "version", 1))

        def parse(raw: Any) -> PricingConfigResult | None:
            r = _reply(raw, 3)
            return _pricing_record(r[3]) if len(r) > 3 else None

        return Call(self.core.scripts["pricing_read"], self._pricing_keys(), [sel], parse)

    def pricing_history(self) -> Call[list[PricingHistoryItem]]:
        """Every published version, oldest first, the active one marked."""

        def parse(raw: Any) -> list[PricingHistoryItem]:
            r = _reply(raw, 3)
            items = []
            for rec in (json.loads(x) for x in r[3:]):
                items.append(PricingHistoryItem(
                    id=rec["id"], version=int(rec["version"]), label=rec.get("label") or None,
                    created_at=_iso(int(rec["ts"])), active=str(rec["version"]) == r[2],
                ))
            return sorted(items, key=lambda i: i.version)

        return Call(self.core.scripts["pricing_read"], self._pricing_keys(), ["*"], parse)

    # ── plans ─────────────────────────────────────────────────────────

    def set_user_plan(self, user_id: str, plan_id: str, plan: PlanDefinition | None) -> Call[SetUserPlanResult]:
        """Assign ``plan_id`` (its definition, if known, goes into the ledger entry)."""
        uid = check_id(user_id, "user_id")
        pid = check_label(plan_id, "plan_id")
        k = self.core.keys.user(uid)
        meta: dict[str, Any] = {"plan_id": pid}
        if plan is not None:
            meta.update(plan_name=plan.name, free_allowance=plan.free_allowance)

        def parse(raw: Any) -> SetUserPlanResult:
            r = _reply(raw, 3)
            return SetUserPlanResult(user_id=uid, plan_id=pid, previous_plan_id=r[2] or None)

        frag = fragment(op="plan_set", acct=uid, meta=json.dumps(meta, separators=(",", ":")))
        args = [new_id(), pid, frag, self.core.config()]
        return Call(self.core.scripts["set_plan"], [k.account, k.ledger], args, parse)

    def read_plan(self, user_id: str) -> Call[tuple[str, int, int, int]]:
        """(plan id or "", allowance used this month, month start ms, month end ms)."""
        uid = check_id(user_id, "user_id")
        k = self.core.keys.user(uid)

        def parse(raw: Any) -> tuple[str, int, int, int]:
            r = _reply(raw, 6)
            return r[2], int(r[3]), int(r[4]), int(r[5])

        return Call(self.core.scripts["plan_read"], [k.account], [self.core.config()], parse)

    @staticmethod
    def user_plan(user_id: str, plan_id: str, plans: dict[str, PlanDefinition] | None) -> GetUserPlanResult:
        """ducto's ``GetUserPlanResult`` from a stored plan id and the known plan definitions."""
        if not plan_id:
            return GetUserPlanResult(user_id=user_id)
        plan = find_plan(plans, plan_id)
        return GetUserPlanResult(
            user_id=user_id, plan_id=plan_id, plan_name=plan.name if plan else None,
            free_allowance=plan.free_allowance if plan else 0,
        )

    @staticmethod
    def allowance(read: tuple[str, int, int, int], plans: dict[str, PlanDefinition] | None) -> AllowanceResult:
        """ducto's ``AllowanceResult``: empty without a (known) plan; the period is the UTC month, end exclusive."""
        plan_id, used, start, end = read
        plan = find_plan(plans, plan_id) if plan_id else None
        if plan is None:
            return AllowanceResult(plan_id="", allowance_remaining=0, period_start="", period_end="")
        return AllowanceResult(
            plan_id=plan_id, allowance_remaining=max(0, plan.free_allowance - used),
            period_start=_iso(start), period_end=_iso(end),
        )

    def increment_usage_window(self, user_id: str, plan_id: str, amount: int) -> Call[None]:
        """Count ``amount`` credits of ``plan_id``'s allowance as used this month (0 writes nothing)."""
        uid = check_id(user_id, "user_id")
        pid = check_label(plan_id, "plan_id")
        n = check_amount(amount, "amount", 0)
        if n == 0:
            return ready(None)
        k = self.core.keys.user(uid)
        frag = fragment(op="allowance_used", acct=uid)
        args = [new_id(), pid, str(n), frag, self.core.config()]
        return Call(self.core.scripts["plan_usage"], [k.account, k.ledger], args, lambda _r: None)

    def charge_with_allowance(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        allowances: dict[str, int],
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
    ) -> Call[UsageDeductionResult]:
        """Charge ``amount`` with the user's plan allowance first, then caps and balance: one script.

        The call is ``charge``'s (same validation, KEYS and ARGV for debit.lua) with the allowance
        table in place of the reservation id (lua/plan_debit.lua).
        """
        base = self.core.charge(user_id, amount, operation_type, idempotency_key, metadata, min_balance)
        if not isinstance(allowances, dict):
            raise InvalidInputError("allowances", f"must be a dict plan id -> credits, not {type(allowances).__name__}")
        table = {check_label(p, "allowances"): check_amount(a, "allowances", 0) for p, a in allowances.items()}
        cost = check_amount(amount, "amount", 1)  # charge checked it already: its plain int value

        shard = self.core.debit_keys(user_id).shard

        def parse(raw_reply: Any) -> UsageDeductionResult:
            r = _parts(raw_reply, 12)
            paid, free = int(r[3]), int(r[9])
            return construct(UsageDeductionResult,
                transaction_id=tx_of(shard, r[2]), user_id=user_id, amount=-paid, balance_after=int(r[4]),
                idempotent=r[1] == "1", error=_err(r[0]), cap_action=r[6] or None,
                retry_after_ms=int(r[7]) if r[7] else 0, rate_limit_remaining=int(r[8]) if r[8] else None,
                cost=cost, allowance_used=free, plan_id=r[11] or None, allowance_remaining=int(r[10]),
            )

        args = [*base.args[:5], json.dumps(table, separators=(",", ":")), base.args[7]]
        return Call(self.core.scripts["plan_debit"], base.keys, args, parse)


def _ops(core: StoreCore) -> PlanOps:
    ops = getattr(core, "_plan_ops", None)
    if ops is None:
        ops = PlanOps(core)
        core._plan_ops = ops  # type: ignore[attr-defined]
    return ops


class PlanStoreMixin:
    """Plan, allowance and stored-pricing methods of :class:`~ducto_redis.store.RedisStore`."""

    core: StoreCore

    if TYPE_CHECKING:

        def _run(self, call: Call[T]) -> T: ...

    # pricing

    def set_active_pricing(self, config: PricingConfigData, label: str | None = None) -> str:
        """Publish a pricing config as the next version (now active); returns its id.

        Every formula is checked first (``PricingConfigError``, a ``ConfigError`` and a
        ``ValueError``, nothing written). Publishing the active config again changes nothing.
        """
        return self._run(_ops(self.core).set_active_pricing(config, label))

    def get_active_pricing(self) -> PricingConfigResult | None:
        """The active pricing config with its id and version (1, 2, ...), or None before any."""
        return self._run(_ops(self.core).read_pricing())

    def get_pricing_config(self, version: int) -> PricingConfigResult | None:
        """A published version (active or not), or None."""
        return self._run(_ops(self.core).read_pricing(version))

    def get_pricing_history(self) -> list[PricingHistoryItem]:
        """Every published version (id, version, label, created_at, active), oldest first."""
        return self._run(_ops(self.core).pricing_history())

    # plans

    def _plans(self) -> dict[str, PlanDefinition] | None:
        active = self.get_active_pricing()
        return active.config.plans if active else None

    def set_user_plan(self, user_id: str, plan_id: str) -> SetUserPlanResult:
        """Put a user on a plan (a ledger ``config`` entry); the result names the previous plan.

        A plan unknown to the active pricing config is refused (``InvalidInputError`` on
        ``plan_id``, nothing written) when that config defines plans."""
        plans = self._plans()
        plan = find_plan(plans, check_label(plan_id, "plan_id"))
        if plans and plan is None:
            raise InvalidInputError("plan_id", f"unknown plan {plan_id!r} (plans: {', '.join(sorted(plans))})")
        return self._run(_ops(self.core).set_user_plan(user_id, plan_id, plan))

    def get_user_plan(self, user_id: str) -> GetUserPlanResult:
        """The user's plan id, name and free allowance (from the active pricing config)."""
        read = self._run(_ops(self.core).read_plan(user_id))
        return PlanOps.user_plan(user_id, read[0], self._plans() if read[0] else None)

    def check_allowance(self, user_id: str) -> AllowanceResult:
        """What is left of the plan's free allowance this UTC month (``plan_id`` "" without a plan)."""
        read = self._run(_ops(self.core).read_plan(user_id))
        return PlanOps.allowance(read, self._plans() if read[0] else None)

    def increment_usage_window(self, user_id: str, plan_id: str, amount: int) -> None:
        """Count ``amount`` of the plan's allowance as used this month."""
        self._run(_ops(self.core).increment_usage_window(user_id, plan_id, amount))

    def charge_with_allowance(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        allowances: dict[str, int] | None = None,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
    ) -> UsageDeductionResult:
        """Charge ``amount``: the plan's free allowance first, then spend caps, then the balance — one
        script, so the allowance is never spent twice. ``allowances`` (plan id -> monthly allowance)
        defaults to the active pricing config's plans."""
        table = allowance_table(self._plans()) if allowances is None else allowances
        return self._run(_ops(self.core).charge_with_allowance(
            user_id, amount, operation_type, table, idempotency_key, metadata, min_balance))


class AsyncPlanStoreMixin:
    """The same methods for :class:`~ducto_redis.aio.AsyncRedisStore`."""

    core: StoreCore

    if TYPE_CHECKING:

        async def _run(self, call: Call[T]) -> T: ...

    async def set_active_pricing(self, config: PricingConfigData, label: str | None = None) -> str:
        """See :meth:`PlanStoreMixin.set_active_pricing`."""
        return await self._run(_ops(self.core).set_active_pricing(config, label))

    async def get_active_pricing(self) -> PricingConfigResult | None:
        """See :meth:`PlanStoreMixin.get_active_pricing`."""
        return await self._run(_ops(self.core).read_pricing())

    async def get_pricing_config(self, version: int) -> PricingConfigResult | None:
        """See :meth:`PlanStoreMixin.get_pricing_config`."""
        return await self._run(_ops(self.core).read_pricing(version))

    async def get_pricing_history(self) -> list[PricingHistoryItem]:
        """See :meth:`PlanStoreMixin.get_pricing_history`."""
        return await self._run(_ops(self.core).pricing_history())

    async def _plans(self) -> dict[str, PlanDefinition] | None:
        active = await self.get_active_pricing()
        return active.config.plans if active else None

    async def set_user_plan(self, user_id: str, plan_id: str) -> SetUserPlanResult:
        """See :meth:`PlanStoreMixin.set_user_plan`."""
        plans = await self._plans()
        plan = find_plan(plans, check_label(plan_id, "plan_id"))
        if plans and plan is None:
            raise InvalidInputError("plan_id", f"unknown plan {plan_id!r} (plans: {', '.join(sorted(plans))})")
        return await self._run(_ops(self.core).set_user_plan(user_id, plan_id, plan))

    async def get_user_plan(self, user_id: str) -> GetUserPlanResult:
        """See :meth:`PlanStoreMixin.get_user_plan`."""
        read = await self._run(_ops(self.core).read_plan(user_id))
        return PlanOps.user_plan(user_id, read[0], await self._plans() if read[0] else None)

    async def check_allowance(self, user_id: str) -> AllowanceResult:
        """See :meth:`PlanStoreMixin.check_allowance`."""
        read = await self._run(_ops(self.core).read_plan(user_id))
        return PlanOps.allowance(read, await self._plans() if read[0] else None)

    async def increment_usage_window(self, user_id: str, plan_id: str, amount: int) -> None:
        """See :meth:`PlanStoreMixin.increment_usage_window`."""
        await self._run(_ops(self.core).increment_usage_window(user_id, plan_id, amount))

    async def charge_with_allowance(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        allowances: dict[str, int] | None = None,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
    ) -> UsageDeductionResult:
        """See :meth:`PlanStoreMixin.charge_with_allowance`."""
        table = allowance_table(await self._plans()) if allowances is None else allowances
        return await self._run(_ops(self.core).charge_with_allowance(
            user_id, amount, operation_type, table, idempotency_key, metadata, min_balance))
