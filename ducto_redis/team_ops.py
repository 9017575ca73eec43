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
from .layout import PERIOD_NAMES, PERIODS, fragment
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
from .validation import check_amount, check_choice, check_id, check_label

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
    return Call(core.scripts["pool_read"], [k.account], ["1" if with_members else "0", core.config()],
                lambda r: table_reply(r, 7))


def member_spends(core: StoreCore, team_id: str) -> Call[list[TeamMemberSpend]]:
    """Every member with role, cap and spend (all time, today, this month, held)."""
    call = pool_read(core, team_id, True)
    inner = call.parse

    def parse(raw: Any) -> list[TeamMemberSpend]:
        r = inner(raw)
        out: list[TeamMemberSpend] = []
        for i in range(7, len(r), 8):
            out.append(construct(
                TeamMemberSpend, user_id=r[i], role=r[i + 1], spend_cap=int(r[i + 2]) if r[i + 2] else None,
                cap_period=PERIOD_NAMES[r[i + 3]], total_spent=int(r[i + 4]), spent_today=int(r[i + 5]),
                spent_this_month=int(r[i + 6]), held=int(r[i + 7]),
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
        r = split_reply(raw, 6)
        return construct(AddTeamMemberResult, team_id=team_id, user_id=uid, role=r[5] or "member",
                         error=error_code(r[0]))

    args = [new_id(), team_id, uid, action, role, cap, PERIODS[period] if period else "", core.config()]
    return Call(core.scripts["pool_member"], [k.account, k.ledger], args, parse)


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
        r = split_reply(raw_reply, 9)
        return construct(
            TeamDeductionResult, transaction_id=tx_of(shard, r[2]), team_id=team_id, user_id=uid,
            amount=-int(r[3]), team_balance_after=int(r[4]), error=error_code(r[0]), idempotent=r[1] == "1",
        )

    frag = fragment(op=op if not settling else "", ak=TEAM, acct=team_id, member=uid, rid=reservation_id,
                    model=model, idem=ikey or "", meta=metadata_json(meta))
    args = [new_call_id(), str(n), model, uid, frag, reservation_id, core.config()]
    return Call(core.scripts["pool_debit"], [k.account, k.idempotency(ikey), k.ledger, k.events], args, parse)


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
            r = split_reply(r_, 3)
            if r[0] != "ok":
                raise InvalidInputError("team_id", f"a team {tid!r} already exists")
            return construct(CreateTeamResult, team_id=tid, name=label)

        frag = fragment(op="team_created", ak=TEAM, acct=tid, type="team_created", idem=ikey or "",
                        meta=json.dumps({"name": label}))
        args = [new_id(), label, str(n), frag, core.config()]
        return Call(core.scripts["pool_create"], [k.account, k.idempotency(ikey), k.ledger], args, parse)

    @command
    def get_team_balance(self, team_id: str) -> Call[TeamBalanceResult]:
        """Pool balance, held, name and member count, in O(1); zeros for an unknown team, as ducto."""
        call = pool_read(self.core, team_id, False)
        inner = call.parse

        def parse(raw: Any) -> TeamBalanceResult:
            r = inner(raw)
            return construct(TeamBalanceResult, team_id=team_id, name=r[2], balance=int(r[3]), held=int(r[4]),
                             member_count=int(r[5]), error=error_code(r[0]))

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
            r = split_reply(raw, 6)
            if r[0] == E.TEAM_NOT_FOUND:
                return TeamBalanceResult(team_id=tid, error=E.TEAM_NOT_FOUND)
            if r[0] != "ok":
                raise InvalidInputError("amount", "would push the pool past 2**53-1; nothing was written")
            return construct(TeamBalanceResult, team_id=tid, balance=int(r[4]))

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
            r = split_reply(raw_reply, 7)
            return construct(
                ReserveResult, reservation_id=r[2], user_id=uid, amount=int(r[3]), balance=int(r[4]),
                reserved_total=int(r[5]), expires_at_ms=int(r[6]), error=error_code(r[0]), idempotent=r[1] == "1",
            )

        frag = fragment(op=op, ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "", meta=metadata_json(meta))
        args = [new_call_id(), rid, str(n), uid, str(ttl_ms), op, frag, core.config()]
        return Call(core.scripts["pool_reserve"], [k.account, k.idempotency(ikey), k.ledger], args, parse)

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
            r = split_reply(raw_reply, 6)
            return construct(
                ReleaseResult, reservation_id=rid, user_id=uid, amount=int(r[3]), balance=int(r[4]),
                held=int(r[5]), idempotent=r[1] == "1", error=error_code(r[0]),
            )

        frag = fragment(ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "")
        args = [new_call_id(), new_id(), rid, uid, frag, core.config()]
        return Call(core.scripts["pool_release"], [k.account, k.idempotency(ikey), k.ledger], args, parse)
