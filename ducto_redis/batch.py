"""Batched decisions: many calls in one round trip, one script call per shard (hash slot).

Calls whose script has a "many" twin (``debit`` → ``debit_many``) are grouped by shard tag and
packed into one call of the twin; any other call is sent as it is. Every decision stays
all-or-nothing on its own and decisions on one account run in the order given. The shells send
the resulting calls in one pipeline (sync) or one pipeline (async).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .core import Call, StoreCore
from .scripts import Script

T = TypeVar("T")

# script name -> (twin script name, keys per decision, args per decision)
MANY_TWINS: dict[str, tuple[str, int, int]] = {
    "debit": ("debit_many", 11, 17),
    "pool_debit": ("pool_debit_many", 14, 15),
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


def charge_calls(core: StoreCore, requests: Sequence[ChargeRequest | Mapping[str, Any]]) -> list[Call[Any]]:
    """Validate every request (raising before anything is sent) and build its charge call."""
    calls: list[Call[Any]] = []
    for req in requests:
        r = req if isinstance(req, ChargeRequest) else ChargeRequest(**req)
        calls.append(
            core.charge(r.user_id, r.amount, r.operation_type, r.idempotency_key, r.metadata, r.min_balance)
        )
    return calls


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
    calls: list[Call[Any]] = []
    for req in requests:
        r = req if isinstance(req, TeamDebitRequest) else TeamDebitRequest(**req)
        calls.append(core.teams.deduct_team(r.team_id, r.user_id, r.amount, r.metadata, r.idempotency_key))
    return calls


@dataclass(slots=True)
class _Slot:
    call_index: int
    position: int | None  # index inside a packed reply, None for an unpacked call


class Batch(Generic[T]):
    """A list of calls rearranged into as few script calls as their shards allow."""

    def __init__(self, calls: Sequence[Call[T]], scripts: dict[str, Script]) -> None:
        self.decisions = list(calls)
        self.calls: list[Call[Any]] = []
        self._slots: list[_Slot | None] = [None] * len(self.decisions)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, call in enumerate(self.decisions):
            if call.script is None:
                continue
            twin = MANY_TWINS.get(call.script.name)
            if twin is None:
                self._slots[i] = _Slot(len(self.calls), None)
                self.calls.append(call)
                continue
            tag = call.keys[0][: call.keys[0].index("}") + 1]
            groups.setdefault((call.script.name, tag), []).append(i)
        for (name, _tag), members in groups.items():
            twin_name = MANY_TWINS[name][0]
            for start in range(0, len(members), MAX_DECISIONS_PER_CALL):
                chunk = members[start : start + MAX_DECISIONS_PER_CALL]
                keys: list[str] = []
                args: list[Any] = []
                for pos, i in enumerate(chunk):
                    keys.extend(self.decisions[i].keys)
                    args.extend(self.decisions[i].args)
                    self._slots[i] = _Slot(len(self.calls), pos)
                self.calls.append(Call(scripts[twin_name], keys, args, lambda r: r))

    def assemble(self, replies: Sequence[Any]) -> list[T]:
        """Results in the order of the decisions, from the replies of :attr:`calls`."""
        out: list[T] = []
        for call, slot in zip(self.decisions, self._slots, strict=True):
            if slot is None:
                out.append(call.parse(None))
            elif slot.position is None:
                out.append(call.parse(replies[slot.call_index]))
            else:
                out.append(call.parse(replies[slot.call_index][slot.position]))
        return out
