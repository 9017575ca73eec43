"""Team credit pools: the calls every store shell runs (validation, keys, ARGV, reply parsing).

Every team decision is one script over keys under the team's hash tag (``lua/pool_*.lua``): the
pool, members, member totals and windows, holds and caps. A member's personal balance lives
under another tag and is never touched by team spending; the only user key read for teams is
the existence check of ``add_team_member`` (user records are never deleted, so the check
cannot go stale between the read and the team script).
"""

from __future__ import annotations

import json
from typing import Any

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
from .validation import check_amount, check_choice, check_id, check_label, check_ttl_seconds


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
            r = _parts(r_, 3)
            if r[0] != "ok":
                raise InvalidInputError("team_id", f"a team {tid!r} already exists")
            return construct(CreateTeamResult, team_id=tid, name=label)

        frag = fragment(op="team_created", ak=TEAM, acct=tid, type="team_created", idem=ikey or "",
                        meta=json.dumps({"name": label}))
        args = [new_id(), label, str(n), frag, self.core.config()]
        return Call(self.scripts["pool_create"], [k.account, self.core._idem(k, ikey), k.ledger], args, parse)

    def read(self, team_id: str, with_members: bool) -> Call[list[str]]:
        """The raw pool_read reply (see lua/pool_read.lua)."""
        k = self._k(team_id)
        return Call(self.scripts["pool_read"], [k.account], ["1" if with_members else "0", self.core.config()],
                    lambda r: _reply(r, 7))

    def get_team_balance(self, team_id: str) -> Call[TeamBalanceResult]:
        """Balance, held, name and member count (O(1)); zeros for an unknown team, as ducto."""
        call = self.read(team_id, False)
        inner = call.parse

        def parse(raw: Any) -> TeamBalanceResult:
            r = inner(raw)
            return construct(TeamBalanceResult, team_id=team_id, name=r[2], balance=int(r[3]), held=int(r[4]),
                             member_count=int(r[5]), error=_err(r[0]))

        return Call(call.script, call.keys, call.args, parse)

    def members(self, team_id: str) -> Call[list[TeamMemberSpend]]:
        """Every member with role, cap and spend (all time, today, this month, held)."""
        call = self.read(team_id, True)
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
            r = _parts(raw, 6)
            if r[0] == E.TEAM_NOT_FOUND:
                return TeamBalanceResult(team_id=tid, error=E.TEAM_NOT_FOUND)
            if r[0] != "ok":
                raise InvalidInputError("amount", "would push the pool past 2**53-1; nothing was written")
            return construct(TeamBalanceResult, team_id=tid, balance=int(r[4]))

        return Call(call.script, call.keys, call.args, parse)

    # membership

    def member(self, team_id: str, user_id: str, action: str, fields: dict[str, Any]) -> Call[AddTeamMemberResult]:
        """Add / update / remove a member (pool_member.lua)."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")

        def parse(raw: Any) -> AddTeamMemberResult:
            r = _parts(raw, 6)
            return construct(AddTeamMemberResult, team_id=team_id, user_id=uid, role=r[5] or "member",
                             error=_err(r[0]))

        period = fields.get("period")
        args = [new_id(), team_id, uid, action, fields.get("role", ""), fields.get("cap", ""),
                PERIODS[period] if period else "", self.core.config()]
        return Call(self.scripts["pool_member"], [k.account, k.ledger], args, parse)

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
            r = _parts(raw_reply, 9)
            return construct(
                TeamDeductionResult, transaction_id=tx_of(shard, r[2]), team_id=team_id, user_id=uid,
                amount=-int(r[3]), team_balance_after=int(r[4]), error=_err(r[0]), idempotent=r[1] == "1",
            )

        frag = fragment(op=op if not settling else "", ak=TEAM, acct=team_id, member=uid, rid=reservation_id,
                        model=model, idem=ikey or "", meta=metadata_json(meta))
        args = [new_call_id(), str(n), model, uid, frag, reservation_id, self.core.config()]
        return Call(self.scripts["pool_debit"], [k.account, self.core._idem(k, ikey), k.ledger, k.events], args,
                    parse)

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
            r = _parts(raw_reply, 7)
            return construct(
                ReserveResult, reservation_id=r[2], user_id=uid, amount=int(r[3]), balance=int(r[4]),
                reserved_total=int(r[5]), expires_at_ms=int(r[6]), error=_err(r[0]), idempotent=r[1] == "1",
            )

        frag = fragment(op=op, ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "", meta=metadata_json(meta))
        args = [new_call_id(), rid, str(n), uid, str(ttl_ms), op, frag, self.core.config()]
        return Call(self.scripts["pool_reserve"], [k.account, self.core._idem(k, ikey), k.ledger], args, parse)

    def release_team(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a member's team hold back to the pool."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = idempotency_of(idempotency_key, None)

        def parse(raw_reply: Any) -> ReleaseResult:
            r = _parts(raw_reply, 6)
            return construct(
                ReleaseResult, reservation_id=rid, user_id=uid, amount=int(r[3]), balance=int(r[4]),
                held=int(r[5]), idempotent=r[1] == "1", error=_err(r[0]),
            )

        frag = fragment(ak=TEAM, acct=team_id, member=uid, rid=rid, idem=ikey or "")
        args = [new_call_id(), new_id(), rid, uid, frag, self.core.config()]
        return Call(self.scripts["pool_release"], [k.account, self.core._idem(k, ikey), k.ledger], args, parse)
