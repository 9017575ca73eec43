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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import InvalidInputError, ScriptReplyError
from .keys import TEAM, USER, AccountKeys, KeySchema
from .layout import cap_text, copy_escape, fragment, tx_id
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


def ready(result: T) -> Call[T]:
    """A call that needs no Redis round trip."""
    return Call(None, [], [], lambda _r: result)


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
    """A script's table reply as strings (at least ``size`` of them)."""
    if not isinstance(raw, list) or len(raw) < size:
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    if isinstance(raw[0], str):  # a decoding client: every element is already str
        return raw
    return [_s(v) for v in raw]


def _parts(raw: Any, size: int) -> list[str]:
    """A script's one-string reply ("status|idempotent|...") split into at least ``size`` fields.

    A reply's last field may be free text (a plan id, a role): it is split off once, whole."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if not isinstance(text, str):
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    r = text.split("|", size - 1)
    if len(r) < size:
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    return r


def _err(status: str) -> str | None:
    return None if status == "ok" else status


class _Ids:
    """Unique ids without a syscall per id: a random per-process prefix and a counter.

    ``next`` gives UUID-shaped ids (reservations, credits, config entries); ``call`` gives the
    20-hex-digit id of one script call, which the scripts remember per account to refuse a call
    that arrives twice. The prefixes are drawn anew in a forked child, so two processes never
    share them, and the call prefix again whenever its counter wraps.
    """

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        h = uuid.uuid4().hex
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-"
        self.counter = itertools.count(int(h[20:32], 16) >> 8)
        self.call_prefix = uuid.uuid4().hex[:12]
        self.calls = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"

    def call(self) -> str:
        n = next(self.calls)
        if n > 0xFFFFFFFF:
            self.call_prefix, self.calls = uuid.uuid4().hex[:12], itertools.count(1)
            n = 0
        return f"{self.call_prefix}{n:08x}"


_IDS = _Ids()


def new_id() -> str:
    """A fresh UUID-shaped id (reservations, credits, config entries)."""
    return _IDS.next()


def new_call_id() -> str:
    """A fresh call id (see :class:`_Ids`): one per script call that changes an account."""
    return _IDS.call()


def tx_of(shard: int, ref: str) -> str:
    """The transaction id of a reply's ``<entry>/<row>`` reference ("" when the call wrote no row)."""
    if not ref:
        return ""
    entry, _, row = ref.partition("/")
    return tx_id(shard, entry, int(row or 0))


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


@dataclass(frozen=True, slots=True)
class DebitKeys:
    """What a user's debit needs that depends only on the user: its KEYS and its escaped id."""

    account: str
    grants: str
    no_idem: str  # the never-written idempotency key name: "no key"
    ledger: str
    events: str
    shard: int
    escaped_id: str  # the id as COPY text, for the row's fragment


class StoreCore:
    """Everything a store does except I/O: builds :class:`Call` objects for each operation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeySchema(settings.namespace, settings.shards)
        self.scripts = scripts()
        self.clock_offset_ms = 0
        self._config_of: tuple[int, str] = (-1, "")
        from .team_ops import TeamOps  # the team calls share this core (keys, scripts, settings)

        self.teams = TeamOps(self)
        from .refund_ops import RefundOps  # refunds and expiring-credit sweeps share this core too

        self.refunds = RefundOps(self)
        self._hold_ttl_ms = settings.hold_ttl_seconds * 1000
        # a debit's per-user KEYS and escaped id, for the hot accounts only (~0.5 kB each)
        self.debit_keys = lru_cache(maxsize=8192)(self._debit_keys)

    # helpers

    def config(self) -> str:
        """Every script's configuration argument (lua/lib/01_base.lua ``config``):
        ``offset|idempotency TTL s|events max length|ledger backlog limit|policy``."""
        offset, text = self._config_of
        if offset != self.clock_offset_ms:
            s = self.settings
            text = (f"{self.clock_offset_ms}|{s.idempotency_ttl_seconds}|{s.events_maxlen}|{s.ledger_max_backlog}|"
                    f"{s.ledger_backlog_policy}")
            self._config_of = (self.clock_offset_ms, text)
        return text

    def _idem(self, k: AccountKeys, key: str | None) -> str:
        """The idempotency KEYS entry: the key's record, or the account's never-written name."""
        return k.idempotency(key)

    def _debit_keys(self, uid: str) -> DebitKeys:
        k = self.keys.user(uid)
        return DebitKeys(k.account, k.grants, k.idempotency(None), k.ledger, k.events, k.shard, copy_escape(uid))

    # health

    def health_probes(self) -> list[Call[bool]]:
        """One read-only balance script call per shard: a real script round trip on every node."""
        calls: list[Call[bool]] = []
        for shard in range(self.keys.shards):
            k = self.keys.probe(shard)
            calls.append(Call(self.scripts["balance"], [k.account, k.grants], [self.config()],
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

        return Call(self.scripts["balance"], [k.account, k.grants], [self.config()], parse)

    def user_exists(self, user_id: str) -> Call[bool]:
        """Whether a user record exists (made by any credit, even of 0)."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)
        return Call(self.scripts["balance"], [k.account, k.grants], [self.config()],
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

        def parse(raw_reply: Any) -> AddCreditsResult:
            r = _parts(raw_reply, 6)
            if r[0] == "team_not_found":
                raise InvalidInputError("team_id", f"no team {uid!r}; nothing was written")
            if r[0] != "ok":
                raise InvalidInputError("amount", "would push the balance past 2**53-1; nothing was written")
            return construct(AddCreditsResult,
                transaction_id=r[2], user_id=uid, amount=int(r[3]), new_balance=int(r[4]),
                lifetime_purchased=int(r[5]), idempotent=r[1] == "1",
            )

        frag = fragment(ak=account_kind, acct=uid, type=tx_type, idem=ikey or "", meta=metadata_json(meta))
        args = [
            new_call_id(), new_id(), str(n), "1" if tx_type in PURCHASE_TYPES else "0", frag,
            "" if expires_at_ms is None else str(expires_at_ms), "1" if account_kind != USER else "0", self.config(),
        ]
        keys = [k.account, self._idem(k, ikey), k.ledger, k.grants, k.grant_index]
        return Call(self.scripts["add_credits"], keys, args, parse)

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
        rid = new_id()

        def parse(raw_reply: Any) -> ReserveResult:
            r = _parts(raw_reply, 9)
            return construct(ReserveResult,
                reservation_id=r[2], user_id=uid, amount=int(r[3]), balance=int(r[4]),
                reserved_total=int(r[5]), expires_at_ms=int(r[6]), error=_err(r[0]), idempotent=r[1] == "1",
                retry_after_ms=int(r[7]), rate_limit_remaining=int(r[8]) if r[8] else None,
            )

        frag = fragment(op=op, acct=uid, rid=rid, model=model, idem=ikey or "", meta=metadata_json(meta))
        args = [new_call_id(), rid, str(n), str(floor), str(ttl_ms), op, frag, "1" if rate_limit else "0", qs, model,
                self.config()]
        return Call(self.scripts["reserve"], [k.account, self._idem(k, ikey), k.ledger, k.grants], args, parse)

    def release_reservation(
        self, user_id: str, reservation_id: str, idempotency_key: str | None = None
    ) -> Call[ReleaseResult]:
        """Give a hold back without spending it."""
        uid = check_id(user_id, "user_id")
        rid = check_id(reservation_id, "reservation_id")
        ikey = check_idempotency_key(idempotency_key)
        k = self.keys.user(uid)

        def parse(raw_reply: Any) -> ReleaseResult:
            r = _parts(raw_reply, 6)
            return construct(ReleaseResult,
                reservation_id=rid, user_id=uid, amount=int(r[3]), balance=int(r[4]), held=int(r[5]),
                idempotent=r[1] == "1", error=_err(r[0]),
            )

        frag = fragment(acct=uid, rid=rid, idem=ikey or "")
        args = [new_call_id(), new_id(), rid, frag, self.config()]
        return Call(self.scripts["release"], [k.account, self._idem(k, ikey), k.ledger, k.grants], args, parse)

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
        dk = self.debit_keys(uid)
        shard = dk.shard
        idem = dk.no_idem if ikey is None else self.keys.user(uid).idempotency(ikey)

        def parse(raw_reply: Any) -> DeductionResult:
            r = _parts(raw_reply, 9)
            return deduction_result(
                tx_of(shard, r[2]), uid, -int(r[3]), int(r[4]), r[1] == "1", None if r[0] == "ok" else r[0],
                r[6] or None, int(r[7]), int(r[8]) if r[8] else None,
            )

        e = copy_escape
        frag = (f"\t{e(op)}\tu\t{dk.escaped_id}\t\t{e(reservation_id)}\t{e(model)}\t\t{e(ikey) if ikey else ''}"
                f"\t{e(metadata_json(meta))}")
        args = [new_call_id(), str(n), model, str(floor), frag, reservation_id, qs, self.config()]
        return Call(self.scripts["debit"], [dk.account, dk.grants, idem, dk.ledger, dk.events], args, parse)

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
            value = f"{n},{period_ms(period_seconds)},{b}"
        frag = fragment(op="rate_limit_set" if value else "rate_limit_removed", acct=uid, meta=json.dumps(
            {"limit": limit, "period_ms": period_ms(period_seconds), "burst": burst} if value else {}))
        args = [new_id(), value, frag, self.config()]
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
        args = [new_id(), uid, name, m, value, self.config()]
        return Call(self.scripts["set_quantity_limit"], [k.account, k.ledger], args, lambda _r: None)

    def hit_rate_limit(self, user_id: str) -> Call[RateLimitResult]:
        """Admit one request against the user's rate limit without moving money."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)

        def parse(raw: Any) -> RateLimitResult:
            r = _parts(raw, 4)
            return construct(RateLimitResult,
                user_id=uid, allowed=r[0] == "ok", retry_after_ms=int(r[2]),
                remaining=int(r[3]) if r[3] else None, error=_err(r[0]),
            )

        return Call(self.scripts["hit_rate_limit"], [k.account], [self.config()], parse)

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
        record = {"user_id": uid, "cap_type": period, "model": model or None, "limit": limit, "action": action}
        frag = fragment(op="cap_removed" if remove else "cap_set", ak=account_kind, acct=uid, model=model,
                        meta=json.dumps(record, separators=(",", ":")))
        args = [new_id(), "d" if period == "daily" else "m", model, "" if remove else cap_text(limit, action), frag,
                self.config()]
        return Call(self.scripts["set_cap"], [k.account, k.ledger], args, lambda _r: None)

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

        return Call(self.scripts["check_cap"], [k.account], [m, amt, self.config()], parse)
