"""A pure-Python reference model of the single-user rules: balances, holds with expiry, spend caps
with calendar windows, idempotency, refunds (once per debit) and plans' monthly free allowances
(consumed before paid credits). The model-based test drives it and a real store side by side.

It is written from the README's semantics, not from the Lua, so a disagreement is a finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

DAY_MS = 86_400_000


def bucket(period: str, now_ms: int) -> int:
    """The calendar window a moment falls in: UTC day number, or year*12 + month - 1."""
    if period == "d":
        return now_ms // DAY_MS
    d = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
    return d.year * 12 + d.month - 1


def caps_verdict(
    caps: dict[tuple[str, str], tuple[int, str]], spent: Callable[[str, str], int], model: str, amount: int
) -> tuple[bool, str | None]:
    """Spending ``amount`` on ``model`` against caps {(period, model or ""): (limit, action)}, with
    ``spent(period, scope)`` the window's spend ("*" for all models): (a deny cap is exceeded,
    the action of the warn / notify caps crossed — warn wins)."""
    deny, action = False, None
    for (period, cap_model), (limit, act) in caps.items():
        if cap_model not in ("", model):
            continue
        if spent(period, "*" if cap_model == "" else cap_model) + amount > limit:
            if act == "deny":
                deny = True
            elif action is None or act == "warn":
                action = act
    return deny, action


@dataclass
class Hold:
    amount: int
    expires_ms: int


@dataclass
class Account:
    bal: int = 0
    life: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)
    # (period "d"/"m", model "" for all) -> (limit, action)
    caps: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    # (period, bucket, "*" or model) -> spend
    spend: dict[tuple[str, int, str], int] = field(default_factory=dict)
    idem: dict[str, tuple[object, ...]] = field(default_factory=dict)
    credits_in: int = 0
    debits_out: int = 0
    refundable: dict[str, int] = field(default_factory=dict)  # debit id -> amount
    refunded: set[str] = field(default_factory=set)
    plan: str = ""
    used: dict[tuple[str, int], int] = field(default_factory=dict)  # (plan, month bucket) -> allowance used

    def held(self, now_ms: int) -> int:
        return sum(h.amount for h in self.holds.values() if h.expires_ms > now_ms)

    def sweep(self, now_ms: int) -> None:
        for rid in [r for r, h in self.holds.items() if h.expires_ms <= now_ms]:
            del self.holds[rid]

    def window(self, period: str, now_ms: int, scope: str) -> int:
        return self.spend.get((period, bucket(period, now_ms), scope), 0)


class Model:
    """The rules, one account at a time."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def acct(self, user: str) -> Account:
        return self.accounts.setdefault(user, Account())

    def add_credits(self, user: str, amount: int, tx_type: str, key: str | None) -> tuple[object, ...]:
        a = self.acct(user)
        if key and key in a.idem:
            return a.idem[key]
        a.bal += amount
        a.credits_in += amount
        if tx_type == "purchase":
            a.life += amount
        result: tuple[object, ...] = ("ok", a.bal)
        if key:
            a.idem[key] = result
        return result

    def reserve(self, user: str, amount: int, min_balance: int, now: int, ttl_ms: int) -> bool:
        a = self.acct(user)
        a.sweep(now)
        return a.bal - a.held(now) - amount >= min_balance

    def record_hold(self, user: str, rid: str, amount: int, expires_ms: int) -> None:
        self.acct(user).holds[rid] = Hold(amount, expires_ms)

    def _caps_deny(self, a: Account, model: str, amount: int, now: int) -> tuple[bool, str | None]:
        return caps_verdict(a.caps, lambda period, scope: a.window(period, now, scope), model, amount)

    def debit(
        self, user: str, amount: int, rid: str | None, model: str, key: str | None, now: int
    ) -> tuple[object, ...]:
        """Settle ``rid`` (or charge when None). Returns (status, balance after, cap action)."""
        a = self.acct(user)
        if key and key in a.idem:
            return a.idem[key]
        a.sweep(now)
        hold = 0
        if rid is not None:
            if rid not in a.holds:
                return ("reservation_not_found", a.bal, None)
            hold = a.holds[rid].amount
        deny, action = self._caps_deny(a, model, amount, now)
        if deny:
            if rid is not None:
                del a.holds[rid]
                result: tuple[object, ...] = ("spend_cap_exceeded", a.bal, "deny")
                if key:
                    a.idem[key] = result
                return result
            return ("spend_cap_exceeded", a.bal, "deny")
        need = amount - hold
        if need > 0 and a.bal - a.held(now) - need < 0:
            return ("insufficient_credits", a.bal, None)
        a.bal -= amount
        a.debits_out += amount
        if rid is not None:
            del a.holds[rid]
        if amount > 0:
            for period in ("d", "m"):
                b = bucket(period, now)
                a.spend[(period, b, "*")] = a.spend.get((period, b, "*"), 0) + amount
                if model:
                    a.spend[(period, b, model)] = a.spend.get((period, b, model), 0) + amount
        result = ("ok", a.bal, action)
        if key:
            a.idem[key] = result
        return result

    def release(self, user: str, rid: str, now: int) -> str:
        a = self.acct(user)
        a.sweep(now)
        if rid not in a.holds:
            return "reservation_not_found"
        del a.holds[rid]
        return "ok"

    def set_cap(self, user: str, period: str, model: str, limit: int, action: str) -> None:
        self.acct(user).caps[(period, model)] = (limit, action)

    # ── refunds and plans ────────────────────────────────────────────

    def record_debit(self, user: str, tx: str, amount: int) -> None:
        """An accepted debit of ``amount`` > 0 made transaction ``tx``: it may be refunded once."""
        if amount > 0:
            self.acct(user).refundable[tx] = amount

    def refund(self, user: str, tx: str, amount: int | None) -> tuple[object, ...]:
        """refund_credits: (status, new balance); a debit is refunded once, never past its amount."""
        a = self.acct(user)
        if tx not in a.refundable:
            return ("transaction_not_found", None)
        if tx in a.refunded:
            return ("already_refunded", None)
        x = a.refundable[tx] if amount is None else amount
        if not 1 <= x <= a.refundable[tx]:
            return ("invalid_amount", None)
        a.refunded.add(tx)
        a.bal += x
        a.credits_in += x  # a refund is not negative spend: the windows stay gross
        return ("ok", a.bal)

    def set_plan(self, user: str, plan: str) -> None:
        self.acct(user).plan = plan

    def allowance_left(self, user: str, allowances: dict[str, int], now: int) -> int:
        a = self.acct(user)
        if not a.plan:
            return 0
        return max(0, allowances.get(a.plan, 0) - a.used.get((a.plan, bucket("m", now)), 0))

    def charge_with_allowance(
        self, user: str, amount: int, key: str | None, allowances: dict[str, int], now: int
    ) -> tuple[object, ...]:
        """The plan's allowance first, then the paid rest as a charge. (status, balance, cap action, free)."""
        a = self.acct(user)
        if key and key in a.idem:
            return a.idem[key]
        free = min(self.allowance_left(user, allowances, now), amount)
        paid = amount - free
        if paid > 0:
            status, bal, action = self.debit(user, paid, None, "", None, now)
            if status != "ok":
                return (status, bal, action, 0)  # a refusal consumes no allowance
        else:
            a.sweep(now)
            bal, action = a.bal, None
        if free:
            slot = (a.plan, bucket("m", now))
            a.used[slot] = a.used.get(slot, 0) + free
        result: tuple[object, ...] = ("ok", bal, action, free)
        if key:
            a.idem[key] = result
        return result
