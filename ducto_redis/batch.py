"""Batched decisions: many calls in one round trip, one script call per shard (hash slot).

Calls whose script has a "many" twin (``debit`` → ``debit_many``) are grouped by shard tag and
packed into one call of the twin; any other call is sent as it is. Every decision stays
all-or-nothing on its own and decisions on one account run in the order given. The shells send
the resulting calls in one pipeline (sync) or one pipeline (async).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from operator import itemgetter
from typing import Any, Generic, TypeVar

from .core import Call, StoreCore
from .errors import InvalidInputError
from .scripts import Script

T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class Twin:
    """How decisions of one script are packed into its "many" twin.

    ``shared_keys`` / ``shared_args``: 0-based positions of the single script's KEYS / ARGV whose
    values are the same for every decision of one shard (its streams, the clock offset, TTLs, ...):
    a compact twin receives them once per call, with a layout saying which positions they are.
    Without shared positions the twin takes every decision's full KEYS and ARGV.
    """

    name: str
    shared_keys: frozenset[int] = frozenset()
    shared_args: frozenset[int] = frozenset()


MAX_LAYOUT_POSITIONS = 255  # a layout names positions with one byte each


MANY_TWINS: dict[str, Twin] = {
    # debit.lua: KEYS 8-9 the shard's ledger and events streams; ARGV 1 clock offset, 11 idempotency
    # TTL, 12 events max length, 14 account kind, 15-16 ledger backlog limit and policy, 17 refund window
    "debit": Twin("debit_many", frozenset({7, 8}), frozenset({0, 10, 11, 13, 14, 15, 16})),
    "pool_debit": Twin("pool_debit_many"),
}

MAX_DECISIONS_PER_CALL = 256


@dataclass(slots=True)
class ChargeRequest:
    """One decision of :meth:`RedisStore.charge_many` (the arguments of ``charge``)."""

    user_id: str
    amount: int
    operation_type: str
    idempotency_key: str | None = None
    metadata: Any = None
    min_balance: int = 0
    quantities: dict[str, int] | None = None


R = TypeVar("R", "ChargeRequest", "TeamDebitRequest")


def _request_error(cls: type[Any], req: Mapping[Any, Any], i: int) -> InvalidInputError:
    """What is wrong with a mapping ``cls(**req)`` refused: an unknown field, or a missing one."""
    names = [f.name for f in fields(cls)]
    unknown = [k for k in req if k not in names]
    if unknown:
        return InvalidInputError(f"requests[{i}]", f"unknown field {unknown[0]!r} (fields: {', '.join(names)})")
    missing = next(f.name for f in fields(cls) if f.default is MISSING and f.name not in req)
    return InvalidInputError(f"requests[{i}].{missing}", "is required")


def _each(cls: type[R], requests: object, build: Callable[[R], Call[Any]]) -> list[Call[Any]]:
    """Every request as ``cls`` (a mapping of its fields, or one), each validated by ``build`` before
    anything is sent: a bad one raises :class:`InvalidInputError` naming ``requests[i].<field>``."""
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        raise InvalidInputError("requests", f"must be a list of requests, got {type(requests).__name__}")
    calls: list[Call[Any]] = []
    for i, req in enumerate(requests):
        if isinstance(req, Mapping):
            try:
                req = cls(**req)
            except TypeError:  # an unknown or a missing field: said by name, not as a TypeError
                raise _request_error(cls, req, i) from None
        elif not isinstance(req, cls):
            got = type(req).__name__
            raise InvalidInputError(f"requests[{i}]", f"must be a {cls.__name__} or a mapping, got {got}")
        try:
            calls.append(build(req))
        except InvalidInputError as exc:
            raise InvalidInputError(f"requests[{i}].{exc.field}", exc.message) from exc
    return calls


def charge_calls(core: StoreCore, requests: Sequence[ChargeRequest | Mapping[str, Any]]) -> list[Call[Any]]:
    """Validate every request (raising before anything is sent) and build its charge call."""
    return _each(ChargeRequest, requests, lambda r: core.charge(
        r.user_id, r.amount, r.operation_type, r.idempotency_key, r.metadata, r.min_balance, r.quantities))


@dataclass(slots=True)
class TeamDebitRequest:
    """One decision of :meth:`RedisStore.deduct_team_many` (the arguments of ``deduct_team``)."""

    team_id: str
    user_id: str
    amount: int
    metadata: Any = None
    idempotency_key: str | None = None


def team_debit_calls(core: StoreCore, requests: Sequence[TeamDebitRequest | Mapping[str, Any]]) -> list[Call[Any]]:
    """Validate every request (raising before anything is sent) and build its deduct_team call."""
    return _each(TeamDebitRequest, requests, lambda r: core.teams.deduct_team(
        r.team_id, r.user_id, r.amount, r.metadata, r.idempotency_key))


def _identity(raw: Any) -> Any:
    return raw


def _none(_values: Any) -> None:
    return None


def _picker(positions: list[int], size: int) -> Callable[[list[Any]], Any]:
    """A fast function returning the values at ``positions`` of a list of length ``size``."""
    if positions == list(range(size)):
        return _identity
    if not positions:
        return _none
    if len(positions) == 1:
        p = positions[0]
        return lambda values: (values[p],)
    return itemgetter(*positions)


@dataclass(frozen=True, slots=True, eq=False)  # one per (twin, sizes): compared and hashed by identity
class _Layout:
    """A twin's packing for one (keys, args) size: shared positions, the layout header, pickers."""

    twin: Twin
    header: list[str]
    shared_keys: Callable[[list[Any]], Any]
    shared_args: Callable[[list[Any]], Any]
    own_keys: Callable[[list[Any]], Any]
    own_args: Callable[[list[Any]], Any]


_LAYOUTS: dict[tuple[str, int, int], _Layout] = {}


def _layout(name: str, nk: int, na: int) -> _Layout:
    got = _LAYOUTS.get((name, nk, na))
    if got is not None:
        return got
    twin = MANY_TWINS[name]
    if twin.shared_args and max(nk, na) > MAX_LAYOUT_POSITIONS:
        raise ValueError(f"{name}: at most {MAX_LAYOUT_POSITIONS} KEYS and ARGV positions can be packed")
    sk = sorted(p for p in twin.shared_keys if p < nk)
    sa = sorted(p for p in twin.shared_args if p < na)
    ok = [p for p in range(nk) if p not in sk]
    oa = [p for p in range(na) if p not in sa]
    # the twin's layout header: positions as one byte each (value = 1-based position)
    header = ["".join(chr(p + 1) for p in positions) for positions in (ok, sk, oa, sa)]
    layout = _Layout(
        twin, header if sk or sa else [], _picker(sk, nk) if sk else _none, _picker(sa, na) if sa else _none,
        _picker(ok, nk), _picker(oa, na),
    )
    _LAYOUTS[(name, nk, na)] = layout
    return layout


class Batch(Generic[T]):
    """A list of calls rearranged into as few script calls as their shards allow."""

    def __init__(self, calls: Sequence[Call[T]], scripts: dict[str, Script]) -> None:
        self.decisions = list(calls)
        self.calls: list[Call[Any]] = []
        # per decision: (index in calls, position in a packed reply or None), None without a call
        self._slots: list[tuple[int, int | None] | None] = [None] * len(self.decisions)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, call in enumerate(self.decisions):
            script = call.script
            if script is None:
                continue
            name = script.name
            if name not in MANY_TWINS:
                self._slots[i] = (len(self.calls), None)
                self.calls.append(call)
                continue
            keys, args = call.keys, call.args
            layout = _layout(name, len(keys), len(args))
            k0 = keys[0]
            # decisions share a call only if their shared values are equal (always so within one store)
            group = (layout, k0[: k0.index("}") + 1], layout.shared_keys(keys), layout.shared_args(args))
            members = groups.get(group)
            if members is None:
                groups[group] = [i]
            else:
                members.append(i)
        for (layout, _tag, shared_keys, shared_args), members in groups.items():
            twin_script = scripts[layout.twin.name]
            own_keys, own_args = layout.own_keys, layout.own_args
            head_keys = list(shared_keys or ())
            head_args = [*layout.header, *(shared_args or ())]
            for start in range(0, len(members), MAX_DECISIONS_PER_CALL):
                chunk = members[start : start + MAX_DECISIONS_PER_CALL]
                keys = list(head_keys)
                args = list(head_args)
                index = len(self.calls)
                for pos, i in enumerate(chunk):
                    d = self.decisions[i]
                    keys.extend(own_keys(d.keys))
                    args.extend(own_args(d.args))
                    self._slots[i] = (index, pos)
                self.calls.append(Call(twin_script, keys, args, _identity))

    def assemble(self, replies: Sequence[Any]) -> list[T]:
        """Results in the order of the decisions, from the replies of :attr:`calls`."""
        out: list[T] = []
        for call, slot in zip(self.decisions, self._slots, strict=True):
            if slot is None:
                out.append(call.parse(None))
            elif slot[1] is None:
                out.append(call.parse(replies[slot[0]]))
            else:
                out.append(call.parse(replies[slot[0]][slot[1]]))
        return out
