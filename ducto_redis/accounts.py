"""A user's account: balances, credits, reservations, debits, request-rate and quantity limits, spend caps.

Each store method here is written once (see ``methods.py``): its body validates the arguments and
builds the call; RedisStore, AsyncRedisStore, MemoryStore and AsyncMemoryStore run it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from .core import (
    Call,
    construct,
    error_code,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_call_id,
    new_id,
    quantities_arg,
    split_reply,
    table_reply,
)
from .errors import InvalidInputError
from .keys import USER
from .layout import QuantityLimit, RateLimit, fragment
from .methods import StoreBase, command
from .models import (
    AddCreditsResult,
    BalanceResult,
    CapCheckResult,
    CreditMetadata,
    DeductionResult,
    RateLimitResult,
    ReleaseResult,
    ReserveResult,
    SpendCap,
)
from .specs import (
    BALANCE,
    CHECK_CAP,
    HIT_RATE_LIMIT,
    RELEASE,
    RESERVE,
    SET_QUANTITY_LIMIT,
    SET_RATE_LIMIT,
)
from .validation import check_amount, check_id, check_idempotency_key, check_label, check_quantity_name, period_ms


def expires_ms(expires_at: datetime | None) -> int | None:
    """A datetime (naive = UTC) as epoch milliseconds."""
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise InvalidInputError("expires_at", f"must be a datetime or None, got {type(expires_at).__name__}")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=timezone.utc)
    return int(expires_at.timestamp() * 1000)


class AccountOps(StoreBase):
    """The store methods of a user's account."""

    # ── balances and credits ──────────────────────────────────────────

    @command
    def get_balance(self, user_id: str) -> Call[BalanceResult]:
        """Balance, held amount (``available`` = balance − held) and lifetime purchases; 0 if unknown."""
        core = self.core
        uid = check_id(user_id, "user_id")
        k = core.keys.user(uid)

        def parse(raw: Any) -> BalanceResult:
            r, f = table_reply(raw, BALANCE.reply.size), BALANCE.reply.pos
            return construct(BalanceResult,
                user_id=uid, balance=int(r[f.balance]), held=int(r[f.held]), lifetime_purchased=int(r[f.life])
            )

        return Call(core.scripts["balance"], BALANCE.keys.pack(account=k.account, grants=k.grants),
                    BALANCE.args.pack(config=core.config()), parse)

    @command
    def add_credits(
        self,
        user_id: str,
        amount: int,
        type: str = "adjustment",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[AddCreditsResult]:
        """Credit a user (``amount`` 0 creates the record). A replayed idempotency key changes nothing."""
        return self.core.credit(USER, user_id, amount, type, metadata, expires_ms(expires_at), idempotency_key)

    # ── reservations and debits ───────────────────────────────────────

    @command
    def reserve_credits(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int | None = None,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
        *,
        quantities: dict[str, int] | None = None,
        rate_limit: bool = False,
    ) -> Call[ReserveResult]:
        """Hold credits for an operation if the available balance covers ``amount`` and keeps
        ``min_balance`` (None: the settings' ``default_min_balance``, 5 as in ducto); the hold expires
        after ``ttl_seconds`` (None: ``hold_ttl_seconds``) on its own.

        ``quantities`` (an estimate, e.g. ``{"tokens": 2000}``) are checked against the account's
        quantity limits in the same script and corrected when the hold is settled; ``rate_limit``
        applies the account's request-rate limit too (a gateway admitting a request with a hold).
        """
        core = self.core
        uid = check_id(user_id, "user_id")
        n = check_amount(amount, "amount", 1)
        op = check_label(operation_type, "operation_type")
        floor = core.min_balance(min_balance)
        qs = quantities_arg(quantities)
        meta = metadata_of(metadata)
        model = check_label(meta.model, "metadata.model") if meta and meta.model else ""
        ikey = idempotency_of(idempotency_key, meta)
        ttl_ms = core.hold_ttl_ms(ttl_seconds)
        k = core.keys.user(uid)
        rid = new_id()

        def parse(raw_reply: Any) -> ReserveResult:
            r, f = split_reply(raw_reply, RESERVE.reply.size, RESERVE.reply.pos.limit), RESERVE.reply.pos
            return construct(ReserveResult,
                reservation_id=r[f.rid], user_id=uid, amount=int(r[f.amount]), balance=int(r[f.balance]),
                reserved_total=int(r[f.held]), expires_at_ms=int(r[f.expires]), error=error_code(r[f.status]),
                idempotent=r[f.idempotent] == "1", retry_after_ms=int(r[f.retry]),
                rate_limit_remaining=int(r[f.remaining]) if r[f.remaining] else None,
                rate_limit_limit=int(r[f.limit]) if r[f.limit] else None,
            )

        frag = fragment(op=op, acct=uid, rid=rid, model=model, idem=ikey or "", meta=metadata_json(meta))
        args = RESERVE.args.pack(cid=new_call_id(), rid=rid, amount=str(n), floor=str(floor), ttl=str(ttl_ms), op=op,
                                 frag=frag, rate="1" if rate_limit else "0", quantities=qs, model=model,
                                 config=core.config())
        keys = RESERVE.keys.pack(account=k.account, idem=k.idempotency(ikey), ledger=k.ledger, grants=k.grants)
        return Call(core.scripts["reserve"], keys, args, parse)

    @command
    def deduct_credits(
        self,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        *,
        quantities: dict[str, int] | None = None,
    ) -> Call[DeductionResult]:
        """Settle a reservation with the actual amount; spend caps are enforced in the same script.

        ``quantities``: the actual quantities, correcting the hold's estimate."""
        rid = check_id(reservation_id, "reservation_id")
        return self.core.debit_call(self.core.debit_input(
            user_id, amount, reservation_id=rid, idempotency_key=idempotency_key, metadata=metadata,
            quantities=quantities,
        ))

    @command
    def release_reservation(
        self, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Return a reservation's credits without spending them."""
        core = self.core
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = check_idempotency_key(idempotency_key)
        k = core.keys.user(uid)

        def parse(raw_reply: Any) -> ReleaseResult:
            r, f = split_reply(raw_reply, RELEASE.reply.size), RELEASE.reply.pos
            return construct(ReleaseResult,
                reservation_id=rid, user_id=uid, amount=int(r[f.amount]), balance=int(r[f.balance]),
                held=int(r[f.held]), idempotent=r[f.idempotent] == "1", error=error_code(r[f.status]),
            )

        frag = fragment(acct=uid, rid=rid, idem=ikey or "")
        args = RELEASE.args.pack(cid=new_call_id(), tx=new_id(), rid=rid, frag=frag, config=core.config())
        keys = RELEASE.keys.pack(account=k.account, idem=k.idempotency(ikey), ledger=k.ledger, grants=k.grants)
        return Call(core.scripts["release"], keys, args, parse)

    @command
    def charge(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
        *,
        quantities: dict[str, int] | None = None,
    ) -> Call[DeductionResult]:
        """Check caps and balance and debit in one round trip, with no hold (the gateway's call).

        ``quantities`` (e.g. ``{"tokens": n}``) are checked against the account's quantity limits."""
        return self.core.debit_call(self.core.debit_input(
            user_id, amount, operation_type=operation_type, idempotency_key=idempotency_key,
            metadata=metadata, min_balance=min_balance, quantities=quantities,
        ))

    # ── request-rate and quantity limits ──────────────────────────────

    @command
    def set_rate_limit(
        self, user_id: str, limit: int | None, period_seconds: float = 1.0, burst: int | None = None
    ) -> Call[None]:
        """Allow ``limit`` requests per ``period_seconds`` (GCRA), ``burst`` at once (default ``limit``);
        ``None`` removes it. Checked by ``charge`` in the same script as caps and balance."""
        core = self.core
        uid = check_id(user_id, "user_id")
        k = core.keys.user(uid)
        value = ""
        if limit is not None:
            n = check_amount(limit, "limit", 1)
            b = n if burst is None else check_amount(burst, "burst", 1)
            value = RateLimit(n, period_ms(period_seconds), b).encode()
        frag = fragment(op="rate_limit_set" if value else "rate_limit_removed", acct=uid, meta=json.dumps(
            {"limit": limit, "period_ms": period_ms(period_seconds), "burst": burst} if value else {}))
        args = SET_RATE_LIMIT.args.pack(tx=new_id(), value=value, frag=frag, config=core.config())
        return Call(core.scripts["set_rate_limit"], SET_RATE_LIMIT.keys.pack(account=k.account, ledger=k.ledger), args,
                    lambda _r: None)

    @command
    def set_quantity_limit(
        self, user_id: str, quantity: str, limit: int | None, period_seconds: float = 60.0, model: str | None = None
    ) -> Call[None]:
        """Allow ``limit`` units of ``quantity`` (e.g. ``"tokens"``) per ``period_seconds``, for one
        ``model`` or (None) all; ``None`` removes it. ``charge(..., quantities={"tokens": n})`` and
        ``reserve_credits(..., quantities=...)`` are checked against it in the same script as caps
        and balance; ``deduct_credits(..., quantities=actual)`` corrects a hold's estimate."""
        core = self.core
        uid = check_id(user_id, "user_id")
        name = check_quantity_name(quantity)
        m = check_label(model, "model") if model else ""
        if "|" in m or ";" in m:
            raise InvalidInputError("model", "must not contain '|' or ';'")
        value = ""
        if limit is not None:
            value = QuantityLimit(name, m, check_amount(limit, "limit", 1), period_ms(period_seconds)).value()
        k = core.keys.user(uid)
        args = SET_QUANTITY_LIMIT.args.pack(tx=new_id(), user=uid, name=name, model=m, value=value,
                                            config=core.config())
        keys = SET_QUANTITY_LIMIT.keys.pack(account=k.account, ledger=k.ledger)
        return Call(core.scripts["set_quantity_limit"], keys, args, lambda _r: None)

    @command
    def hit_rate_limit(self, user_id: str) -> Call[RateLimitResult]:
        """Admit one request against the rate limit without moving money (free routes)."""
        core = self.core
        uid = check_id(user_id, "user_id")
        k = core.keys.user(uid)

        def parse(raw: Any) -> RateLimitResult:
            r, f = split_reply(raw, HIT_RATE_LIMIT.reply.size), HIT_RATE_LIMIT.reply.pos
            return construct(RateLimitResult,
                user_id=uid, allowed=r[f.status] == "ok", retry_after_ms=int(r[f.retry]),
                remaining=int(r[f.remaining]) if r[f.remaining] else None,
                limit=int(r[f.limit]) if r[f.limit] else None, error=error_code(r[f.status]),
            )

        return Call(core.scripts["hit_rate_limit"], HIT_RATE_LIMIT.keys.pack(account=k.account),
                    HIT_RATE_LIMIT.args.pack(config=core.config()), parse)

    # ── spend caps ────────────────────────────────────────────────────

    @command
    def set_spend_cap(self, cap: SpendCap) -> Call[None]:
        """Set a daily or monthly cap (replacing the one of the same period and model)."""
        return self.core.spend_cap(cap, USER)

    @command
    def remove_spend_cap(self, user_id: str, cap_type: str = "daily", model: str | None = None) -> Call[None]:
        """Remove a user's cap of one period (and model)."""
        cap = SpendCap(user_id=user_id, cap_type=cap_type, model=model)  # type: ignore[arg-type,unused-ignore]
        return self.core.spend_cap(cap, USER, remove=True)

    @command
    def check_spend_cap(
        self, user_id: str, model: str | None = None, amount: int | None = None
    ) -> Call[CapCheckResult]:
        """The real current spend, limit and action of the cap that matters; ``capped`` if deny refuses
        ``amount`` (or, without one, one more credit)."""
        core = self.core
        uid = check_id(user_id, "user_id")
        m = check_label(model, "model") if model else ""
        amt = "" if amount is None else str(check_amount(amount, "amount", 0))
        k = core.keys.user(uid)

        def parse(raw: Any) -> CapCheckResult:
            r, f = table_reply(raw, CHECK_CAP.reply.size), CHECK_CAP.reply.pos
            return construct(CapCheckResult,
                capped=r[f.capped] == "1", current_spend=int(r[f.spend]), cap_limit=int(r[f.limit]),
                action=r[f.action] or None, model=r[f.model] or None, cap_type=r[f.period] or None,
            )

        return Call(core.scripts["check_cap"], CHECK_CAP.keys.pack(account=k.account),
                    CHECK_CAP.args.pack(model=m, amount=amt, config=core.config()), parse)
