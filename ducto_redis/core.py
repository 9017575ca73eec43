"""The core every store shares: validation, key selection, argument packing and reply parsing.

A store method asks the core for a :class:`Call` (which script, KEYS, ARGV and how to read the
reply) and runs it with its own I/O: the sync store with a redis-py client, the async store with
redis.asyncio, the memory store over an in-process fakeredis. No rule lives in a store shell.
Invalid input never reaches Redis: either an :class:`InvalidInputError` naming the field is
raised (wrong type), or the call carries a ready result with an error code (out of range).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import InvalidInputError, ScriptReplyError
from .keys import TEAM, USER, AccountKeys, KeySchema
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
from .scripts import Script, scripts
from .settings import Settings
from .validation import (
    check_amount,
    check_choice,
    check_id,
    check_idempotency_key,
    check_json,
    check_json_size,
    check_label,
    check_quantity_name,
    check_ttl_seconds,
    invalid_input,
    period_ms,
)

T = TypeVar("T")


PURCHASE_TYPES = frozenset({"purchase"})


@dataclass(slots=True)
class Call(Generic[T]):
    """One script call to make, or (``script`` None) a result decided without Redis."""

    script: Script | None
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], T]
    result: T | None = None


def ready(result: T) -> Call[T]:
    """A call that needs no Redis round trip."""
    return Call(None, [], [], lambda _r: result, result)


# ── validation (the rules live in validation.py; these apply them to metadata and quantities) ──


def idempotency_of(key: object, meta: CreditMetadata | None) -> str | None:
    """The explicit ``idempotency_key`` argument, else ``metadata.idempotency_key``, validated."""
    if key is None and meta is not None:
        return check_idempotency_key(meta.idempotency_key, "metadata.idempotency_key")
    return check_idempotency_key(key)


def quantities_arg(quantities: object) -> str:
    """A request's quantities (name -> integer >= 0) as the scripts take them: "name=n;name=n"."""
    if quantities is None:
        return ""
    if not isinstance(quantities, dict):
        raise InvalidInputError("quantities", f"must be a dict of name -> integer, got {type(quantities).__name__}")
    if len(quantities) > 16:
        raise InvalidInputError("quantities", "at most 16 quantities")
    return ";".join(f"{check_quantity_name(k, 'quantities')}={check_amount(v, f'quantities.{k}', 0)}"
                    for k, v in quantities.items())


def metadata_of(value: object) -> CreditMetadata | None:
    """``CreditMetadata``, a dict of its fields, or None; every value storable (see ``check_json``)."""
    if value is None:
        return None
    if isinstance(value, dict):
        check_json(value, "metadata")
        try:
            value = CreditMetadata.model_validate(value)
        except ValidationError as exc:
            raise invalid_input(exc, "metadata") from exc
    elif isinstance(value, CreditMetadata):
        check_json(value, "metadata")
    else:
        raise InvalidInputError("metadata", f"must be CreditMetadata, a dict or None, got {type(value).__name__}")
    if value.model is not None:  # a label: spend caps count per model
        check_label(value.model, "metadata.model")
    return value


def metadata_json(meta: CreditMetadata | None) -> str:
    """Metadata as compact JSON for the ledger ("" when there is none), at most 8 192 bytes."""
    if meta is None:
        return ""
    try:
        text = meta.model_dump_json(exclude_none=True)
    except PydanticSerializationError as exc:
        raise InvalidInputError("metadata", f"cannot be written as JSON: {exc}") from exc
    return check_json_size(text, "metadata")


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _reply(raw: Any, size: int) -> list[str]:
    if not isinstance(raw, list) or len(raw) < size:
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    if isinstance(raw[0], str):  # a decoding client: every element is already str
        return raw
    return [_s(v) for v in raw]


def _err(status: str) -> str | None:
    return None if status == "ok" else status


class _Ids:
    """UUID-shaped ids, unique without a syscall per id: a random per-process prefix and a counter.

    The prefix is drawn anew in a forked child, so two processes never share it.
    """

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        h = uuid.uuid4().hex
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-"
        self.counter = itertools.count(int(h[20:32], 16) >> 8)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


_IDS = _Ids()


def new_id() -> str:
    """A fresh transaction / reservation id (UUID-shaped, unique)."""
    return _IDS.next()


def tx_id_in_shard(shard: int) -> str:
    """A fresh UUID-shaped id whose second group is the shard (4 hex digits; shards <= 16384).

    Debits get such ids so that ``refund_credits(transaction_id)`` finds the debit's shard (hence its
    refund record, see keys.py) from the id alone, on Redis Cluster too. The group replaced is part
    of the random per-process prefix; what stays random (60 bits) and the counter keep ids unique.
    """
    h = _IDS.next()
    return f"{h[:9]}{shard:04x}{h[13:]}"


_OUR_ID = re.compile(r"[0-9a-f]{8}-([0-9a-f]{4})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def shard_of_tx(transaction_id: str, shards: int) -> int | None:
    """The shard encoded by :func:`tx_id_in_shard`, or None when the id cannot be one of ours
    (ours are lowercase hex UUID-shaped, so they need no escaping in key names)."""
    m = _OUR_ID.fullmatch(transaction_id)
    if m is None:
        return None
    shard = int(m.group(1), 16)
    return shard if shard < shards else None


M = TypeVar("M", bound=BaseModel)
_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {}


def construct(cls: type[M], **values: Any) -> M:
    """Build a result model from trusted values without validation (the hot path's reply parsing).

    Like ``model_construct`` but several times cheaper: defaults are computed once per class.
    """
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        # every field, in declaration order (required ones are always among ``values``)
        defaults = {
            name: None if f.is_required() else f.get_default(call_default_factory=True)
            for name, f in cls.model_fields.items()
        }
        _DEFAULTS[cls] = defaults
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", {**defaults, **values})
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


_new = object.__new__
_set = object.__setattr__
_DEDUCTION_FIELDS = frozenset(DeductionResult.model_fields)


def deduction_result(
    transaction_id: str, user_id: str, amount: int, balance_after: int, idempotent: bool, error: str | None,
    cap_action: str | None, retry_after_ms: int, rate_limit_remaining: int | None,
) -> DeductionResult:
    """A :class:`DeductionResult` from a trusted script reply, every field set (the hot path's builder).

    Equal to the validated model with the same values (same ``__dict__`` in declaration order, every
    field in the fields set) at about half the cost of :func:`construct`.
    """
    obj = _new(DeductionResult)
    _set(obj, "__dict__", {
        "transaction_id": transaction_id, "user_id": user_id, "amount": amount, "balance_after": balance_after,
        "idempotent": idempotent, "error": error, "cap_action": cap_action, "retry_after_ms": retry_after_ms,
        "rate_limit_remaining": rate_limit_remaining,
    })
    _set(obj, "__pydantic_fields_set__", set(_DEDUCTION_FIELDS))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


# ── the core ──────────────────────────────────────────────────────────


class StoreCore:
    """Everything a store does except I/O: builds :class:`Call` objects for each operation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeySchema(settings.namespace, settings.shards)
        self.scripts = scripts()
        self.clock_offset_ms = 0
        from .team_ops import TeamOps  # the team calls share this core (keys, scripts, settings)

        self.teams = TeamOps(self)
        from .refund_ops import RefundOps  # refunds and expiring-credit sweeps share this core too

        self.refunds = RefundOps(self)
        self._refund_window_ms = str(settings.refund_window_seconds * 1000)
        self._idem_ttl = str(settings.idempotency_ttl_seconds)
        self._hold_ttl_ms = settings.hold_ttl_seconds * 1000
        self._events_maxlen = str(settings.events_maxlen)
        self._backlog = [str(settings.ledger_max_backlog), settings.ledger_backlog_policy]
        # debit.lua's KEYS of an account without an idempotency key (copied before a change); the
        # hot accounts only (~0.8 kB each)
        self._debit_keys = lru_cache(maxsize=8192)(self._debit_keys_uncached)

    # helpers

    def _offset(self) -> str:
        return str(self.clock_offset_ms)

    def _idem(self, k: AccountKeys, key: str | None) -> tuple[str, str, str]:
        """(KEYS entry, has-key flag, raw key) for an optional idempotency key."""
        if key is None:
            return k.idempotency(None), "0", ""
        return k.idempotency(key), "1", key

    # health

    def health_probes(self) -> list[Call[bool]]:
        """One read-only balance script call per shard: a real script round trip on every node."""
        calls: list[Call[bool]] = []
        for shard in range(self.keys.shards):
            k = self.keys.probe(shard)
            calls.append(Call(self.scripts["balance"], [k.account, k.holds, k.hold_expiry, k.grants], [self._offset()],
                              lambda raw: _reply(raw, 6)[0] == "ok"))
        return calls

    # balances

    def get_balance(self, user_id: str) -> Call[BalanceResult]:
        """Read a user's balance, held amount and lifetime purchases (0 for an unknown user)."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)

        def parse(raw: Any) -> BalanceResult:
            r = _reply(raw, 6)
            return construct(BalanceResult,
                user_id=uid, balance=int(r[2]), held=int(r[3]), lifetime_purchased=int(r[4])
            )

        return Call(self.scripts["balance"], [k.account, k.holds, k.hold_expiry, k.grants], [self._offset()], parse)

    def user_exists(self, user_id: str) -> Call[bool]:
        """Whether a user record exists (made by any credit, even of 0)."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)
        return Call(self.scripts["balance"], [k.account, k.holds, k.hold_expiry, k.grants], [self._offset()],
                    lambda raw: _reply(raw, 6)[5] == "1")

    def add_credits(
        self,
        user_id: str,
        amount: int,
        type: str = "adjustment",
        metadata: CreditMetadata | dict[str, Any] | None = None,
        expires_at_ms: int | None = None,
        idempotency_key: str | None = None,
        *,
        account_kind: str = USER,
    ) -> Call[AddCreditsResult]:
        """Credit ``amount`` (0 creates the record). Idempotent with a key (argument or metadata)."""
        uid = check_id(user_id, "team_id" if account_kind != USER else "user_id")
        n = check_amount(amount, "amount", 0)
        tx_type = check_label(type, "type")
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        k = self.keys.user(uid) if account_kind == USER else self.keys.team(uid)
        idem_key, has, raw = self._idem(k, ikey)
        tx = new_id()

        def parse(raw_reply: Any) -> AddCreditsResult:
            r = _reply(raw_reply, 6)
            if r[0] != "ok":
                raise InvalidInputError("amount", "would push the balance past 2**53-1; nothing was written")
            return construct(AddCreditsResult,
                transaction_id=r[2], user_id=uid, amount=int(r[3]), new_balance=int(r[4]),
                lifetime_purchased=int(r[5]), idempotent=r[1] == "1",
            )

        args = [
            self._offset(), tx, uid, str(n), tx_type, "1" if tx_type in PURCHASE_TYPES else "0",
            metadata_json(meta), has, raw, self._idem_ttl,
            "" if expires_at_ms is None else str(expires_at_ms), account_kind,
        ]
        return Call(self.scripts["add_credits"], [k.account, idem_key, k.ledger, k.grants, k.grant_index], args, parse)

    # reservations

    def reserve_credits(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 5,
        idempotency_key: str | None = None,
        ttl_seconds: int | None = None,
        *,
        quantities: dict[str, int] | None = None,
        rate_limit: bool = False,
    ) -> Call[ReserveResult]:
        """Hold ``amount`` if the available balance covers it and keeps ``min_balance``.

        ``quantities`` (an estimate, e.g. ``{"tokens": 2000}``) are checked against the account's
        quantity limits in the same script and corrected when the hold is settled; ``rate_limit``
        applies the account's request-rate limit too (a gateway admitting a request with a hold).
        """
        uid = check_id(user_id, "user_id")
        n = check_amount(amount, "amount", 1)
        op = check_label(operation_type, "operation_type")
        floor = check_amount(min_balance, "min_balance", 0)
        qs = quantities_arg(quantities)
        meta = metadata_of(metadata)
        model = check_label(meta.model, "metadata.model") if meta and meta.model else ""
        ikey = idempotency_of(idempotency_key, meta)
        ttl_ms = self._hold_ttl_ms if ttl_seconds is None else check_ttl_seconds(ttl_seconds) * 1000
        k = self.keys.user(uid)
        idem_key, has, raw = self._idem(k, ikey)

        def parse(raw_reply: Any) -> ReserveResult:
            r = _reply(raw_reply, 7)
            more = len(r) > 8
            return construct(ReserveResult,
                reservation_id=r[2], user_id=uid, amount=int(r[3]), balance=int(r[4]),
                reserved_total=int(r[5]), expires_at_ms=int(r[6]), error=_err(r[0]), idempotent=r[1] == "1",
                retry_after_ms=int(r[7]) if more else 0, rate_limit_remaining=int(r[8]) if more and r[8] else None,
            )

        args = [
            self._offset(), new_id(), uid, str(n), op, str(floor), str(ttl_ms), metadata_json(meta),
            has, raw, self._idem_ttl, USER, *self._backlog, "1" if rate_limit else "0", qs, model,
        ]
        return Call(
            self.scripts["reserve"], [k.account, k.holds, k.hold_expiry, idem_key, k.ledger, k.grants], args, parse
        )

    def release_reservation(
        self, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a hold back without spending it."""
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = check_idempotency_key(idempotency_key)
        k = self.keys.user(uid)
        idem_key, has, raw = self._idem(k, ikey)

        def parse(raw_reply: Any) -> ReleaseResult:
            r = _reply(raw_reply, 6)
            return construct(ReleaseResult,
                reservation_id=rid, user_id=uid, amount=int(r[3]), balance=int(r[4]), held=int(r[5]),
                idempotent=r[1] == "1", error=_err(r[0]),
            )

        args = [self._offset(), new_id(), uid, rid, has, raw, self._idem_ttl, USER]
        return Call(
            self.scripts["release"], [k.account, k.holds, k.hold_expiry, idem_key, k.ledger, k.grants], args, parse
        )

    # debits

    def debit(
        self,
        user_id: str,
        amount: int,
        *,
        reservation_id: str = "",
        operation_type: str = "",
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
        quantities: dict[str, int] | None = None,
    ) -> Call[DeductionResult]:
        """Settle a reservation (``reservation_id``) or charge directly; caps checked in the same script.

        ``quantities``: a charge's quantities, checked against the account's quantity limits; a
        settlement's actual quantities, correcting the hold's estimate.
        """
        uid = check_id(user_id, "user_id")
        qs = quantities_arg(quantities)
        settling = reservation_id != ""
        if settling:
            check_id(reservation_id, "reservation_id")
        n = check_amount(amount, "amount", 0 if settling else 1)
        op = check_label(operation_type, "operation_type", allow_empty=settling)
        floor = check_amount(min_balance, "min_balance", 0)
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        model = check_label(meta.model, "metadata.model") if meta and meta.model else ""
        fixed, shard = self._debit_keys(uid)
        tx = tx_id_in_shard(shard)  # refund_credits(tx) finds the shard from the id
        keys = [*fixed, self.keys.refundable(shard, tx)]
        if ikey is None:
            has, raw = "0", ""
        else:
            keys[6], has, raw = self.keys.user(uid).idempotency(ikey), "1", ikey

        def parse(raw_reply: Any) -> DeductionResult:
            r = _reply(raw_reply, 7)
            rate = len(r) > 8
            return deduction_result(
                r[2], uid, -int(r[3]), int(r[4]), r[1] == "1", None if r[0] == "ok" else r[0], r[6] or None,
                int(r[7]) if rate else 0, int(r[8]) if rate and r[8] else None,
            )

        args = [
            self._offset(), tx, uid, reservation_id, str(n), op, model, metadata_json(meta),
            has, raw, self._idem_ttl, self._events_maxlen, str(floor), USER, *self._backlog,
            self._refund_window_ms, qs,
        ]
        return Call(self.scripts["debit"], keys, args, parse)

    def _debit_keys_uncached(self, uid: str) -> tuple[list[str], int]:
        """debit.lua's KEYS 1-10 of an account (all but the debit's own refund record) and its shard."""
        k = self.keys.user(uid)
        return [k.account, k.holds, k.hold_expiry, k.caps, k.day_window, k.month_window, k.idempotency(None),
                k.ledger, k.events, k.grants], k.shard

    def deduct_credits(
        self,
        user_id: str,
        reservation_id: str,
        amount: int,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        quantities: dict[str, int] | None = None,
    ) -> Call[DeductionResult]:
        """Settle a reservation with the actual amount (ducto's name; caps enforced here too)."""
        rid = check_id(reservation_id, "reservation_id")
        return self.debit(
            user_id, amount, reservation_id=rid, idempotency_key=idempotency_key, metadata=metadata,
            quantities=quantities,
        )

    def charge(
        self,
        user_id: str,
        amount: int,
        operation_type: str,
        idempotency_key: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        min_balance: int = 0,
        quantities: dict[str, int] | None = None,
    ) -> Call[DeductionResult]:
        """Check caps and balance and debit in one round trip, with no hold."""
        return self.debit(
            user_id, amount, operation_type=operation_type, idempotency_key=idempotency_key,
            metadata=metadata, min_balance=min_balance, quantities=quantities,
        )

    # request-rate limits

    def set_rate_limit(
        self, user_id: str, limit: int | None, period_seconds: float = 1.0, burst: int | None = None
    ) -> Call[None]:
        """Allow ``limit`` requests per ``period_seconds`` (GCRA), ``burst`` at once (default ``limit``).

        ``limit=None`` removes the limit. Checked by ``charge`` in the same script as caps and balance.
        """
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)
        value = ""
        if limit is not None:
            n = check_amount(limit, "limit", 1)
            b = n if burst is None else check_amount(burst, "burst", 1)
            value = f"{n}|{period_ms(period_seconds)}|{b}"
        args = [self._offset(), new_id(), USER, uid, value]
        return Call(self.scripts["set_rate_limit"], [k.account, k.ledger], args, lambda _r: None)

    def set_quantity_limit(
        self, user_id: str, quantity: str, limit: int | None, period_seconds: float = 60.0, model: str | None = None
    ) -> Call[None]:
        """Allow ``limit`` units of ``quantity`` (e.g. tokens) per ``period_seconds``, for ``model``
        only or (None) all models; ``limit=None`` removes it. Checked by ``charge`` and
        ``reserve_credits`` (with ``quantities=``) in the same script as caps and balance."""
        uid = check_id(user_id, "user_id")
        name = check_quantity_name(quantity)
        m = check_label(model, "model") if model else ""
        if "|" in m or ";" in m:
            raise InvalidInputError("model", "must not contain '|' or ';'")
        value = ""
        if limit is not None:
            value = f"{check_amount(limit, 'limit', 1)}|{period_ms(period_seconds)}"
        k = self.keys.user(uid)
        args = [self._offset(), new_id(), USER, uid, name, m, value]
        return Call(self.scripts["set_quantity_limit"], [k.account, k.ledger], args, lambda _r: None)

    def hit_rate_limit(self, user_id: str) -> Call[RateLimitResult]:
        """Admit one request against the user's rate limit without moving money."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)

        def parse(raw: Any) -> RateLimitResult:
            r = _reply(raw, 4)
            return construct(RateLimitResult,
                user_id=uid, allowed=r[0] == "ok", retry_after_ms=int(r[2]),
                remaining=int(r[3]) if r[3] else None, error=_err(r[0]),
            )

        return Call(self.scripts["hit_rate_limit"], [k.account], [self._offset()], parse)

    # spend caps

    def set_spend_cap(self, cap: SpendCap, *, remove: bool = False, account_kind: str = USER) -> Call[None]:
        """Set (or remove) a user's (or, with ``account_kind="t"``, a team's) daily or monthly cap."""
        if not isinstance(cap, SpendCap):
            raise InvalidInputError("cap", f"must be a SpendCap, got {type(cap).__name__}")
        uid = check_id(cap.user_id, "user_id" if account_kind == USER else "team_id")
        limit = check_amount(cap.limit, "limit", 0)
        model = check_label(cap.model, "model") if cap.model else ""
        period = check_choice(cap.cap_type, "cap_type", ("daily", "monthly"))
        action = check_choice(cap.action, "action", ("deny", "warn", "notify"))
        k = self.keys.user(uid) if account_kind == USER else self.keys.team(uid)
        field = ("d" if period == "daily" else "m") + (f"|{model}" if model else "")
        value = "" if remove else f"{limit}|{action}"
        record = {"user_id": uid, "cap_type": period, "model": model or None, "limit": limit, "action": action}
        args = [self._offset(), new_id(), account_kind, uid, field, value, json.dumps(record, separators=(",", ":"))]
        return Call(self.scripts["set_cap"], [k.caps, k.ledger], args, lambda _r: None)

    def set_team_spend_cap(
        self, team_id: str, cap_type: str, limit: int, action: str, model: str | None
    ) -> Call[None]:
        """A team's cap: the same record as a user's, its errors naming ``team_id``."""
        tid = check_id(team_id, "team_id")
        cap = SpendCap(user_id=tid, cap_type=cap_type, limit=limit, action=action, model=model)
        return self.set_spend_cap(cap, account_kind=TEAM)

    def check_spend_cap(
        self, user_id: str, model: str | None = None, amount: int | None = None
    ) -> Call[CapCheckResult]:
        """Would ``amount`` (or one more credit, without an amount) be refused? Real spend and limit."""
        uid = check_id(user_id, "user_id")
        m = check_label(model, "model") if model else ""
        amt = "" if amount is None else str(check_amount(amount, "amount", 0))
        k = self.keys.user(uid)

        def parse(raw: Any) -> CapCheckResult:
            r = _reply(raw, 8)
            return construct(CapCheckResult,
                capped=r[2] == "1", current_spend=int(r[3]), cap_limit=int(r[4]), action=r[5] or None,
                model=r[6] or None, cap_type=r[7] or None,
            )

        return Call(
            self.scripts["check_cap"], [k.caps, k.day_window, k.month_window], [self._offset(), m, amt], parse
        )
