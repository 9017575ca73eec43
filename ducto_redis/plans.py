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
from collections.abc import Callable
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
from .specs import DEBIT, PLAN_DEBIT, PLAN_READ, PLAN_USAGE, PRICING_READ, PRICING_SET, SET_PLAN
from .validation import check_amount, check_id, check_label

T = TypeVar("T")

_PLAN_DEBIT = PLAN_DEBIT.reply.pos  # reply fields by name (ducto_redis/specs.py)
_CHARGE = DEBIT.args.pos  # charge's ARGV, which charge_with_allowance takes its own from


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

    def _pricing_read(self, which: str, parse: Callable[[Any], T]) -> Call[T]:
        k = self.core.keys
        keys = PRICING_READ.keys.pack(active=k.pricing_active(), versions=k.pricing_versions())
        return Call(self.core.scripts["pricing_read"], keys, PRICING_READ.args.pack(which=which), parse)

    # ── pricing ───────────────────────────────────────────────────────

    def set_active_pricing(self, config: PricingConfigData, label: str | None = None) -> Call[str]:
        """Publish ``config`` as the next version (the active one); answers its id."""
        cfg = check_pricing_config(config)
        lab = "" if label is None else check_label(label, "label")
        args = PRICING_SET.args.pack(id=str(uuid.uuid4()), label=lab, pricing=cfg.model_dump_json(exclude_none=True),
                                     config=self.core.config())
        keys = PRICING_SET.keys.pack(active=self.core.keys.pricing_active(), versions=self.core.keys.pricing_versions(),
                                     ledger=self.core.keys.pricing_ledger())
        return Call(self.core.scripts["pricing_set"], keys, args,
                    lambda raw: _reply(raw, PRICING_SET.reply.size)[PRICING_SET.reply.pos.id])

    def read_pricing(self, version: int | None = None) -> Call[PricingConfigResult | None]:
        """The active pricing (``version`` None) or one version; None when there is none."""
        sel = "" if version is None else str(check_amount(version, "version", 1))

        def parse(raw: Any) -> PricingConfigResult | None:
            records = [g[PRICING_READ.reply.each_pos.record]
                       for g in PRICING_READ.reply.groups(_reply(raw, PRICING_READ.reply.size))]
            return _pricing_record(records[0]) if records else None

        return self._pricing_read(sel, parse)

    def pricing_history(self) -> Call[list[PricingHistoryItem]]:
        """Every published version, oldest first, the active one marked."""

        def parse(raw: Any) -> list[PricingHistoryItem]:
            r, f = _reply(raw, PRICING_READ.reply.size), PRICING_READ.reply
            items = []
            for rec in (json.loads(g[f.each_pos.record]) for g in f.groups(r)):
                items.append(PricingHistoryItem(
                    id=rec["id"], version=int(rec["version"]), label=rec.get("label") or None,
                    created_at=_iso(int(rec["ts"])), active=str(rec["version"]) == r[f.pos.active],
                ))
            return sorted(items, key=lambda i: i.version)

        return self._pricing_read("*", parse)

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
            r = _reply(raw, SET_PLAN.reply.size)
            return SetUserPlanResult(user_id=uid, plan_id=pid, previous_plan_id=r[SET_PLAN.reply.pos.previous] or None)

        frag = fragment(op="plan_set", acct=uid, meta=json.dumps(meta, separators=(",", ":")))
        args = SET_PLAN.args.pack(tx=new_id(), plan=pid, frag=frag, config=self.core.config())
        return Call(self.core.scripts["set_plan"], SET_PLAN.keys.pack(account=k.account, ledger=k.ledger), args, parse)

    def read_plan(self, user_id: str) -> Call[tuple[str, int, int, int]]:
        """(plan id or "", allowance used this month, month start ms, month end ms)."""
        uid = check_id(user_id, "user_id")
        k = self.core.keys.user(uid)

        def parse(raw: Any) -> tuple[str, int, int, int]:
            r, f = _reply(raw, PLAN_READ.reply.size), PLAN_READ.reply.pos
            return r[f.plan], int(r[f.used]), int(r[f.start]), int(r[f.end])

        return Call(self.core.scripts["plan_read"], PLAN_READ.keys.pack(account=k.account),
                    PLAN_READ.args.pack(config=self.core.config()), parse)

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
        args = PLAN_USAGE.args.pack(tx=new_id(), plan=pid, amount=str(n), frag=frag, config=self.core.config())
        return Call(self.core.scripts["plan_usage"], PLAN_USAGE.keys.pack(account=k.account, ledger=k.ledger), args,
                    lambda _r: None)

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

        The call is ``charge``'s (same validation, and debit.lua's KEYS, which plan_debit.lua shares)
        with the allowance table in place of the reservation id and quantities (lua/plan_debit.lua).
        """
        base = self.core.charge(user_id, amount, operation_type, idempotency_key, metadata, min_balance)
        if not isinstance(allowances, dict):
            raise InvalidInputError("allowances", f"must be a dict plan id -> credits, not {type(allowances).__name__}")
        table = {check_label(p, "allowances"): check_amount(a, "allowances", 0) for p, a in allowances.items()}
        cost = check_amount(amount, "amount", 1)  # charge checked it already: its plain int value

        shard = self.core.debit_keys(user_id).shard

        def parse(raw_reply: Any) -> UsageDeductionResult:
            r, f = _parts(raw_reply, PLAN_DEBIT.reply.size), _PLAN_DEBIT
            return construct(UsageDeductionResult,
                transaction_id=tx_of(shard, r[f.ref]), user_id=user_id, amount=-int(r[f.paid]),
                balance_after=int(r[f.balance]), idempotent=r[f.idempotent] == "1", error=_err(r[f.status]),
                cap_action=r[f.cap] or None, retry_after_ms=int(r[f.retry]) if r[f.retry] else 0,
                rate_limit_remaining=int(r[f.remaining]) if r[f.remaining] else None, cost=cost,
                allowance_used=int(r[f.free]), plan_id=r[f.plan] or None, allowance_remaining=int(r[f.left]),
            )

        a = base.args
        args = PLAN_DEBIT.args.pack(
            cid=a[_CHARGE.cid], amount=a[_CHARGE.amount], model=a[_CHARGE.model], floor=a[_CHARGE.floor],
            frag=a[_CHARGE.frag], allowances=json.dumps(table, separators=(",", ":")), config=a[_CHARGE.config])
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
