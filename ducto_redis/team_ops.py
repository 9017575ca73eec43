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
    _reply,
    construct,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_id,
)
from .errors import InvalidInputError
from .keys import TEAM, AccountKeys
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

CapPeriod = Literal["total", "daily", "monthly"]
PERIODS = ("total", "daily", "monthly")


def _team_keys(k: AccountKeys, idem_key: str) -> list[str]:
    return [
        k.account, k.holds, k.hold_expiry, k.caps, k.day_window, k.month_window, idem_key, k.ledger, k.events,
        k.members, k.member_spend, k.member_day, k.member_month, k.member_held,
    ]


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
        idem_key, has, raw = self.core._idem(k, ikey)

        def parse(r_: Any) -> CreateTeamResult:
            r = _reply(r_, 5)
            if r[0] != "ok":
                raise InvalidInputError("team_id", f"a team {tid!r} already exists")
            return construct(CreateTeamResult, team_id=r[2], name=r[3])

        args = [self.core._offset(), new_id(), tid, label, str(n), has, raw, self.core._idem_ttl]
        return Call(self.scripts["pool_create"], [k.account, idem_key, k.ledger], args, parse)

    def read(self, team_id: str, with_members: bool) -> Call[list[str]]:
        """The raw pool_read reply (see lua/pool_read.lua)."""
        k = self._k(team_id)
        return Call(
            self.scripts["pool_read"], _team_keys(k, k.idempotency(None)),
            [self.core._offset(), "1" if with_members else "0"], lambda r: _reply(r, 7),
        )

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
            for i in range(7, len(r), 6):
                m = json.loads(r[i + 1])
                out.append(construct(
                    TeamMemberSpend, user_id=r[i], role=m.get("role", "member"),
                    spend_cap=int(m["cap"]) if m.get("cap") is not None else None,
                    cap_period=m.get("period", "total"), total_spent=int(r[i + 2]), spent_today=int(r[i + 3]),
                    spent_this_month=int(r[i + 4]), held=int(r[i + 5]),
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
        call.args.append("1")  # the team must exist

        def parse(raw: Any) -> TeamBalanceResult:
            r = _reply(raw, 6)
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
            r = _reply(raw, 6)
            return construct(AddTeamMemberResult, team_id=team_id, user_id=uid, role=r[2] or "member",
                             error=_err(r[0]))

        args = [self.core._offset(), new_id(), team_id, uid, action, json.dumps(fields)]
        return Call(self.scripts["pool_member"], [k.account, k.members, k.ledger], args, parse)

    def add_member_fields(
        self, role: str, spend_cap: int | None, cap_period: str
    ) -> dict[str, Any]:
        """The validated fields of a new member."""
        cap, period = _check_cap(spend_cap, cap_period)
        # the cap travels as a string: cjson would round numbers past 1e14
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
        idem_key, has, raw = self.core._idem(k, ikey)

        def parse(raw_reply: Any) -> TeamDeductionResult:
            r = _reply(raw_reply, 7)
            return construct(
                TeamDeductionResult, transaction_id=r[2], team_id=team_id, user_id=uid, amount=-int(r[3]),
                team_balance_after=int(r[4]), error=_err(r[0]), idempotent=r[1] == "1",
            )

        args = [
            self.core._offset(), new_id(), team_id, uid, reservation_id, str(n), op if not settling else "",
            model, metadata_json(meta), has, raw, self.core._idem_ttl, self.core._events_maxlen,
            *self.core._backlog,
        ]
        return Call(self.scripts["pool_debit"], _team_keys(k, idem_key), args, parse)

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
        idem_key, has, raw = self.core._idem(k, ikey)

        def parse(raw_reply: Any) -> ReserveResult:
            r = _reply(raw_reply, 7)
            return construct(
                ReserveResult, reservation_id=r[2], user_id=uid, amount=int(r[3]), balance=int(r[4]),
                reserved_total=int(r[5]), expires_at_ms=int(r[6]), error=_err(r[0]), idempotent=r[1] == "1",
            )

        args = [
            self.core._offset(), new_id(), team_id, uid, str(n), op, str(ttl_ms), metadata_json(meta),
            has, raw, self.core._idem_ttl, *self.core._backlog,
        ]
        return Call(self.scripts["pool_reserve"], _team_keys(k, idem_key), args, parse)

    def release_team(
        self, team_id: str, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a member's team hold back to the pool."""
        k = self._k(team_id)
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        idem_key, has, raw = self.core._idem(k, idempotency_of(idempotency_key, None))

        def parse(raw_reply: Any) -> ReleaseResult:
            r = _reply(raw_reply, 6)
            return construct(
                ReleaseResult, reservation_id=rid, user_id=uid, amount=int(r[3]), balance=int(r[4]),
                held=int(r[5]), idempotent=r[1] == "1", error=_err(r[0]),
            )

        args = [self.core._offset(), new_id(), team_id, uid, rid, has, raw, self.core._idem_ttl]
        return Call(self.scripts["pool_release"], _team_keys(k, idem_key), args, parse)
