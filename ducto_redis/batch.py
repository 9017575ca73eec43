"""Batched decisions: many calls in one round trip, one script call per shard (hash slot) and at
most 256 decisions; a call without a "many" twin is sent on its own, between the groups.

Calls whose script has a "many" twin (``debit`` → ``debit_many``) are grouped by shard tag and
packed into one call of the twin (the layout comes from both scripts' specs, ducto_redis/specs.py);
any other call is sent as it is. Every decision stays all-or-nothing on its own and decisions on
one account run in the order given. The stores write the resulting calls to Redis once per node,
each call at most once (connect.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from operator import itemgetter
from typing import Any, Generic, TypeVar

from .core import Call, Deferred, StoreCore
from .errors import InvalidInputError
from .keys import LeftOutKeys
from .models import DeductionResult
from .scripts import Script
from .specs import DEBIT, DEBIT_MANY, POOL_DEBIT, POOL_DEBIT_MANY, SHAPE, SHAPE_CHARS, Fields, ScriptSpec
from .team_ops import team_debit

T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class Twin:
    """How calls of one script are packed into its "many" twin, derived from the two specs by name.

    ``shared_keys`` / ``shared_args``: 0-based positions of the single script's KEYS / ARGV named in
    the twin's fixed part: their values are the same for every decision of one shard (its streams,
    the configuration) and are sent once, at the head of the twin's KEYS / ARGV (the twin's ``shape``
    ARGV among them, at ``shape_at``). ``own_keys`` / ``own_args``: the positions named in the twin's
    per-decision group, in the twin's order; the last ``own_keys_optional`` / ``own_args_optional``
    of them are the group's optional part (in brackets in the twin's spec), sent for a decision only
    when it has them: its KEYS there are not what the single script's left-out KEYS stand for (the
    never-written idempotency key), one of its ARGV there is not empty. Each decision's character of
    ``shape`` says which it sent (specs.SHAPE_CHARS). ``only``: (ARGV position, value) a call must
    have to be packed, a position then not sent: a settlement (a reservation id there) is sent on
    its own. A call that left out its optional ARGV (ducto_redis/specs.py) has "" there; one that
    left out its optional KEYS (a lean call: ``account ledger``) is given them by ``left_out``
    (keys.py, the rule a lean call is widened by): the shard's events stream, the account's grants
    hash, the never-written idempotency key.
    """

    name: str
    shared_keys: tuple[int, ...]
    own_keys: tuple[int, ...]
    shared_args: tuple[int, ...]
    own_args: tuple[int, ...]
    only: tuple[int, str]
    args: Fields
    """The single script's ARGV (a call may send fewer: its optional ones left out)."""
    keys_width: int
    """How many KEYS the single script has (a call may send fewer: its optional ones left out)."""
    left_out: LeftOutKeys = field(compare=False)
    """What a call's left-out optional KEYS stand for (a function of the KEYS: not compared)."""
    own_keys_optional: int = 0
    own_args_optional: int = 0
    shape_at: int = -1
    """The position of the twin's ``shape`` ARGV (-1: it has none, its groups have one width)."""

    @classmethod
    def of(cls, single: ScriptSpec, many: ScriptSpec, only: str, value: str) -> Twin:
        """The twin of ``single`` (ARGV ``only`` must be ``value`` to pack a call). Raises if a
        position of the single script would be neither shared, nor sent per decision, nor ``only``:
        no value of a call is ever dropped; or if a group's optional KEY is one no rule stands in for."""
        grouped = many.keys.each_optional or many.args.each_optional
        if grouped and SHAPE not in many.args.names:
            raise ValueError(f"{many.name} ARGV ({many.args.text()}): groups with optional fields need "
                             f"the {SHAPE!r} ARGV")
        shared_arg_names = tuple(n for n in many.args.names if not (grouped and n == SHAPE))
        for part, one, names, each in (("KEYS", single.keys, many.keys.names, many.keys.each),
                                       ("ARGV", single.args, shared_arg_names, many.args.each)):
            placed = {*names, *each, *((only,) if part == "ARGV" else ())}
            if set(one.names) != placed or len(placed) != len(names) + len(each) + (part == "ARGV"):
                twin = many.keys if part == "KEYS" else many.args
                raise ValueError(f"{many.name} {part} ({twin.text()}) must place each of {single.name}'s "
                                 f"({one.text()}) once")
        left_out = LeftOutKeys.of(single.keys.names, single.keys.optional, single.name)
        opt_keys = many.keys.each[len(many.keys.each) - many.keys.each_optional:]
        unmade = [n for n in opt_keys if single.keys.at(n) < left_out.required]
        if unmade:
            raise ValueError(f"{many.name} KEYS ({many.keys.text()}): the optional {unmade[0]!r} is not one of "
                             f"{single.name}'s optional KEYS ({single.keys.text()}): nothing stands in for it")
        return cls(many.name, tuple(single.keys.at(n) for n in many.keys.names),
                   tuple(single.keys.at(n) for n in many.keys.each),
                   tuple(single.args.at(n) for n in shared_arg_names),
                   tuple(single.args.at(n) for n in many.args.each), (single.args.at(only), value),
                   single.args, single.keys.size, left_out, many.keys.each_optional, many.args.each_optional,
                   many.args.names.index(SHAPE) if grouped else -1)


MANY_TWINS: dict[str, Twin] = {
    "debit": Twin.of(DEBIT, DEBIT_MANY, "rid", ""),
    "pool_debit": Twin.of(POOL_DEBIT, POOL_DEBIT_MANY, "rid", ""),
}

MAX_DECISIONS_PER_CALL = 256


def _picker(positions: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at ``positions`` of a list, as a tuple (one C call: ``operator.itemgetter``)."""
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    if not positions:
        return lambda values: ()
    pick: Callable[[Sequence[Any]], tuple[Any, ...]] = itemgetter(*positions)
    return pick


@dataclass(frozen=True, slots=True)
class _Picks:
    """A twin's positions as pickers, made once: a batch picks them for every decision."""

    twin: Twin
    shared_keys: Callable[[Sequence[Any]], tuple[Any, ...]]
    shared_args: Callable[[Sequence[Any]], tuple[Any, ...]]
    shared_args_lean: tuple[str, ...] | None
    """The shared ARGV of a call that left out every optional ARGV, when they all are optional ones
    (each then the "" it stands for: no list padded per decision); None: picked from the padded list."""
    own_keys: Callable[[Sequence[Any]], tuple[Any, ...]]
    """A decision's KEYS sent always (its group's required part)."""
    own_args: Callable[[Sequence[Any]], tuple[Any, ...]]
    own_args_from: int
    """A call sending fewer ARGV than this is padded (:attr:`pad`) before its ``own_args`` are picked."""
    opt_keys: Callable[[Sequence[Any]], tuple[Any, ...]] | None
    """A decision's KEYS of its group's optional part (None: the group has none)."""
    opt_made: Callable[[Sequence[Any]], tuple[Any, ...]]
    """The same KEYS as the single script's left-out ones stand for, from ``left_out.made``'s tuple."""
    opt_from: int
    """A call sending fewer KEYS than this left out every optional one of its group."""
    opt_args: Callable[[Sequence[Any]], tuple[Any, ...]] | None
    """A decision's ARGV of its group's optional part (None: the group has none)."""
    pad: list[str]
    """A call's optional ARGV, as the "" a call that left them out stands for (Fields.full)."""

    @classmethod
    def of(cls, twin: Twin) -> _Picks:
        kcut = len(twin.own_keys) - twin.own_keys_optional
        acut = len(twin.own_args) - twin.own_args_optional
        opt = twin.own_keys[kcut:]
        required = twin.args.size - twin.args.optional
        lean = tuple("" for _ in twin.shared_args) if min(twin.shared_args, default=required) >= required else None
        return cls(twin, _picker(twin.shared_keys), _picker(twin.shared_args), lean, _picker(twin.own_keys[:kcut]),
                   _picker(twin.own_args[:acut]), max(twin.own_args[:acut], default=-1) + 1,
                   _picker(opt) if opt else None,
                   _picker(tuple(p - twin.left_out.required for p in opt)), min(opt, default=0) + 1,
                   _picker(twin.own_args[acut:]) if twin.own_args_optional else None,
                   [""] * twin.args.optional)


_PICKS: dict[str, _Picks] = {name: _Picks.of(twin) for name, twin in MANY_TWINS.items()}


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
X = TypeVar("X")


def _request_error(cls: type[Any], req: Mapping[Any, Any], i: int) -> InvalidInputError:
    """What is wrong with a mapping ``cls(**req)`` refused: an unknown field, or a missing one."""
    names = [f.name for f in fields(cls)]
    unknown = [k for k in req if k not in names]
    if unknown:
        return InvalidInputError(f"requests[{i}]", f"unknown field {unknown[0]!r} (fields: {', '.join(names)})")
    missing = next(f.name for f in fields(cls) if f.default is MISSING and f.name not in req)
    return InvalidInputError(f"requests[{i}].{missing}", "is required")


def _each(cls: type[R], requests: object, build: Callable[[R], X]) -> list[X]:
    """Every request as ``cls`` (a mapping of its fields, or one), each validated by ``build`` before
    anything is sent: a bad one raises :class:`InvalidInputError` naming ``requests[i].<field>``."""
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        raise InvalidInputError("requests", f"must be a list of requests, got {type(requests).__name__}")
    calls: list[X] = []
    for i, req in enumerate(requests):
        if type(req) is cls:  # the common case first: isinstance against the Mapping ABC costs more
            pass
        elif isinstance(req, Mapping):
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


def charge_calls(core: StoreCore, requests: Sequence[ChargeRequest | Mapping[str, Any]]) -> Deferred[DeductionResult]:
    """Validate every request (raising before anything is sent); each charge call is built only
    when a batch packs it (:class:`~ducto_redis.core.Deferred`), while Redis runs the ones before."""
    inputs = _each(ChargeRequest, requests, lambda r: core.debit_input(
        r.user_id, r.amount, operation_type=r.operation_type, idempotency_key=r.idempotency_key, metadata=r.metadata,
        min_balance=r.min_balance, quantities=r.quantities))
    return Deferred(inputs, core.debit_call, core.debit_shard, twin=DEBIT_MANY.name, pack=core.debit_many_parts,
                    parser=core.debit_parse)


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
    return _each(TeamDebitRequest, requests, lambda r: team_debit(
        core, r.team_id, r.user_id, r.amount, r.metadata, r.idempotency_key))


def _identity(raw: Any) -> Any:
    return raw


def _lines(raw: Any) -> list[str]:
    """A twin's reply: one decision's reply per line."""
    return (raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)).split("\n")


def _calls_of(groups: dict[Any, list[int]]) -> int:
    """The script calls a batch's groups of packed decisions make: one per
    :data:`MAX_DECISIONS_PER_CALL` decisions (or fewer) of each group (:meth:`Batch._pack` cuts them)."""
    return sum((len(m) + MAX_DECISIONS_PER_CALL - 1) // MAX_DECISIONS_PER_CALL for m in groups.values())


class Batch(Generic[T]):
    """A list of calls rearranged into as few script calls as their shards allow.

    Decisions of one shard run in the order given: consecutive packable decisions of a shard share
    a packed call placed where the first of them stood, and a call that cannot be packed (another
    script, a settlement) closes its shard's open group, so what follows it goes into a new one. A
    group of one decision is sent as its own call (the single script decides it the same way, with
    fewer values to send: with 64 shards about one decision in five of a batch of 100 is alone in
    its shard).

    The grouping is done at once; the script calls themselves are built in order by :meth:`stream`
    (a store's lane writes each as soon as it is built, so Redis runs the first while the next are
    packed), or all at once unless ``stream`` is set. :attr:`count` is how many there are. Given a
    :class:`~ducto_redis.core.Deferred` (``charge_many``'s: validated, not built), the decisions are
    grouped by shard without building any; a shard's call is written from their inputs when its turn
    comes (``Deferred.packed``; a decision alone in its shard is built then), never from calls of
    their own, and read back by each input's parser.
    """

    def __init__(self, calls: Sequence[Call[T]], scripts: dict[str, Script], *, stream: bool = False) -> None:
        self._scripts = scripts
        self.calls: list[Call[Any]] = []
        """The script calls built so far (all of them, once :meth:`stream` has run through)."""
        # per script call: the decision it answers (a call sent as it is), or those it answers packed,
        # in the order of its reply
        self._answers: list[int | list[int]] = []
        self._results: list[Any] = []
        decisions = calls if isinstance(calls, Deferred) else list(calls)
        self.decisions: Sequence[Call[T]] = decisions
        # per decision: the index of the script call answering it (-1: none, a ready result) and its
        # position in that call's packed reply (-1: the call is its own)
        self._call_of = [-1] * len(decisions)
        self._pos_of = [-1] * len(decisions)
        if isinstance(decisions, Deferred):
            self._group_by_shard(decisions)
        else:
            self._group(decisions)
        if not stream:
            for _ in self.stream():
                pass

    def _group_by_shard(self, decisions: Deferred[T]) -> None:
        """The grouping of a :class:`~ducto_redis.core.Deferred`'s decisions, none of them built yet:
        every one can share a script call with any other of its shard, so a group is a shard's."""
        groups: dict[int, list[int]] = {}
        order: list[int | list[int]] = []
        for i, tag in enumerate(decisions.shards()):
            members = groups.get(tag)
            if members is None:
                members = groups[tag] = []
                order.append(members)
            members.append(i)
        self._order = order
        self.count = _calls_of(groups)
        """How many script calls the decisions make."""

    def _group(self, decisions: list[Call[T]]) -> None:
        """The grouping of built calls (see the class docstring)."""
        # the pipeline in order: a decision sent as it is (its index), or a group of packed decisions
        order: list[int | list[int]] = []
        groups: dict[tuple[Any, ...], list[int]] = {}
        generation: dict[str, int] = {}  # per shard tag: bumped by each call that is not packed
        count = 0
        script: Script | None = None
        twin: Twin | None = None
        picks: _Picks | None = None
        only_at, only_value, name, lean_args = 0, "", "", 0
        for i, call in enumerate(decisions):
            if call.script is not script:  # the scripts' twins looked up once per run of one script
                script = call.script
                if script is None:
                    continue
                picks = _PICKS.get(script.name)
                if picks is not None:
                    twin = picks.twin
                    only_at, only_value, name = twin.only[0], twin.only[1], twin.name
                    lean_args = twin.args.size - twin.args.optional
            elif script is None:
                continue
            keys, args = call.keys, call.args
            if picks is None or (len(args) > only_at and args[only_at] != only_value):
                tag = keys[0][: keys[0].find("}") + 1] if keys else ""
                generation[tag] = generation.get(tag, 0) + 1
                order.append(i)
                count += 1
                continue
            assert twin is not None
            # decisions share a call only if their shared values are equal (always so within one shard)
            if len(keys) < twin.keys_width:  # a lean call: the KEYS it left out put back (for its group)
                keys = twin.left_out.fill(keys)
            n = len(args)
            if n == twin.args.size:
                shared_args = picks.shared_args(args)
            elif n == lean_args and picks.shared_args_lean is not None:
                shared_args = picks.shared_args_lean
            else:
                shared_args = picks.shared_args(args + picks.pad)
            # a shard's generation is 0 until a call that cannot be packed is met: its tag is then needed
            gen = generation.get(keys[0][: keys[0].find("}") + 1], 0) if generation else 0
            group = (name, gen, picks.shared_keys(keys), shared_args)
            members = groups.get(group)
            if members is None:
                members = groups[group] = []
                order.append(members)
            members.append(i)
        self._order = order
        self.count = count + _calls_of(groups)

    def stream(self) -> Iterator[Call[Any]]:
        """Build the script calls in order, each yielded (and added to :attr:`calls`) once built."""
        decisions, call_of = self.decisions, self._call_of
        for item in self._order:
            if not isinstance(item, int) and len(item) == 1:
                item = item[0]  # alone in its group: its own call
            if isinstance(item, int):
                call_of[item] = len(self.calls)
                self._answers.append(item)
                call = decisions[item]
                self.calls.append(call)
                yield call
            else:
                yield from self._pack(item)

    def _pack(self, members: list[int]) -> Iterator[Call[Any]]:
        """The script calls of one group of packed decisions: one per :data:`MAX_DECISIONS_PER_CALL`
        of them, each call's KEYS and ARGV written from a :class:`~ducto_redis.core.Deferred`'s
        inputs (``Deferred.packed``) or repacked from built calls (:meth:`_repack`)."""
        decisions, call_of, pos_of = self.decisions, self._call_of, self._pos_of
        parts: Callable[[list[int]], tuple[list[str], list[Any]]]
        if isinstance(decisions, Deferred):  # written from the inputs: no decision's own call is built
            script, parts = self._scripts[decisions.twin], decisions.packed
        else:
            script, parts = self._repack(decisions, members[0])
        for start in range(0, len(members), MAX_DECISIONS_PER_CALL):
            chunk = members[start : start + MAX_DECISIONS_PER_CALL]
            index = len(self.calls)
            for pos, i in enumerate(chunk):
                call_of[i] = index
                pos_of[i] = pos
            keys, args = parts(chunk)
            call = Call(script, keys, args, _lines)
            self._answers.append(chunk)
            self.calls.append(call)
            yield call

    def _repack(self, decisions: Sequence[Call[T]], first_i: int) -> tuple[
            Script, Callable[[list[int]], tuple[list[str], list[Any]]]]:
        """The twin of a group of built calls (the group's first is ``first_i``), and how the calls of
        a chunk of it are repacked into one call of the twin: its KEYS and ARGV, by the positions the
        two specs give (:class:`Twin`)."""
        first = decisions[first_i]
        assert first.script is not None
        picks = _PICKS[first.script.name]
        twin = picks.twin
        width, fill = twin.keys_width, twin.left_out.fill
        ks = first.keys
        head_keys = list(picks.shared_keys(ks if len(ks) >= width else fill(ks)))
        own_keys, own_args, own_args_from, pad = picks.own_keys, picks.own_args, picks.own_args_from, picks.pad
        opt_keys, opt_made, opt_from, opt_args = picks.opt_keys, picks.opt_made, picks.opt_from, picks.opt_args
        made, size, shape_at = twin.left_out.made, twin.args.size, twin.shape_at
        head_args = list(picks.shared_args(first.args if len(first.args) == size else first.args + pad))
        if shape_at >= 0:
            head_args.insert(shape_at, "")
        shape_chars = SHAPE_CHARS

        def parts(chunk: list[int]) -> tuple[list[str], list[Any]]:
            keys, args = list(head_keys), list(head_args)
            shape: list[str] = []
            for i in chunk:
                d = decisions[i]
                ks = d.keys
                if len(ks) < width:  # a lean call's, with the KEYS it left out put back
                    ks = fill(ks)
                keys.extend(own_keys(ks))
                bits = 0
                # its group's optional KEYS, unless they are what left-out ones stand for (a lean call
                # left them out; a widened one may send the never-written idempotency key)
                if opt_keys is not None and len(d.keys) >= opt_from:
                    kopt = opt_keys(ks)
                    if kopt != opt_made(made(ks[0])):
                        keys.extend(kopt)
                        bits = 1
                a = d.args
                if len(a) < size:  # its optional ARGV left out: "" each
                    args.extend(own_args(a) if len(a) >= own_args_from else own_args(a + pad))
                else:
                    args.extend(own_args(a))
                    if opt_args is not None:
                        aopt = opt_args(a)
                        if any(aopt):
                            args.extend(aopt)
                            bits += 2
                shape.append(shape_chars[bits])
            if shape_at >= 0:
                args[shape_at] = "".join(shape)
            return keys, args

        return self._scripts[twin.name], parts

    def take(self, index: int, reply: Any) -> None:
        """Parse the reply of script call ``index`` into its decisions' results, as soon as it is
        read (while Redis runs the calls after it); :meth:`taken` gives them once every call's is."""
        results = self._results
        if not results:
            results = self._results = [None] * len(self.decisions)
        decisions = self.decisions
        answers = self._answers[index]
        if isinstance(answers, int):
            results[answers] = decisions[answers].parse(reply)
            return
        lines = _lines(reply)
        if isinstance(decisions, Deferred):  # (their calls were never built)
            inputs, parser = decisions.inputs, decisions.parser
            for pos, i in enumerate(answers):
                results[i] = parser(inputs[i])(lines[pos])
            return
        for pos, i in enumerate(answers):
            results[i] = decisions[i].parse(lines[pos])

    def taken(self) -> list[T]:
        """The results :meth:`take` parsed, in the order of the decisions (a decision without a
        script call: its ready result)."""
        results = self._results or [None] * len(self.decisions)
        for i, index in enumerate(self._call_of):
            if index < 0:
                results[i] = self.decisions[i].parse(None)
        return results

    def assemble(self, replies: Sequence[Any]) -> list[T]:
        """Results in the order of the decisions, from the replies of :attr:`calls`."""
        out: list[T] = []
        split: dict[int, list[str]] = {}
        decisions = self.decisions
        parse_of = decisions.parse_of if isinstance(decisions, Deferred) else lambda i: decisions[i].parse
        for i, (index, pos) in enumerate(zip(self._call_of, self._pos_of, strict=True)):
            if index < 0:
                out.append(parse_of(i)(None))
            elif pos < 0:
                out.append(parse_of(i)(replies[index]))
            else:
                lines = split.get(index)
                if lines is None:
                    lines = split[index] = _lines(replies[index])
                out.append(parse_of(i)(lines[pos]))
        return out
