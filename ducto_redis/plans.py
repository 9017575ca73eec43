"""Plans with free monthly allowances, and the pricing configuration stored in Redis (versioned).

The store methods of plans and stored pricing, each written once (see ``methods.py``), as
:mod:`team_ops` has those of teams.

* A user's plan id lives in the user's account hash (``plan``) and the allowance used this month
  in ``{ns:N}:u:<id>:pw`` (field ``p|<plan id>``, UTC calendar month): both under the user's hash
  tag, so ``plan_debit.lua`` consumes the allowance in the same script as the paid debit.
* Plan definitions (name, ``free_allowance``) come from the pricing config's ``plans``: the store
  methods read the active config first (a flow of two steps); :meth:`charge_with_allowance` takes
  the allowances explicitly (the manager passes its engine's) or reads the active config.
* Pricing versions live under their own hash tag ``{ns:pricing}``; every version stays readable.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import ValidationError

from .core import (
    Call,
    StoreCore,
    construct,
    error_code,
    new_id,
    ready,
    split_reply,
    table_reply,
    tx_of,
)
from .errors import ConfigError, InvalidInputError
from .layout import fragment
from .methods import Flow, StoreBase, command, flow, one
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
_CHARGE = DEBIT.args.pos  # a charge's ARGV, which charge_with_allowance takes its own from


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


def read_pricing(core: StoreCore, version: int | None = None) -> Call[PricingConfigResult | None]:
    """The active pricing (``version`` None) or one version; None when there is none."""
    sel = "" if version is None else str(check_amount(version, "version", 1))

    def parse(raw: Any) -> PricingConfigResult | None:
        records = [g[PRICING_READ.reply.each_pos.record]
                   for g in PRICING_READ.reply.groups(table_reply(raw, PRICING_READ.reply.size))]
        return _pricing_record(records[0]) if records else None

    return _pricing_read(core, sel, parse)


def _pricing_read(core: StoreCore, which: str, parse: Callable[[Any], T]) -> Call[T]:
    k = core.keys
    keys = PRICING_READ.keys.pack(active=k.pricing_active(), versions=k.pricing_versions())
    return Call(core.scripts["pricing_read"], keys, PRICING_READ.args.pack(which=which), parse)


def active_plans(core: StoreCore) -> Flow[dict[str, PlanDefinition] | None]:
    """A step of a flow: the active pricing config's plans (None without pricing or plans)."""
    active = yield from one(read_pricing(core))
    return active.config.plans if active else None


def read_plan(core: StoreCore, user_id: str) -> Call[tuple[str, int, int, int]]:
    """(plan id or "", allowance used this month, month start ms, month end ms)."""
    uid = check_id(user_id, "user_id")
    k = core.keys.user(uid)

    def parse(raw: Any) -> tuple[str, int, int, int]:
        r, f = table_reply(raw, PLAN_READ.reply.size), PLAN_READ.reply.pos
        return r[f.plan], int(r[f.used]), int(r[f.start]), int(r[f.end])

    return Call(core.scripts["plan_read"], PLAN_READ.keys.pack(account=k.account),
                PLAN_READ.args.pack(config=core.config()), parse)


def user_plan(user_id: str, plan_id: str, plans: dict[str, PlanDefinition] | None) -> GetUserPlanResult:
    """ducto's ``GetUserPlanResult`` from a stored plan id and the known plan definitions."""
    if not plan_id:
        return GetUserPlanResult(user_id=user_id)
    plan = find_plan(plans, plan_id)
    return GetUserPlanResult(
        user_id=user_id, plan_id=plan_id, plan_name=plan.name if plan else None,
        free_allowance=plan.free_allowance if plan else 0,
    )


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


def plan_charge(
    core: StoreCore, user_id: str, amount: int, operation_type: str, allowances: object,
    idempotency_key: str | None, metadata: CreditMetadata | dict[str, Any] | None, min_balance: int,
) -> Call[UsageDeductionResult]:
    """Charge ``amount`` with the user's plan allowance first, then caps and balance: one script.

    The call is ``charge``'s (same validation, and debit.lua's KEYS, which plan_debit.lua shares)
    with the allowance table in place of the reservation id and quantities (lua/plan_debit.lua).
    """
    base = core.debit_call(core.debit_input(
        user_id, amount, operation_type=operation_type, idempotency_key=idempotency_key, metadata=metadata,
        min_balance=min_balance))
    if not isinstance(allowances, dict):
        raise InvalidInputError("allowances", f"must be a dict plan id -> credits, not {type(allowances).__name__}")
    table = {check_label(p, "allowances"): check_amount(a, "allowances", 0) for p, a in allowances.items()}
    cost = check_amount(amount, "amount", 1)  # charge checked it already: its plain int value

    shard = core.debit_keys(user_id).shard

    def parse(raw_reply: Any) -> UsageDeductionResult:
        r, f = split_reply(raw_reply, PLAN_DEBIT.reply.size, _PLAN_DEBIT.limit), _PLAN_DEBIT
        return construct(UsageDeductionResult,
            transaction_id=tx_of(shard, r[f.ref]), user_id=user_id, amount=-int(r[f.paid]),
            balance_after=int(r[f.balance]), idempotent=r[f.idempotent] == "1", error=error_code(r[f.status]),
            cap_action=r[f.cap] or None, retry_after_ms=int(r[f.retry]) if r[f.retry] else 0,
            rate_limit_remaining=int(r[f.remaining]) if r[f.remaining] else None,
            rate_limit_limit=int(r[f.limit]) if r[f.limit] else None, cost=cost,
            allowance_used=int(r[f.free]), plan_id=r[f.plan] or None, allowance_remaining=int(r[f.left]),
        )

    a = DEBIT.args.full(base.args)  # the charge's optional ARGV, sent or not
    args = PLAN_DEBIT.args.pack(
        cid=a[_CHARGE.cid], amount=a[_CHARGE.amount], model=a[_CHARGE.model], floor=a[_CHARGE.floor],
        frag=a[_CHARGE.frag], allowances=json.dumps(table, separators=(",", ":")), config=a[_CHARGE.config])
    # plan_debit.lua takes every KEY (the charge's may be lean), the idempotency key only if one is given
    k = core.keys.user(user_id)
    idem = DEBIT.keys.full(base.keys)[DEBIT.keys.pos.idem]
    keys = PLAN_DEBIT.keys.pack(account=k.account, grants=k.grants, ledger=k.ledger, events=k.events,
                                idem="" if idem == k.idempotency(None) else idem)
    return Call(core.scripts["plan_debit"], keys, args, parse)


class PlanOps(StoreBase):
    """The store methods of stored pricing, plans and their free allowances."""

    # ── pricing ───────────────────────────────────────────────────────

    @command
    def set_active_pricing(self, config: PricingConfigData, label: str | None = None) -> Call[str]:
        """Publish a pricing config as the next version (now active); returns its id.

        Every formula is checked first (``PricingConfigError``, a ``ConfigError`` and a
        ``ValueError``, nothing written). Publishing the active config again changes nothing.
        """
        core = self.core
        cfg = check_pricing_config(config)
        lab = "" if label is None else check_label(label, "label")
        args = PRICING_SET.args.pack(id=str(uuid.uuid4()), label=lab, pricing=cfg.model_dump_json(exclude_none=True),
                                     config=core.config())
        keys = PRICING_SET.keys.pack(active=core.keys.pricing_active(), versions=core.keys.pricing_versions(),
                                     ledger=core.keys.pricing_ledger())
        return Call(core.scripts["pricing_set"], keys, args,
                    lambda raw: table_reply(raw, PRICING_SET.reply.size)[PRICING_SET.reply.pos.id])

    @command
    def get_active_pricing(self) -> Call[PricingConfigResult | None]:
        """The active pricing config with its id and version (1, 2, ...), or None before any."""
        return read_pricing(self.core)

    @command
    def get_pricing_config(self, version: int) -> Call[PricingConfigResult | None]:
        """A published version (active or not), or None."""
        return read_pricing(self.core, version)

    @command
    def get_pricing_history(self) -> Call[list[PricingHistoryItem]]:
        """Every published version (id, version, label, created_at, active), oldest first."""

        def parse(raw: Any) -> list[PricingHistoryItem]:
            r, f = table_reply(raw, PRICING_READ.reply.size), PRICING_READ.reply
            items = []
            for rec in (json.loads(g[f.each_pos.record]) for g in f.groups(r)):
                items.append(PricingHistoryItem(
                    id=rec["id"], version=int(rec["version"]), label=rec.get("label") or None,
                    created_at=_iso(int(rec["ts"])), active=str(rec["version"]) == r[f.pos.active],
                ))
            return sorted(items, key=lambda i: i.version)

        return _pricing_read(self.core, "*", parse)

    # ── plans ─────────────────────────────────────────────────────────

    @flow
    def set_user_plan(self, user_id: str, plan_id: str) -> Flow[SetUserPlanResult]:
        """Put a user on a plan (a ledger ``config`` entry); the result names the previous plan.

        A plan unknown to the active pricing config is refused (``InvalidInputError`` on
        ``plan_id``, nothing written) when that config defines plans."""
        core = self.core
        uid = check_id(user_id, "user_id")
        pid = check_label(plan_id, "plan_id")
        plans = yield from active_plans(core)
        plan = find_plan(plans, pid)
        if plans and plan is None:
            raise InvalidInputError("plan_id", f"unknown plan {plan_id!r} (plans: {', '.join(sorted(plans))})")
        k = core.keys.user(uid)
        meta: dict[str, Any] = {"plan_id": pid}
        if plan is not None:
            meta.update(plan_name=plan.name, free_allowance=plan.free_allowance)

        def parse(raw: Any) -> SetUserPlanResult:
            r = table_reply(raw, SET_PLAN.reply.size)
            return SetUserPlanResult(user_id=uid, plan_id=pid, previous_plan_id=r[SET_PLAN.reply.pos.previous] or None)

        frag = fragment(op="plan_set", acct=uid, meta=json.dumps(meta, separators=(",", ":")))
        args = SET_PLAN.args.pack(tx=new_id(), plan=pid, frag=frag, config=core.config())
        keys = SET_PLAN.keys.pack(account=k.account, ledger=k.ledger)
        return (yield from one(Call(core.scripts["set_plan"], keys, args, parse)))

    @flow
    def get_user_plan(self, user_id: str) -> Flow[GetUserPlanResult]:
        """The user's plan id, name and free allowance (from the active pricing config)."""
        read = yield from one(read_plan(self.core, user_id))
        return user_plan(user_id, read[0], (yield from active_plans(self.core)) if read[0] else None)

    @flow
    def check_allowance(self, user_id: str) -> Flow[AllowanceResult]:
        """What is left of the plan's free allowance this UTC month (``plan_id`` "" without a plan)."""
        read = yield from one(read_plan(self.core, user_id))
        return allowance(read, (yield from active_plans(self.core)) if read[0] else None)

    @command
    def increment_usage_window(self, user_id: str, plan_id: str, amount: int) -> Call[None]:
        """Count ``amount`` of the plan's allowance as used this month (0 writes nothing)."""
        core = self.core
        uid = check_id(user_id, "user_id")
        pid = check_label(plan_id, "plan_id")
        n = check_amount(amount, "amount", 0)
        if n == 0:
            return ready(None)
        k = core.keys.user(uid)
        frag = fragment(op="allowance_used", acct=uid)
        args = PLAN_USAGE.args.pack(tx=new_id(), plan=pid, amount=str(n), frag=frag, config=core.config())
        return Call(core.scripts["plan_usage"], PLAN_USAGE.keys.pack(account=k.account, ledger=k.ledger), args,
                    lambda _r: None)

    @flow
    def charge_with_allowance(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        allowances: dict[str, int] | None = None,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
    ) -> Flow[UsageDeductionResult]:
        """Charge ``amount``: the plan's free allowance first, then spend caps, then the balance — one
        script, so the allowance is never spent twice. ``allowances`` (plan id -> monthly allowance)
        defaults to the active pricing config's plans."""
        core = self.core
        table = allowance_table((yield from active_plans(core))) if allowances is None else allowances
        return (yield from one(plan_charge(
            core, user_id, amount, operation_type, table, idempotency_key, metadata, min_balance)))
