"""A pure-Python reference model of one team pool: members with caps over total / daily / monthly
periods, team caps, two-phase team holds with expiry, idempotency, and the check order
membership → member cap → team caps → pool.

Written from the README's semantics, not from the Lua, so a disagreement is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference_model import bucket, caps_verdict


@dataclass
class TeamHold:
    amount: int
    expires_ms: int
    member: str


@dataclass
class Member:
    cap: int | None
    period: str  # total | daily | monthly


Result = tuple[object, ...]


@dataclass
class TeamModel:
    """The rules of one team pool."""

    bal: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    holds: dict[str, TeamHold] = field(default_factory=dict)
    # all-time spend per member (kept after removal), and (period "d"/"m", bucket, member) -> spend
    mspend: dict[str, int] = field(default_factory=dict)
    mwindow: dict[tuple[str, int, str], int] = field(default_factory=dict)
    # team caps: (period, model "" = all) -> (limit, action); team windows (period, bucket, scope)
    caps: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    spend: dict[tuple[str, int, str], int] = field(default_factory=dict)
    idem: dict[str, Result] = field(default_factory=dict)
    credits_in: int = 0
    debits_out: int = 0

    # ── reading ──────────────────────────────────────────────────────

    def held(self, now: int) -> int:
        return sum(h.amount for h in self.holds.values() if h.expires_ms > now)

    def member_held(self, uid: str, now: int) -> int:
        return sum(h.amount for h in self.holds.values() if h.member == uid and h.expires_ms > now)

    def member_window(self, uid: str, period: str, now: int) -> int:
        return self.mwindow.get((period, bucket(period, now), uid), 0)

    def member_spent(self, uid: str, period: str, now: int) -> int:
        if period == "daily":
            return self.member_window(uid, "d", now)
        if period == "monthly":
            return self.member_window(uid, "m", now)
        return self.mspend.get(uid, 0)

    def _sweep(self, now: int) -> None:
        for rid in [r for r, h in self.holds.items() if h.expires_ms <= now]:
            del self.holds[rid]

    # ── mutations ────────────────────────────────────────────────────

    def top_up(self, amount: int, key: str | None) -> Result:
        if key and key in self.idem:
            return self.idem[key]
        self.bal += amount
        self.credits_in += amount
        result: Result = ("ok", self.bal)
        if key:
            self.idem[key] = result
        return result

    def set_member(self, uid: str, cap: int | None, period: str) -> None:
        self.members[uid] = Member(cap, period)

    def remove_member(self, uid: str) -> str:
        if uid not in self.members:
            return "user_not_in_team"
        del self.members[uid]
        return "ok"

    def set_cap(self, period: str, model: str, limit: int, action: str) -> None:
        self.caps[(period, model)] = (limit, action)

    def _team_caps(self, model: str, amount: int, now: int) -> tuple[bool, str | None]:
        return caps_verdict(self.caps, lambda period, scope: self.spend.get((period, bucket(period, now), scope), 0),
                            model, amount)

    def reserve(self, uid: str, amount: int, now: int) -> str:
        """Whether a hold may be taken (the caller records it with the store's id and expiry)."""
        if uid not in self.members:
            return "user_not_in_team"
        self._sweep(now)
        m = self.members[uid]
        if m.cap is not None and self.member_spent(uid, m.period, now) + self.member_held(uid, now) + amount > m.cap:
            return "spend_cap_exceeded"
        if self.bal - self.held(now) - amount < 0:
            return "insufficient_team_balance"
        return "ok"

    def record_hold(self, rid: str, uid: str, amount: int, expires_ms: int) -> None:
        self.holds[rid] = TeamHold(amount, expires_ms, uid)

    def debit(self, uid: str, amount: int, rid: str | None, model: str, key: str | None, now: int) -> Result:
        """deduct_team (rid None) or settle_team_reservation. Returns (status, pool balance after)."""
        if key and key in self.idem:
            return self.idem[key]
        if uid not in self.members:
            return ("user_not_in_team", self.bal)
        self._sweep(now)
        hold = 0
        if rid is not None:
            h = self.holds.get(rid)
            if h is None or h.member != uid:
                return ("reservation_not_found", self.bal)
            hold = h.amount
        m = self.members[uid]
        over_member_cap = m.cap is not None and (
            self.member_spent(uid, m.period, now) + self.member_held(uid, now) - hold + amount > m.cap)
        deny, _ = self._team_caps(model, amount, now)
        if over_member_cap or deny:
            result: Result = ("spend_cap_exceeded", self.bal)
            if rid is None:
                return result
            del self.holds[rid]  # a refused settlement resolves its hold
            if key:
                self.idem[key] = result
            return result
        need = amount - hold
        if need > 0 and self.bal - self.held(now) - need < 0:
            return ("insufficient_team_balance", self.bal)
        self.bal -= amount
        self.debits_out += amount
        if rid is not None:
            del self.holds[rid]
        if amount > 0:
            self.mspend[uid] = self.mspend.get(uid, 0) + amount
            for period in ("d", "m"):
                b = bucket(period, now)
                self.mwindow[(period, b, uid)] = self.mwindow.get((period, b, uid), 0) + amount
                for scope in ("*", model) if model else ("*",):
                    self.spend[(period, b, scope)] = self.spend.get((period, b, scope), 0) + amount
        result = ("ok", self.bal)
        if key:
            self.idem[key] = result
        return result

    def release(self, uid: str, rid: str, now: int) -> str:
        self._sweep(now)
        h = self.holds.get(rid)
        if h is None or h.member != uid:
            return "reservation_not_found"
        del self.holds[rid]
        return "ok"
