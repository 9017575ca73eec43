"""Team credit pools: the store methods of teams, each written once (see ``methods.py``).

Every team decision is one script over keys under the team's hash tag (``lua/pool_*.lua``): the
pool, members, member totals and windows, holds and caps. A member's personal balance lives
under another tag and is never touched by team spending; any user id can be a member (as in
ducto: the pool pays), so no user key is read for teams.
"""

from __future__ import annotations

import json
from typing import Any

from . import errors as E
from .core import (
    Call,
    StoreCore,
    construct,
    error_code,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_call_id,
    new_id,
    split_reply,
    table_reply,
    tx_of,
)
from .errors import InvalidInputError
from .keys import TEAM
from .layout import MEMBER_PREFIX, PERIOD_NAMES, PERIODS, fragment
from .methods import StoreBase, command
from .models import (
    AddTeamMemberResult,
    CreateTeamResult,
    CreditMetadata,
    ReleaseResult,
    ReserveResult,
    SpendCap,
    TeamBalanceResult,
    TeamDeductionResult,
    TeamMember,
    TeamMemberSpend,
)
from .specs import ADD_CREDITS, POOL_CREATE, POOL_DEBIT, POOL_MEMBER, POOL_READ, POOL_RELEASE, POOL_RESERVE
from .validation import check_amount, check_choice, check_id, check_label

_PD = POOL_DEBIT.reply.pos  # reply fields by name (ducto_redis/specs.py)
_PD_SIZE = POOL_DEBIT.reply.size

NO_MEMBER_CAP = "-1"
"""pool_member.lua's cap argument for "no cap" ("" leaves the cap as it is)."""


def check_period(period: object) -> str:
    """``total``, ``daily`` or ``monthly``, else :class:`InvalidInputError` naming ``cap_period``."""
    return check_choice(period, "cap_period", PERIODS)


def member_cap(spend_cap: object) -> str:
    """A member's cap as pool_member.lua takes it: the validated amount, or (None) no cap."""
    return NO_MEMBER_CAP if spend_cap is None else str(check_amount(spend_cap, "spend_cap", 0))


# ── call builders several methods share ───────────────────────────────


def pool_read(core: StoreCore, team_id: str, with_members: bool) -> Call[list[str]]:
    """The raw pool_read reply (see lua/pool_read.lua)."""
    k = core.keys.team(check_id(team_id, "team_id"))
    args = POOL_READ.args.pack(members="1" if with_members else "0", config=core.config())
    return Call(core.scripts["pool_read"], POOL_READ.keys.pack(team=k.account), args,
                lambda r: table_reply(r, POOL_READ.reply.size))


def member_spends(core: StoreCore, team_id: str) -> Call[list[TeamMemberSpend]]:
    """Every member with role, cap and spend (all time, today, this month, held)."""
    call = pool_read(core, team_id, True)
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


def member(
    core: StoreCore, team_id: str, user_id: str, action: str, role: str = "", cap: str = "", period: str = ""
) -> Call[AddTeamMemberResult]:
    """Add / update / remove a member (pool_member.lua); ``role``, ``cap``, ``period`` validated
    already ("" leaves the member's as it is)."""
    k = core.keys.team(check_id(team_id, "team_id"))
    uid = check_id(user_id, "user_id")

    def parse(raw: Any) -> AddTeamMemberResult:
        r, f = split_reply(raw, POOL_MEMBER.reply.size), POOL_MEMBER.reply.pos
        return construct(AddTeamMemberResult, team_id=team_id, user_id=uid, role=r[f.role] or "member",
                         error=error_code(r[f.status]))

    args = POOL_MEMBER.args.pack(tx=new_id(), tid=team_id, member=uid, action=action, role=role, cap=cap,
                                 period=PERIODS[period] if period else "", config=core.config())
    return Call(core.scripts["pool_member"], POOL_MEMBER.keys.pack(team=k.account, ledger=k.ledger), args, parse)


def team_debit(
    core: StoreCore,
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
    k = core.keys.team(check_id(team_id, "team_id"))
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
        r = split_reply(raw_reply, _PD_SIZE, _PD.limit)
        return construct(
            TeamDeductionResult, transaction_id=tx_of(shard, r[_PD.ref]), team_id=team_id, user_id=uid,
            amount=-int(r[_PD.amount]), team_balance_after=int(r[_PD.balance]), error=error_code(r[_PD.status]),
            idempotent=r[_PD.idempotent] == "1",
        )

    frag = fragment(op=op if not settling else "", ak=TEAM, acct=team_id, member=uid, rid=reservation_id,
                    model=model, idem=ikey or "", meta=metadata_json(meta))
    args = POOL_DEBIT.args.pack(cid=new_call_id(), amount=str(n), model=model, member=MEMBER_PREFIX + uid, frag=frag,
                                rid=reservation_id, config=core.config())
    widen = None
    if ikey is not None or k.account in core.wide:  # every KEY: the idempotency key, or widened before
        keys = POOL_DEBIT.keys.pack(team=k.account, ledger=k.ledger, events=k.events, idem=k.idempotency(ikey))
    else:  # lean: team ledger (widened if its decision needs more)
        keys, widen = POOL_DEBIT.keys.pack(team=k.account, ledger=k.ledger, events="", idem=""), core.widen_team_debit
    return Call(core.scripts["pool_debit"], keys, args, parse, widen)


class TeamOps(StoreBase):
    """The store methods of team pools."""

    # ── pools ─────────────────────────────────────────────────────────

    @command
    def create_team(
        self, name: str, initial_balance: int = 0, idempotency_key: str | None = None
    ) -> Call[CreateTeamResult]:
        """Create a team pool holding ``initial_balance`` credits (a fresh uuid id)."""
        core = self.core
        label = check_label(name, "name")
        n = check_amount(initial_balance, "initial_balance", 0)
        tid = new_id()
        ikey = idempotency_of(idempotency_key, None)
        k = core.keys.team(tid)

        def parse(r_: Any) -> CreateTeamResult:
            r = split_reply(r_, POOL_CREATE.reply.size)
            if r[POOL_CREATE.reply.pos.status] != "ok":
                raise InvalidInputError("team_id", f"a team {tid!r} already exists")
            return construct(CreateTeamResult, team_id=tid, name=label)

        frag = fragment(op="team_created", ak=TEAM, acct=tid, type="team_created", idem=ikey or "",
                        meta=json.dumps({"name": label}))
        args = POOL_CREATE.args.pack(tx=new_id(), name=label, balance=str(n), frag=frag, config=core.config())
        keys = POOL_CREATE.keys.pack(team=k.account, idem=k.idempotency(ikey), ledger=k.ledger)
        return Call(core.scripts["pool_create"], keys, args, parse)

    @command
    def get_team_balance(self, team_id: str) -> Call[TeamBalanceResult]:
        """Pool balance, held, name and member count, in O(1); zeros for an unknown team, as ducto."""
        call = pool_read(self.core, team_id, False)
        inner = call.parse

        def parse(raw: Any) -> TeamBalanceResult:
            r, f = inner(raw), POOL_READ.reply.pos
            return construct(TeamBalanceResult, team_id=team_id, name=r[f.name], balance=int(r[f.balance]),
                             held=int(r[f.held]), member_count=int(r[f.count]), error=error_code(r[f.status]))

        return Call(call.script, call.keys, call.args, parse)

    @command
    def top_up_team(
        self,
        team_id: str,
        amount: int,
        type: str = "purchase",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[TeamBalanceResult]:
        """Credit a team pool (typed, idempotent); ``error='team_not_found'`` if unknown."""
        tid = check_id(team_id, "team_id")
        call = self.core.credit(TEAM, tid, amount, type, metadata, None, idempotency_key)

        def parse(raw: Any) -> TeamBalanceResult:
            r, f = split_reply(raw, ADD_CREDITS.reply.size), ADD_CREDITS.reply.pos
            if r[f.status] == E.TEAM_NOT_FOUND:
                return TeamBalanceResult(team_id=tid, error=E.TEAM_NOT_FOUND)
            if r[f.status] != "ok":
                raise InvalidInputError("amount", "would push the pool past 2**53-1; nothing was written")
            return construct(TeamBalanceResult, team_id=tid, balance=int(r[f.balance]))

        return Call(call.script, call.keys, call.args, parse)

    @command
    def set_team_spend_cap(
        self, team_id: str, cap_type: str = "daily", limit: int = 0, action: str = "deny", model: str | None = None
    ) -> Call[None]:
        """A team-level daily or monthly cap (deny / warn / notify), like a user's."""
        tid = check_id(team_id, "team_id")
        cap = SpendCap(user_id=tid, cap_type=cap_type, limit=limit, action=action, model=model)
        return self.core.spend_cap(cap, TEAM)

    # ── membership ────────────────────────────────────────────────────

    @command
    def add_team_member(
        self,
        team_id: str,
        user_id: str,
        role: str = "member",
        spend_cap: int | None = None,
        cap_period: str = "total",
    ) -> Call[AddTeamMemberResult]:
        """Add (or update) a member: any user id, as in ducto (a team member needs no personal
        balance: the pool pays); ``team_not_found`` for an unknown team."""
        cap, period = member_cap(spend_cap), check_period(cap_period)
        return member(self.core, team_id, user_id, "add", check_label(role, "role"), cap, period)

    @command
    def set_member_cap(
        self, team_id: str, user_id: str, spend_cap: int | None, cap_period: str | None = None
    ) -> Call[AddTeamMemberResult]:
        """Change or (``None``) remove one member's cap, over ``total``/``daily``/``monthly``."""
        cap = member_cap(spend_cap)
        return member(self.core, team_id, user_id, "update", cap=cap,
                      period="" if cap_period is None else check_period(cap_period))

    @command
    def set_member_role(self, team_id: str, user_id: str, role: str) -> Call[AddTeamMemberResult]:
        """Change a member's role."""
        return member(self.core, team_id, user_id, "update", role=check_label(role, "role"))

    @command
    def remove_team_member(self, team_id: str, user_id: str) -> Call[AddTeamMemberResult]:
        """Remove a member; their spend history stays in the report and the ledger."""
        return member(self.core, team_id, user_id, "remove")

    @command
    def get_team_members(self, team_id: str) -> Call[list[TeamMember]]:
        """Members with role, spend_cap and total_spent (ducto's list; plus cap_period, period_spent)."""
        call = member_spends(self.core, team_id)
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

    @command
    def team_spend_report(self, team_id: str) -> Call[list[TeamMemberSpend]]:
        """Who spent what: per member all time, today, this month, and held."""
        return member_spends(self.core, team_id)

    # ── spending ──────────────────────────────────────────────────────

    @command
    def deduct_team(
        self,
        team_id: str,
        user_id: str,
        amount: int,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[TeamDeductionResult]:
        """Spend from the pool for a member: membership, member cap, team caps, pool, one script."""
        return team_debit(self.core, team_id, user_id, amount, metadata, idempotency_key)

    @command
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
        """Hold pool credits for a member's long job (counts toward their cap until resolved; expires)."""
        core = self.core
        k = core.keys.team(check_id(team_id, "team_id"))
        uid = check_id(user_id, "user_id")
        n = check_amount(amount, "amount", 1)
        op = check_label(operation_type, "operation_type")
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        ttl_ms = core.hold_ttl_ms(ttl_seconds)
        rid = new_id()

        def parse(raw_reply: Any) -> ReserveResult:
            r, f = split_reply(raw_reply, POOL_RESERVE.reply.size), POOL_RESERVE.reply.pos
            return construct(
                ReserveResult, reservation_id=r[f.rid], user_id=uid, amount=int(r[f.amount]),
                balance=int(r[f.balance]), reserved_total=int(r[f.held]), expires_at_ms=int(r[f.expires]),
                error=error_code(r[f.status]), idempotent=r[f.idempotent] == "1",
            )

        frag = fragment(op=op, ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "", meta=metadata_json(meta))
        args = POOL_RESERVE.args.pack(cid=new_call_id(), rid=rid, amount=str(n), member=uid, ttl=str(ttl_ms), op=op,
                                      frag=frag, config=core.config())
        keys = POOL_RESERVE.keys.pack(team=k.account, idem=k.idempotency(ikey), ledger=k.ledger)
        return Call(core.scripts["pool_reserve"], keys, args, parse)

    @command
    def settle_team_reservation(
        self,
        team_id: str,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
    ) -> Call[TeamDeductionResult]:
        """Spend the actual amount of a team hold; the rest returns to the pool."""
        return team_debit(self.core, team_id, user_id, amount, metadata, idempotency_key,
                          reservation_id=check_id(reservation_id, "reservation_id"))

    @command
    def release_team_reservation(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a team hold back to the pool untouched."""
        core = self.core
        k = core.keys.team(check_id(team_id, "team_id"))
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = idempotency_of(idempotency_key, None)

        def parse(raw_reply: Any) -> ReleaseResult:
            r, f = split_reply(raw_reply, POOL_RELEASE.reply.size), POOL_RELEASE.reply.pos
            return construct(
                ReleaseResult, reservation_id=rid, user_id=uid, amount=int(r[f.amount]), balance=int(r[f.balance]),
                held=int(r[f.held]), idempotent=r[f.idempotent] == "1", error=error_code(r[f.status]),
            )

        frag = fragment(ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "")
        args = POOL_RELEASE.args.pack(cid=new_call_id(), tx=new_id(), rid=rid, member=uid, frag=frag,
                                      config=core.config())
        keys = POOL_RELEASE.keys.pack(team=k.account, idem=k.idempotency(ikey), ledger=k.ledger)
        return Call(core.scripts["pool_release"], keys, args, parse)
