"""Team credit pools: the calls every store shell runs (validation, keys, ARGV, reply parsing).

Every team decision is one script over keys under the team's hash tag (``lua/pool_*.lua``): the
pool, members, member totals and windows, holds and caps. A member's personal balance lives
under another tag and is never touched by team spending; the only user key read for teams is
the existence check of ``add_team_member`` (user records are never deleted, so the check
cannot go stale between the read and the team script).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from . import errors as E
from .core import (
    Call,
    StoreCore,
    _err,
    _parts,
    _reply,
    construct,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_call_id,
    new_id,
    tx_of,
)
from .errors import InvalidInputError
from .keys import TEAM, AccountKeys
from .layout import PERIOD_NAMES, PERIODS, fragment
from .models import (
    AddTeamMemberResult,
    CreateTeamResult,
    CreditMetadata,
    ReleaseResult,
    ReserveResult,
    TeamBalanceResult,
    TeamDeductionResult,
    TeamMember,
    TeamMemberSpend,
)
from .specs import ADD_CREDITS, POOL_CREATE, POOL_DEBIT, POOL_MEMBER, POOL_READ, POOL_RELEASE, POOL_RESERVE
from .validation import check_amount, check_choice, check_id, check_label, check_ttl_seconds

CapPeriod = Literal["total", "daily", "monthly"]

_PD = POOL_DEBIT.reply.pos  # reply fields by name (ducto_redis/specs.py)
_PD_SIZE = POOL_DEBIT.reply.size


def check_period(period: object) -> str:
    """``total``, ``daily`` or ``monthly``, else :class:`InvalidInputError` naming ``cap_period``."""
    return check_choice(period, "cap_period", PERIODS)


def _check_cap(spend_cap: object, period: object) -> tuple[int | None, str]:
    cap = None if spend_cap is None else check_amount(spend_cap, "spend_cap", 0)
    return cap, check_period(period)


class TeamOps:
    """Builds the :class:`Call` of every team operation for one store core."""

    def __init__(self, core: StoreCore) -> None:
        self.core = core
        self.keys = core.keys
        self.scripts = core.scripts

    def _k(self, team_id: str) -> AccountKeys:
        return self.keys.team(check_id(team_id, "team_id"))

    # pools

    def create_team(
        self, name: str, initial_balance: int = 0, idempotency_key: str | None = None, team_id: str | None = None
    ) -> Call[CreateTeamResult]:
        """A new pool (a fresh uuid unless ``team_id`` is given) holding ``initial_balance``."""
        label = check_label(name, "name")
        n = check_amount(initial_balance, "initial_balance", 0)
        tid = check_id(team_id, "team_id") if team_id is not None else new_id()
        ikey = idempotency_of(idempotency_key, None)
        k = self.keys.team(tid)

        def parse(r_: Any) -> CreateTeamResult:
            r = _parts(r_, POOL_CREATE.reply.size)
            if r[POOL_CREATE.reply.pos.status] != "ok":
                raise InvalidInputError("team_id", f"a team {tid!r} already exists")
            return construct(CreateTeamResult, team_id=tid, name=label)

        frag = fragment(op="team_created", ak=TEAM, acct=tid, type="team_created", idem=ikey or "",
                        meta=json.dumps({"name": label}))
        args = POOL_CREATE.args.pack(tx=new_id(), name=label, balance=str(n), frag=frag, config=self.core.config())
        keys = POOL_CREATE.keys.pack(team=k.account, idem=self.core._idem(k, ikey), ledger=k.ledger)
        return Call(self.scripts["pool_create"], keys, args, parse)

    def read(self, team_id: str, with_members: bool) -> Call[list[str]]:
        """The raw pool_read reply (see lua/pool_read.lua)."""
        k = self._k(team_id)
        args = POOL_READ.args.pack(members="1" if with_members else "0", config=self.core.config())
        return Call(self.scripts["pool_read"], POOL_READ.keys.pack(team=k.account), args,
                    lambda r: _reply(r, POOL_READ.reply.size))

    def get_team_balance(self, team_id: str) -> Call[TeamBalanceResult]:
        """Balance, held, name and member count (O(1)); zeros for an unknown team, as ducto."""
        call = self.read(team_id, False)
        inner = call.parse

        def parse(raw: Any) -> TeamBalanceResult:
            r, f = inner(raw), POOL_READ.reply.pos
            return construct(TeamBalanceResult, team_id=team_id, name=r[f.name], balance=int(r[f.balance]),
                             held=int(r[f.held]), member_count=int(r[f.count]), error=_err(r[f.status]))

        return Call(call.script, call.keys, call.args, parse)

    def members(self, team_id: str) -> Call[list[TeamMemberSpend]]:
        """Every member with role, cap and spend (all time, today, this month, held)."""
        call = self.read(team_id, True)
        inner = call.parse

        def parse(raw: Any) -> list[TeamMemberSpend]:
            f = POOL_READ.reply.each_pos
            out: list[TeamMemberSpend] = []
            for m in POOL_READ.reply.groups(inner(raw)):
                out.append(construct(
                    TeamMemberSpend, user_id=m[f.id], role=m[f.role], spend_cap=int(m[f.cap]) if m[f.cap] else None,
                    cap_period=PERIOD_NAMES[m[f.period]], total_spent=int(m[f.total]), spent_today=int(m[f.today]),
                    spent_this_month=int(m[f.month]), held=int(m[f.held]),
                ))
            out.sort(key=lambda m: m.user_id)
            return out

        return Call(call.script, call.keys, call.args, parse)

    def get_team_members(self, team_id: str) -> Call[list[TeamMember]]:
        """ducto's member list: role, spend_cap, total_spent (plus cap_period, period_spent)."""
        call = self.members(team_id)
        inner = call.parse

        def parse(raw: Any) -> list[TeamMember]:
            return [
                construct(
                    TeamMember, user_id=m.user_id, role=m.role, spend_cap=m.spend_cap, total_spent=m.total_spent,
                    cap_period=m.cap_period,
                    period_spent={"daily": m.spent_today, "monthly": m.spent_this_month}.get(
                        m.cap_period, m.total_spent),
                )
                for m in inner(raw)
            ]

        return Call(call.script, call.keys, call.args, parse)

    def top_up(
        self, team_id: str, amount: int, type: str = "purchase",
        metadata: CreditMetadata | dict[str, Any] | None = None, idempotency_key: str | None = None,
    ) -> Call[TeamBalanceResult]:
        """Credit the pool (typed, idempotent); ``team_not_found`` for an unknown team."""
        tid = check_id(team_id, "team_id")
        call = self.core.add_credits(tid, amount, type, metadata, None, idempotency_key, account_kind=TEAM)

        def parse(raw: Any) -> TeamBalanceResult:
            r, f = _parts(raw, ADD_CREDITS.reply.size), ADD_CREDITS.reply.pos
            if r[f.status] == E.TEAM_NOT_FOUND:
                return TeamBalanceResult(team_id=tid, error=E.TEAM_NOT_FOUND)
            if r[f.status] != "ok":
                raise InvalidInputError("amount", "would push the pool past 2**53-1; nothing was written")
            return construct(TeamBalanceResult, team_id=tid, balance=int(r[f.balance]))

        return Call(call.script, call.keys, call.args, parse)

    # membership

    def member(self, team_id: str, user_id: str, action: str, fields: dict[str, Any]) -> Call[AddTeamMemberResult]:
        """Add / update / remove a member (pool_member.lua)."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")

        def parse(raw: Any) -> AddTeamMemberResult:
            r, f = _parts(raw, POOL_MEMBER.reply.size), POOL_MEMBER.reply.pos
            return construct(AddTeamMemberResult, team_id=team_id, user_id=uid, role=r[f.role] or "member",
                             error=_err(r[f.status]))

        period = fields.get("period")
        args = POOL_MEMBER.args.pack(tx=new_id(), tid=team_id, member=uid, action=action, role=fields.get("role", ""),
                                     cap=fields.get("cap", ""), period=PERIODS[period] if period else "",
                                     config=self.core.config())
        return Call(self.scripts["pool_member"], POOL_MEMBER.keys.pack(team=k.account, ledger=k.ledger), args, parse)

    def add_member_fields(
        self, role: str, spend_cap: int | None, cap_period: str
    ) -> dict[str, Any]:
        """The validated fields of a new member."""
        cap, period = _check_cap(spend_cap, cap_period)
        return {"role": check_label(role, "role"), "cap": "-1" if cap is None else str(cap), "period": period}

    # spending

    def deduct_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        reservation_id: str = "",
        operation_type: str = "team_usage",
    ) -> Call[TeamDeductionResult]:
        """Spend from the pool for a member (or settle ``reservation_id``), all checks in one script."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")
        settling = reservation_id != ""
        if settling:
            check_id(reservation_id, "reservation_id")
        n = check_amount(amount, "amount", 0 if settling else 1)
        op = check_label(operation_type, "operation_type", allow_empty=settling)
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        model = check_label(meta.model, "metadata.model") if meta and meta.model else ""
        shard = k.shard

        def parse(raw_reply: Any) -> TeamDeductionResult:
            r = _parts(raw_reply, _PD_SIZE)
            return construct(
                TeamDeductionResult, transaction_id=tx_of(shard, r[_PD.ref]), team_id=team_id, user_id=uid,
                amount=-int(r[_PD.amount]), team_balance_after=int(r[_PD.balance]), error=_err(r[_PD.status]),
                idempotent=r[_PD.idempotent] == "1",
            )

        frag = fragment(op=op if not settling else "", ak=TEAM, acct=team_id, member=uid, rid=reservation_id,
                        model=model, idem=ikey or "", meta=metadata_json(meta))
        args = POOL_DEBIT.args.pack(cid=new_call_id(), amount=str(n), model=model, member=uid, frag=frag,
                                    rid=reservation_id, config=self.core.config())
        keys = POOL_DEBIT.keys.pack(team=k.account, idem=self.core._idem(k, ikey), ledger=k.ledger, events=k.events)
        return Call(self.scripts["pool_debit"], keys, args, parse)

    def reserve_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        operation_type: str = "team_job",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
    ) -> Call[ReserveResult]:
        """Hold pool credits for a member's long job; counts toward the member's cap until resolved."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")
        n = check_amount(amount, "amount", 1)
        op = check_label(operation_type, "operation_type")
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        ttl_ms = self.core._hold_ttl_ms if ttl_seconds is None else check_ttl_seconds(ttl_seconds) * 1000
        rid = new_id()

        def parse(raw_reply: Any) -> ReserveResult:
            r, f = _parts(raw_reply, POOL_RESERVE.reply.size), POOL_RESERVE.reply.pos
            return construct(
                ReserveResult, reservation_id=r[f.rid], user_id=uid, amount=int(r[f.amount]),
                balance=int(r[f.balance]), reserved_total=int(r[f.held]), expires_at_ms=int(r[f.expires]),
                error=_err(r[f.status]), idempotent=r[f.idempotent] == "1",
            )

        frag = fragment(op=op, ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "", meta=metadata_json(meta))
        args = POOL_RESERVE.args.pack(cid=new_call_id(), rid=rid, amount=str(n), member=uid, ttl=str(ttl_ms), op=op,
                                      frag=frag, config=self.core.config())
        keys = POOL_RESERVE.keys.pack(team=k.account, idem=self.core._idem(k, ikey), ledger=k.ledger)
        return Call(self.scripts["pool_reserve"], keys, args, parse)

    def release_team(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a member's team hold back to the pool."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = idempotency_of(idempotency_key, None)

        def parse(raw_reply: Any) -> ReleaseResult:
            r, f = _parts(raw_reply, POOL_RELEASE.reply.size), POOL_RELEASE.reply.pos
            return construct(
                ReleaseResult, reservation_id=rid, user_id=uid, amount=int(r[f.amount]), balance=int(r[f.balance]),
                held=int(r[f.held]), idempotent=r[f.idempotent] == "1", error=_err(r[f.status]),
            )

        frag = fragment(ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "")
        args = POOL_RELEASE.args.pack(cid=new_call_id(), tx=new_id(), rid=rid, member=uid, frag=frag,
                                      config=self.core.config())
        keys = POOL_RELEASE.keys.pack(team=k.account, idem=self.core._idem(k, ikey), ledger=k.ledger)
        return Call(self.scripts["pool_release"], keys, args, parse)
