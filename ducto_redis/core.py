"""The core every store method shares: validation, key selection, argument packing and reply parsing.

A store method (written once, in an operation mixin: see ``methods.py``) builds a :class:`Call` (which
script, KEYS, ARGV and how to read the reply) with this module's helpers and :class:`StoreCore`; each
store runs it with its own I/O: the sync store with a redis-py client, the async store with
redis.asyncio, the memory stores over an in-process fakeredis. No rule lives in a store shell.
Invalid input never reaches Redis: either an :class:`InvalidInputError` naming the field is
raised (wrong type), or the call carries a ready result with an error code (out of range).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import InvalidInputError, ScriptReplyError
from .keys import USER, KeySchema, LeftOutKeys
from .layout import cap_text, copy_escape, fragment, tx_ref_id
from .models import (
    AddCreditsResult,
    CreditMetadata,
    DeductionResult,
    SpendCap,
)
from .scripts import Script, scripts
from .settings import Settings, script_config
from .specs import ADD_CREDITS, BALANCE, DEBIT, DEBIT_MANY, POOL_DEBIT, SET_CAP, SHAPE, SHAPE_CHARS, ScriptSpec
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
    widen: Callable[[Call[T]], Call[T]] | None = None
    """A lean call's (a debit sent with only its account and ledger KEYS): ``widen(call)`` is the same
    call (same call id and ARGV) with every KEY, what connect.py ``_plan`` sends when Redis answers that
    its decision needs them (:data:`~ducto_redis.scripts.KEYS_SHORT`: it did not run)."""


def ready(result: T) -> Call[T]:
    """A call that needs no Redis round trip."""
    return Call(None, [], [], lambda _r: result)


class Deferred(Sequence[Call[T]]):
    """Calls validated but not built yet. A batch validates every decision before it sends any, so a
    bad one raises with nothing written, and writes each shard's script call only as it sends it,
    while Redis runs the calls written before it (batch.py :class:`~ducto_redis.batch.Batch`): a
    decision alone in its shard as its own call, built from its input the first time it is asked for
    (``build``), the decisions of a shard together as one call of the batched :attr:`twin`, written
    straight from their inputs (``pack``: none of their own calls is built). Either is kept once
    made, so the same decisions sent again are the same calls, with the same call ids.

    Every input of one can share a twin call with any other of the same shard (``shard(input)``):
    the same script, the same shared values.
    """

    __slots__ = ("_calls", "_packed", "build", "inputs", "pack", "parser", "shard_of", "twin")

    def __init__(self, inputs: list[Any], build: Callable[[Any], Call[T]], shard: Callable[[Any], int], *,
                 twin: str, pack: Callable[[list[Any]], tuple[list[str], list[str]]],
                 parser: Callable[[Any], Callable[[Any], T]]) -> None:
        self.inputs = inputs
        self.build = build
        self.shard_of = shard
        self.twin = twin
        """The batched script (its spec's name) whose one call decides a shard's decisions together."""
        self.pack = pack
        """The KEYS and ARGV of one :attr:`twin` call deciding these inputs (of one shard, in order),
        written from the inputs themselves."""
        self.parser = parser
        """How an input's decision reads its reply (its own call's ``parse``, without building it)."""
        self._calls: list[Call[T] | None] = [None] * len(inputs)
        self._packed: dict[tuple[int, ...], tuple[list[str], list[str]]] = {}

    def __len__(self) -> int:
        return len(self.inputs)

    @overload
    def __getitem__(self, i: int) -> Call[T]: ...
    @overload
    def __getitem__(self, i: slice) -> list[Call[T]]: ...
    def __getitem__(self, i: int | slice) -> Call[T] | list[Call[T]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.inputs)))]
        call = self._calls[i]
        if call is None:
            call = self._calls[i] = self.build(self.inputs[i])
        return call

    def shards(self) -> list[int]:
        """The shard of every decision, in order, without building their calls."""
        return list(map(self.shard_of, self.inputs))

    def packed(self, chunk: list[int]) -> tuple[list[str], list[str]]:
        """The KEYS and ARGV of the :attr:`twin` call deciding these decisions (of one shard, in
        order), written the first time it is asked for and kept, like a built call: the same
        decisions sent again are sent with the same call ids, and answered as replays."""
        key = tuple(chunk)
        parts = self._packed.get(key)
        if parts is None:
            inputs = self.inputs
            parts = self._packed[key] = self.pack([inputs[i] for i in chunk])
        return parts

    def parse_of(self, i: int) -> Callable[[Any], T]:
        """How decision ``i`` reads its reply (built or not)."""
        call = self._calls[i]
        return call.parse if call is not None else self.parser(self.inputs[i])


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


def table_reply(raw: Any, size: int) -> list[str]:
    """A script's table reply as strings (at least ``size`` of them)."""
    if not isinstance(raw, list) or len(raw) < size:
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    if isinstance(raw[0], str):  # a decoding client: every element is already str
        return raw
    return [_s(v) for v in raw]


def split_reply(raw: Any, size: int, added: int | None = None) -> list[str]:
    """A script's one-string reply ("status|idempotent|...") split into at least ``size`` fields.

    A reply's last field may be free text (a plan id, a role): it is split off once, whole.
    ``added``: the position of a field the reply gained (``limit``, 2026-11-30); a reply remembered
    under an idempotency key before that (kept up to a day) lacks it, and reads as ``""`` there."""
    if type(raw) is str:  # a decoding client's (the common case first)
        text = raw
    else:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if not isinstance(text, str):
            raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    r = text.split("|", size - 1)
    if len(r) == size - 1 and added is not None:
        r = text.split("|", size - 2)
        r.insert(added, "")
    if len(r) < size:
        raise ScriptReplyError(f"unexpected script reply: {raw!r}")
    return r


def error_code(status: str) -> str | None:
    """A reply's status as a result's ``error``: None for "ok", else the error code."""
    return None if status == "ok" else status


# Reply fields by name (ducto_redis/specs.py): ``r[_D.ref]`` costs what ``r[2]`` did.
_D = DEBIT.reply.pos
_DEBIT_SIZE = DEBIT.reply.size
# a debit's reply is unpacked by position (debit_parser): its fields must be these, in this order
if DEBIT.reply.names != ("status", "idempotent", "ref", "amount", "balance", "held", "cap", "retry", "remaining",
                         "limit"):
    raise ValueError(f"debit's reply ({DEBIT.reply.text()}) is not the one debit_parser reads")


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
        # n < 2**32: its 8 hex digits are hex()'s after "0x1" (a third cheaper than "%08x" % n)
        return self.call_prefix + hex(n | 0x100000000)[3:]


_IDS = _Ids()


def new_id() -> str:
    """A fresh UUID-shaped id (reservations, credits, config entries)."""
    return _IDS.next()


def new_call_id() -> str:
    """A fresh call id (see :class:`_Ids`): one per script call that changes an account."""
    return _IDS.call()


tx_of = tx_ref_id
"""The transaction id of a reply's ``<entry>/<row>`` reference ("" when the call wrote no row)."""


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
    _set_dict(obj, {**defaults, **values})
    _set_fields(obj, set(values))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


_new = object.__new__
# BaseModel's four slots set through their own descriptors: a fifth cheaper than object.__setattr__
# (which looks each up by name first); what BaseModel.model_construct sets, in its order
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_DEDUCTION_FIELDS = frozenset(DeductionResult.model_fields)


def deduction_result(
    transaction_id: str, user_id: str, amount: int, balance_after: int, idempotent: bool, error: str | None,
    cap_action: str | None, retry_after_ms: int, rate_limit_remaining: int | None, rate_limit_limit: int | None,
) -> DeductionResult:
    """A :class:`DeductionResult` from a trusted script reply, every field set (the hot path's builder).

    Equal to the validated model with the same values (same ``__dict__`` in declaration order, every
    field in the fields set) at about half the cost of :func:`construct`.
    """
    obj = _new(DeductionResult)
    _set_dict(obj, {
        "transaction_id": transaction_id, "user_id": user_id, "amount": amount, "balance_after": balance_after,
        "idempotent": idempotent, "error": error, "cap_action": cap_action, "retry_after_ms": retry_after_ms,
        "rate_limit_remaining": rate_limit_remaining, "rate_limit_limit": rate_limit_limit,
    })
    _set_fields(obj, set(_DEDUCTION_FIELDS))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


# ── the core ──────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class DebitKeys:
    """What a user's debit needs that depends only on the user: its KEYS and its escaped id."""

    keys: tuple[str, ...]  # debit.lua's lean KEYS: account ledger
    full: tuple[str, ...]  # and every optional one, the never-written "no idempotency key" name last
    shard: int
    escaped_id: str  # the id as COPY text, for the row's fragment
    parse: Callable[[Any], DeductionResult] = field(compare=False)  # its debit replies' reader (debit_parser)


DebitInput = tuple[str, int, str, int, str, "str | None", str, str, str, "DebitKeys"]
"""A debit's arguments validated (:meth:`StoreCore.debit_input`): user id, amount, operation type,
min balance, metadata as its JSON text ("": none), idempotency key, model, quantities (as their
ARGV text), reservation id, and the user's :class:`DebitKeys` (its shard among them)."""


def debit_frag(d: DebitInput) -> str:
    """A validated debit's ledger row fragment (its fields after the amounts: operation, account,
    reservation, model, idempotency key, metadata), each escaped only when there is something to
    escape (a plain charge has no reservation, model or key)."""
    _uid, _n, op, _floor, meta_json, ikey, model, _qs, reservation_id, dk = d
    e = copy_escape
    return (f"\t{e(op)}\tu\t{dk.escaped_id}\t\t{e(reservation_id) if reservation_id else ''}"
            f"\t{e(model) if model else ''}\t\t{e(ikey) if ikey else ''}"
            f"\t{e(meta_json) if meta_json else ''}")


# debit_many's layout as StoreCore.debit_many_parts writes it (from a debit's full KEYS, DebitKeys.full):
# checked against the two specs here, so a change to either fails at import, not on the wire
if (DEBIT_MANY.keys.names, DEBIT_MANY.keys.each, DEBIT_MANY.keys.each_optional) != (
        ("ledger", "events"), ("account", "grants", "idem"), 1) or (
        DEBIT_MANY.args.names, DEBIT_MANY.args.each, DEBIT_MANY.args.each_optional) != (
        ("config", SHAPE), ("cid", "amount", "frag", "model", "floor", "quantities"), 3):
    raise ValueError(f"debit_many's layout ({DEBIT_MANY.keys.text()}; {DEBIT_MANY.args.text()}) is not "
                     "the one StoreCore.debit_many_parts writes")
_MANY_HEAD = itemgetter(DEBIT.keys.at("ledger"), DEBIT.keys.at("events"))
_MANY_OWN = itemgetter(DEBIT.keys.at("account"), DEBIT.keys.at("grants"))
_MANY_SHAPE = DEBIT_MANY.args.names.index(SHAPE)


def debit_parser(shard: int, uid: str) -> Callable[[Any], DeductionResult]:
    """How a debit reply (debit.lua's, or one line of debit_many.lua's) of user ``uid`` in ``shard``
    reads as its :class:`DeductionResult`: one function per user (:class:`DebitKeys`), not per call."""

    def parse(raw_reply: Any) -> DeductionResult:
        r = raw_reply.split("|") if type(raw_reply) is str else None  # (its fields are numbers and words)
        if r is None or len(r) != _DEBIT_SIZE:  # bytes, or an older reply (split_reply's rules)
            r = split_reply(raw_reply, _DEBIT_SIZE, _D.limit)
        status, idempotent, ref, amount, balance, _held, cap, retry, rate, limit = r
        # rate: '' when no rate limit was checked (then no limit either)
        return deduction_result(
            tx_of(shard, ref), uid, -int(amount), int(balance), idempotent == "1",
            None if status == "ok" else status, cap or None, int(retry),
            int(rate) if rate else None, int(limit) if rate else None,
        )

    return parse


WIDE_MAX = 65536
"""Accounts a store remembers as wide (see :class:`Widen`), the least recently widened forgotten first."""


class Widen:
    """``widen`` of a lean call of one script (:attr:`Call.widen`): the call with its optional KEYS
    put back (keys.py :class:`~ducto_redis.keys.LeftOutKeys`, the rule a "many" twin packs by), its
    account remembered in ``wide`` so that its later calls are built with every KEY at once (an
    account with expiring grants or a cap that fires must not pay two round trips per decision)."""

    __slots__ = ("left_out", "wide")

    def __init__(self, spec: ScriptSpec, wide: OrderedDict[str, None]) -> None:
        self.left_out = LeftOutKeys.of(spec.keys.names, spec.keys.optional, spec.name)
        self.wide = wide

    def __call__(self, call: Call[T]) -> Call[T]:
        account, wide = call.keys[0], self.wide
        wide.pop(account, None)  # (re)entered last: the most recently widened
        wide[account] = None
        while len(wide) > WIDE_MAX:
            try:
                wide.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break
        return Call(call.script, self.left_out.fill(call.keys), call.args, call.parse)


class StoreCore:
    """What every store method builds its calls with: keys, scripts, the configuration argument,
    and the call builders several methods share (a user's debit, a credit, a cap, a health probe).

    The store methods themselves are written once in the operation mixins (``accounts.py``,
    ``team_ops.py``, ``refund_ops.py``, ``plans.py``, ``operations.py``); see ``methods.py``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeySchema(settings.namespace, settings.shards)
        self.scripts = scripts()
        self.clock_offset_ms = 0
        self._config_of: tuple[int, str] = (-1, "")
        self._hold_ttl_ms = settings.hold_ttl_seconds * 1000
        # a debit's per-user KEYS and escaped id, for the hot accounts only (~0.5 kB each)
        self.debit_keys = lru_cache(maxsize=8192)(self._debit_keys)
        # account keys whose debits are built with every KEY (widened once: see Widen), at most WIDE_MAX
        self.wide: OrderedDict[str, None] = OrderedDict()
        self.widen_debit = Widen(DEBIT, self.wide)
        self.widen_team_debit = Widen(POOL_DEBIT, self.wide)

    # helpers

    def config(self) -> str:
        """Every script's configuration argument: :func:`~ducto_redis.settings.script_config` of the
        store's settings and clock offset ("" on the defaults)."""
        offset, text = self._config_of
        if offset != self.clock_offset_ms:
            text = script_config(self.settings, self.clock_offset_ms)
            self._config_of = (self.clock_offset_ms, text)
        return text

    def hold_ttl_ms(self, ttl_seconds: object) -> int:
        """A hold's time to live in ms: ``ttl_seconds`` (validated), else the settings' ``hold_ttl_seconds``."""
        return self._hold_ttl_ms if ttl_seconds is None else check_ttl_seconds(ttl_seconds) * 1000

    def min_balance(self, min_balance: object) -> int:
        """A hold's floor: ``min_balance`` (validated), else the settings' ``default_min_balance``."""
        return check_amount(self.settings.default_min_balance if min_balance is None else min_balance,
                            "min_balance", 0)

    def _debit_keys(self, uid: str) -> DebitKeys:
        k = self.keys.user(uid)
        lean = DEBIT.keys.pack(account=k.account, ledger=k.ledger, events="", grants="", idem="")
        full = DEBIT.keys.pack(account=k.account, ledger=k.ledger, events=k.events, grants=k.grants,
                               idem=k.idempotency(None))
        return DebitKeys(tuple(lean), tuple(full), k.shard, copy_escape(uid), debit_parser(k.shard, uid))

    # health

    def health_probes(self) -> list[Call[bool]]:
        """One read-only balance script call per shard: a real script round trip on every node."""
        calls: list[Call[bool]] = []
        for shard in range(self.keys.shards):
            k = self.keys.probe(shard)
            calls.append(Call(self.scripts["balance"], BALANCE.keys.pack(account=k.account, grants=k.grants),
                              BALANCE.args.pack(config=self.config()),
                              lambda raw: table_reply(raw, BALANCE.reply.size)[BALANCE.reply.pos.status] == "ok"))
        return calls

    # shared call builders

    def user_exists(self, user_id: str) -> Call[bool]:
        """Whether a user record exists (made by any credit, even of 0)."""
        uid = check_id(user_id, "user_id")
        k = self.keys.user(uid)
        return Call(self.scripts["balance"], BALANCE.keys.pack(account=k.account, grants=k.grants),
                    BALANCE.args.pack(config=self.config()),
                    lambda raw: table_reply(raw, BALANCE.reply.size)[BALANCE.reply.pos.exists] == "1")

    def credit(
        self, account_kind: str, account_id: str, amount: int, tx_type: str, metadata: object,
        expires_at_ms: int | None, idempotency_key: str | None,
    ) -> Call[AddCreditsResult]:
        """Credit a user's (``account_kind`` "u") or a team's ("t") account; 0 creates a user's record.
        Idempotent with a key (argument or metadata)."""
        uid = check_id(account_id, "team_id" if account_kind != USER else "user_id")
        n = check_amount(amount, "amount", 0)
        tx_type = check_label(tx_type, "type")
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        k = self.keys.user(uid) if account_kind == USER else self.keys.team(uid)

        def parse(raw_reply: Any) -> AddCreditsResult:
            r, f = split_reply(raw_reply, ADD_CREDITS.reply.size), ADD_CREDITS.reply.pos
            if r[f.status] == "team_not_found":
                raise InvalidInputError("team_id", f"no team {uid!r}; nothing was written")
            if r[f.status] != "ok":
                raise InvalidInputError("amount", "would push the balance past 2**53-1; nothing was written")
            return construct(AddCreditsResult,
                transaction_id=r[f.tx], user_id=uid, amount=int(r[f.amount]), new_balance=int(r[f.balance]),
                lifetime_purchased=int(r[f.life]), idempotent=r[f.idempotent] == "1",
            )

        frag = fragment(ak=account_kind, acct=uid, type=tx_type, idem=ikey or "", meta=metadata_json(meta))
        args = ADD_CREDITS.args.pack(
            cid=new_call_id(), tx=new_id(), amount=str(n), purchase="1" if tx_type in PURCHASE_TYPES else "0",
            frag=frag, expires="" if expires_at_ms is None else str(expires_at_ms),
            must_exist="1" if account_kind != USER else "0", config=self.config(),
        )
        keys = ADD_CREDITS.keys.pack(account=k.account, idem=k.idempotency(ikey), ledger=k.ledger, grants=k.grants,
                                     gindex=k.grant_index)
        return Call(self.scripts["add_credits"], keys, args, parse)

    def debit(self, user_id: str, amount: int, **options: Any) -> Call[DeductionResult]:
        """A debit's call: its arguments (:meth:`debit_input`'s) validated, then built (:meth:`debit_call`).
        (The store methods call the two themselves: passing the options on costs a charge ~0.4 µs.)"""
        return self.debit_call(self.debit_input(user_id, amount, **options))

    def debit_input(
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
    ) -> DebitInput:
        """Settle a reservation (``reservation_id``) or charge directly (caps checked in the same
        script): the arguments validated (an :class:`InvalidInputError` naming the field), not yet
        built into the call (:meth:`debit_call`). A batch validates every decision before it sends
        any, and builds each as it is sent (batch.py :func:`~ducto_redis.batch.charge_calls`).

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
        if metadata is None and idempotency_key is None:  # a plain charge: neither to check
            return (uid, n, op, floor, "", None, "", qs, reservation_id, self.debit_keys(uid))
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        model = check_label(meta.model, "metadata.model") if meta and meta.model else ""
        # its JSON checked here too (its size): building the call checks nothing
        return (uid, n, op, floor, metadata_json(meta), ikey, model, qs, reservation_id, self.debit_keys(uid))

    @staticmethod
    def debit_shard(d: DebitInput) -> int:
        """The shard of a validated debit's account (:meth:`debit_input`)."""
        return d[9].shard

    def debit_call(self, d: DebitInput) -> Call[DeductionResult]:
        """The call of a debit validated by :meth:`debit_input`."""
        uid, n, _op, floor, _meta_json, ikey, model, qs, reservation_id, dk = d
        widen: Widen | None = None
        if ikey is not None:  # every optional KEY, the idempotency key last
            keys = [*dk.full[:-1], self.keys.user(uid).idempotency(ikey)]
        elif dk.keys[0] in self.wide:  # widened before: every KEY at once
            keys = list(dk.full)
        else:  # lean: account ledger (widened if its decision needs more)
            keys, widen = list(dk.keys), self.widen_debit

        args = DEBIT.args.pack(cid=_IDS.call(), amount=str(n), frag=debit_frag(d), config=self.config(), model=model,
                               floor=str(floor) if floor else "", rid=reservation_id, quantities=qs)
        return Call(self.scripts["debit"], keys, args, dk.parse, widen)

    def debit_many_parts(self, ds: list[DebitInput]) -> tuple[list[str], list[str]]:
        """The KEYS and ARGV of one debit_many call deciding charges validated by :meth:`debit_input`
        (of one shard, in order; no settlement): what batch.py ``Batch._pack`` makes of their
        :meth:`debit_call` s, written straight from the values (a batch's decisions cost half as
        much to pack; tests/test_batched_decisions.py holds the two equal). Every decision sends its
        account and grants KEYS, its idempotency key only if it has one, its model, floor and
        quantities only if one is not empty; ``shape`` says which (specs.py SHAPE_CHARS)."""
        ledger, events = _MANY_HEAD(ds[0][9].full)
        keys, args, shape = [ledger, events], [self.config(), ""], []
        call, chars, own = _IDS.call, SHAPE_CHARS, _MANY_OWN
        for d in ds:
            uid, n, _op, floor, _meta, ikey, model, qs, rid, dk = d
            if rid:
                raise ValueError("a settlement is never packed into debit_many")
            keys += own(dk.full)
            bits = 0
            if ikey is not None:
                keys.append(self.keys.user(uid).idempotency(ikey))
                bits = 1
            args += (call(), str(n), debit_frag(d))
            if model or floor or qs:
                args += (model, str(floor) if floor else "", qs)
                bits += 2
            shape.append(chars[bits])
        args[_MANY_SHAPE] = "".join(shape)
        return keys, args

    @staticmethod
    def debit_parse(d: DebitInput) -> Callable[[Any], DeductionResult]:
        """How a validated debit's reply (:meth:`debit_input`) reads: its account's debit parser."""
        return d[9].parse

    def spend_cap(self, cap: SpendCap, account_kind: str, *, remove: bool = False) -> Call[None]:
        """Set (or remove) a user's (``account_kind`` "u") or a team's ("t") daily or monthly cap."""
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
        args = SET_CAP.args.pack(tx=new_id(), period="d" if period == "daily" else "m", model=model,
                                 value="" if remove else cap_text(limit, action), frag=frag, config=self.config())
        return Call(self.scripts["set_cap"], SET_CAP.keys.pack(account=k.account, ledger=k.ledger), args,
                    lambda _r: None)
