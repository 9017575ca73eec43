"""One spec per Lua script: the names of its KEYS, its ARGV and its reply's fields, in order.

This is the one place a script's layout is written on the Python side. The call builders pack
KEYS and ARGV by name (``DEBIT.args.pack(cid=..., amount=...)``), the reply parsers read fields by
name (``r[DEBIT.reply.pos.ref]``), and batch.py derives how a script's calls are packed into its
"many" twin from the two specs' names. Each ``lua/<script>.lua`` states the same layout in its header,
in the same words::

    -- KEYS: account ledger [events grants idem]
    -- ARGV: cid amount frag [config model floor rid quantities]
    -- REPLY (text): status idempotent ref amount balance held cap retry remaining limit

and ``tests/test_script_specs.py`` holds every header against its spec (and every reply a script
sends against its shape), so neither can drift from the other unnoticed.

A layout is names separated by spaces, then optionally a group repeated any number of times:
``"ledger events; per decision: account grants"``. The last fixed names may be *optional*,
in brackets (``"cid amount frag [config model floor rid quantities]"``): they are sent only when one
of them is not empty, and a script reads an absent one as ``""``. A plain charge then sends 3 ARGV
instead of 8, and each value a script receives costs Redis ~1 600 instructions (its Lua string and
its slot in the ARGV table). Optional KEYS are sent likewise, all or none: a charge that sends none
of debit's ``[events grants idem]`` is *lean* (``account ledger``); one whose decision turns out to
need them is refused before anything is written and sent again with them all (connect.py ``_plan``,
keys.py ``LeftOutKeys``). A repeated group may end with optional names too, sent or not group by
group (``"per decision: account grants [idem]"``, ``"per decision: cid amount frag [model floor
quantities]"``): the script then takes one more fixed ARGV, ``shape``, one character per group
saying which of its optional parts it sends (:data:`SHAPE_CHARS`), and walks KEYS and ARGV with a
cursor each. A plain charge packed into debit_many sends 2 KEYS and 3 ARGV, not 3 and 6. A group's
optional KEYS are left out when they are what the single script's left-out ones stand for
(keys.py ``LEFT_OUT``: the never-written ``<account>:i`` for no idempotency key), its optional ARGV
when all are empty (batch.py ``Twin``). A reply's *shape* says how it is sent:

* ``text``: one string, the fields joined by ``|`` (the last one may hold ``|`` itself: a plan id,
  a role);
* ``table``: an array of strings;
* ``lines``: one ``text`` reply per decision, joined by newlines (the "many" scripts);
* ``special``: described in the header's words only (refund_find.lua).

Positions are worked out once, when this module is imported: packing a call costs one Python call
per list (no dict is built), and reading ``r[pos.ref]`` through a module-level ``pos`` costs what
``r[2]`` did.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Shape = Literal["text", "table", "lines", "special"]
SHAPES: tuple[Shape, ...] = ("text", "table", "lines", "special")

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PER = re.compile(r"per ([a-z]+): (.*)")


def _names(text: str, where: str) -> tuple[str, ...]:
    names = tuple(text.split())
    for name in names:
        if not _NAME.fullmatch(name) or keyword.iskeyword(name):
            raise ValueError(f"{where}: {name!r} is not a field name (lowercase letters, digits, _)")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a name appears twice in {text!r}")
    return names


def _bracketed(part: str, text: str, where: str) -> tuple[tuple[str, ...], int]:
    """The names of one part of a layout (its fixed names, or one repeated group's) and how many of
    the last ones are optional (in brackets)."""
    optional = ""
    if part.endswith("]"):
        part, bracket, optional = part[:-1].rpartition("[")
        if not bracket or "[" in part or "]" in part + optional:
            raise ValueError(f"{where}: optional fields go last, once, in brackets: {text!r}")
    elif "[" in part or "]" in part:
        raise ValueError(f"{where}: optional fields go last, once, in brackets: {text!r}")
    return _names(part + " " + optional, where), len(optional.split())


def _with_brackets(names: tuple[str, ...], optional: int) -> str:
    """``names`` as :func:`_bracketed` reads them: the last ``optional`` ones in brackets."""
    cut = len(names) - optional
    text = " ".join(names[:cut])
    return f"{text} [{' '.join(names[cut:])}]".strip() if optional else text


def _packer(names: tuple[str, ...], optional: int = 0) -> Callable[..., list[Any]]:
    """A function taking every name as a keyword-only argument and answering the values in order;
    the last ``optional`` ones only if one of them is not empty."""
    if not names:
        return lambda: []
    ns: dict[str, Any] = {}
    if optional:
        req, opt = names[: len(names) - optional], names[len(names) - optional :]
        body = (f"    if {' or '.join(opt)}:\n        return [{', '.join(names)}]\n"
                f"    return [{', '.join(req)}]")
    else:
        body = f"    return [{', '.join(names)}]"
    exec(f"def pack(*, {', '.join(names)}):\n{body}", ns)  # names checked by _names
    pack: Callable[..., list[Any]] = ns["pack"]
    return pack


def _positions(names: tuple[str, ...]) -> Any:
    """An object whose attribute ``name`` is that name's 0-based position (read-only). Reading one
    costs about what reading a module constant does: ``r[DEBIT.reply.pos.ref]`` is as cheap as
    ``r[2]`` once ``DEBIT.reply.pos`` is bound to a name."""

    def refuse(self: object, name: str, value: object) -> None:
        raise AttributeError(f"positions are read-only: {name}")

    cls = type("Positions", (), {"__slots__": names, "__setattr__": refuse,
                                 "__repr__": lambda self: f"Positions({' '.join(names)})"})
    obj = cls()
    for i, name in enumerate(names):
        object.__setattr__(obj, name, i)
    return obj


@dataclass(frozen=True, slots=True)
class Fields:
    """One part of a script's layout (its KEYS, its ARGV or its reply): ``names`` in order, then
    ``each`` repeated once per ``per`` (a decision, an account, a member...), or nothing more."""

    names: tuple[str, ...]
    per: str = ""
    each: tuple[str, ...] = ()
    optional: int = 0
    """How many of the last ``names`` are optional (sent only when one of them is not empty)."""
    each_optional: int = 0
    """How many of the last ``each`` are optional: sent or not per group, as the group's character of
    the ``shape`` ARGV says (see the module docstring)."""
    pack: Callable[..., list[Any]] = field(init=False, repr=False, compare=False)
    """``pack(name=value, ...)``: the values of ``names`` as a list, in order (each name required)."""
    pack_each: Callable[..., list[Any]] = field(init=False, repr=False, compare=False)
    """``pack_each(name=value, ...)``: one group of ``each``, in order."""
    pos: Any = field(init=False, repr=False, compare=False)
    """``pos.<name>``: the 0-based position of a fixed field (an AttributeError for any other name)."""
    each_pos: Any = field(init=False, repr=False, compare=False)
    """``each_pos.<name>``: the position of a field within one repeated group (see :meth:`groups`)."""
    size: int = field(init=False, repr=False, compare=False)
    """How many fixed fields (the least a reply or a call has)."""
    _at: dict[str, int] = field(init=False, repr=False, compare=False)
    _each_at: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if bool(self.per) != bool(self.each):
            raise ValueError(f"a repeated group needs both a name for what it repeats per and fields: {self}")
        object.__setattr__(self, "size", len(self.names))
        object.__setattr__(self, "_at", {n: i for i, n in enumerate(self.names)})
        object.__setattr__(self, "_each_at", {n: i for i, n in enumerate(self.each)})
        if not 0 <= self.optional <= len(self.names) or not 0 <= self.each_optional <= len(self.each):
            raise ValueError(f"more optional fields than fields: {self}")
        object.__setattr__(self, "pack", _packer(self.names, self.optional))
        object.__setattr__(self, "pack_each", _packer(self.each, self.each_optional))
        object.__setattr__(self, "pos", _positions(self.names))
        object.__setattr__(self, "each_pos", _positions(self.each))

    @classmethod
    def parse(cls, text: str, where: str = "layout") -> Fields:
        """A layout as written in a spec or a Lua header: ``"a b c"``, ``"a b; per x: c d"``,
        ``"per x: c d"`` or ``""``."""
        fixed, per, each, each_optional = text.strip(), "", tuple[str, ...](), 0
        head, sep, tail = fixed.partition("; ")
        if fixed.startswith("per "):
            head, tail, sep = "", fixed, "; "
        if sep:
            m = _PER.fullmatch(tail.strip())
            if m is None:
                raise ValueError(f"{where}: expected 'per <what>: <names>' after ';', got {tail!r}")
            per = m.group(1)
            each, each_optional = _bracketed(m.group(2), text, where)
            fixed = head
        names, optional = _bracketed(fixed, text, where)
        return cls(names, per, each, optional, each_optional)

    def full(self, values: list[Any]) -> list[Any]:
        """A call's values with the optional ones it left out put back, as ``""`` (what a script
        reads for an absent one)."""
        if len(values) >= self.size:
            return values
        return [*values, *[""] * (self.size - len(values))]

    def at(self, name: str) -> int:
        """The 0-based position of a fixed field."""
        try:
            return self._at[name]
        except KeyError:
            raise KeyError(f"no field {name!r} among {' '.join(self.names)}") from None

    def each_at(self, name: str) -> int:
        """The 0-based position of a field within one repeated group."""
        try:
            return self._each_at[name]
        except KeyError:
            raise KeyError(f"no repeated field {name!r} among {' '.join(self.each)}") from None

    def groups(self, values: Sequence[str]) -> Iterator[Sequence[str]]:
        """The repeated groups after the fixed fields, each as a slice of ``values`` (groups of one
        width: a layout whose groups have optional fields is read with its ``shape``, not here)."""
        if self.each_optional:
            raise ValueError(f"groups of {self.text()!r} have no one width: their shape says it")
        width = len(self.each)
        for start in range(self.size, len(values) - width + 1, width):
            yield values[start : start + width]

    def text(self) -> str:
        """The layout in the words of a Lua header (and of :meth:`parse`)."""
        group = f"per {self.per}: {_with_brackets(self.each, self.each_optional)}" if self.each else ""
        return "; ".join(p for p in (_with_brackets(self.names, self.optional), group) if p)


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    """A script's KEYS, ARGV and reply (see the module docstring)."""

    name: str
    keys: Fields
    args: Fields
    reply: Fields
    shape: Shape

    @classmethod
    def of(cls, name: str, keys: str, args: str, reply: str, shape: Shape) -> ScriptSpec:
        """A spec from layouts written as in a Lua header."""
        if shape not in SHAPES:
            raise ValueError(f"{name}: shape must be one of {SHAPES}, got {shape!r}")
        return cls(name, Fields.parse(keys, f"{name} KEYS"), Fields.parse(args, f"{name} ARGV"),
                   Fields.parse(reply, f"{name} REPLY"), shape)


_S = ScriptSpec.of

SHAPE = "shape"
"""The ARGV of a script whose repeated groups have optional fields: one character per group, the
group's :data:`SHAPE_CHARS` entry."""
SHAPE_CHARS = "0123"
"""A group's character in ``shape``, at ``(optional KEYS sent) + 2 * (optional ARGV sent)``: "0" a
group without its optional fields, "1" with its optional KEYS, "2" with its optional ARGV, "3" both
(a script tests its byte: odd, KEYS; 50 or more, ARGV)."""

# ── user accounts ──────────────────────────────────────────────────────

ADD_CREDITS = _S("add_credits", "account idem ledger grants gindex",
                 "cid tx amount purchase frag expires must_exist config",
                 "status idempotent tx amount balance life", "text")
BALANCE = _S("balance", "account grants", "config", "status idempotent balance held life exists", "table")
RESERVE = _S("reserve", "account idem ledger grants",
             "cid rid amount floor ttl op frag rate quantities model config",
             "status idempotent rid amount balance held expires retry remaining limit", "text")
RELEASE = _S("release", "account idem ledger grants", "cid tx rid frag config",
             "status idempotent rid amount balance held", "text")
DEBIT = _S("debit", "account ledger [events grants idem]", "cid amount frag [config model floor rid quantities]",
           "status idempotent ref amount balance held cap retry remaining limit", "text")
DEBIT_MANY = _S("debit_many", "ledger events; per decision: account grants [idem]",
                f"config {SHAPE}; per decision: cid amount frag [model floor quantities]",
                f"per decision: {DEBIT.reply.text()}", "lines")
SET_CAP = _S("set_cap", "account ledger", "tx period model value frag config", "status idempotent previous", "table")
CHECK_CAP = _S("check_cap", "account", "model amount config",
               "status idempotent capped spend limit action model period", "table")
SET_RATE_LIMIT = _S("set_rate_limit", "account ledger", "tx value frag config", "status idempotent", "table")
SET_QUANTITY_LIMIT = _S("set_quantity_limit", "account ledger", "tx user name model value config",
                        "status idempotent limits", "table")
HIT_RATE_LIMIT = _S("hit_rate_limit", "account", "config", "status idempotent retry remaining limit", "text")

# ── team pools ─────────────────────────────────────────────────────────

POOL_CREATE = _S("pool_create", "team idem ledger", "tx name balance frag config", "status idempotent balance",
                 "text")
POOL_MEMBER = _S("pool_member", "team ledger", "tx tid member action role cap period config",
                 "status idempotent cap period count role", "text")
POOL_DEBIT = _S("pool_debit", "team ledger [events idem]", "cid amount member frag [config model rid]",
                "status idempotent ref amount balance held cap retry remaining limit", "text")
POOL_DEBIT_MANY = _S("pool_debit_many", "ledger events; per decision: team [idem]",
                     f"config {SHAPE}; per decision: cid amount member frag [model]",
                     f"per decision: {POOL_DEBIT.reply.text()}", "lines")
POOL_RESERVE = _S("pool_reserve", "team idem ledger", "cid rid amount member ttl op frag config",
                  "status idempotent rid amount balance held expires", "text")
POOL_RELEASE = _S("pool_release", "team idem ledger", "cid tx rid member frag config",
                  "status idempotent rid amount balance held", "text")
POOL_READ = _S("pool_read", "team", "members config",
               "status idempotent name balance held count created; "
               "per member: id role cap period total today month held", "table")

# ── plans and pricing ──────────────────────────────────────────────────

SET_PLAN = _S("set_plan", "account ledger", "tx plan frag config", "status idempotent previous", "table")
PLAN_READ = _S("plan_read", "account", "config", "status idempotent plan used start end", "table")
PLAN_USAGE = _S("plan_usage", "account ledger", "tx plan amount frag config", "status idempotent used", "table")
PLAN_DEBIT = _S("plan_debit", "account grants ledger events [idem]", "cid amount model floor frag allowances config",
                "status idempotent ref paid balance held cap retry remaining limit free left plan", "text")
PRICING_SET = _S("pricing_set", "active versions ledger", "id label pricing config",
                 "status idempotent id version", "table")
PRICING_READ = _S("pricing_read", "active versions", "which", "status idempotent active; per version: record",
                  "table")

# ── refunds and expiring credits ───────────────────────────────────────

REFUND_FIND = _S("refund_find", "ledger idem", "entry row has_idem", "", "special")
REFUND = _S("refund", "account grants gindex ledger idem",
            "cid tx original amount requested parts reason frag has_idem config",
            "status idempotent tx amount balance kind who", "text")
SWEEP_DUE = _S("sweep_due", "gindex", "config", "status idempotent; per account: user", "table")
SWEEP_CREDITS = _S("sweep_credits", "gindex ledger; per account: account grants", "dry call config; per account: user",
                   "status idempotent count amount; per expiry: user grant amount expires entry", "table")

SPECS: dict[str, ScriptSpec] = {s.name: s for s in (
    ADD_CREDITS, RESERVE, DEBIT, DEBIT_MANY, RELEASE, SET_CAP, BALANCE, CHECK_CAP, SET_RATE_LIMIT,
    SET_QUANTITY_LIMIT, HIT_RATE_LIMIT, POOL_CREATE, POOL_MEMBER, POOL_DEBIT, POOL_DEBIT_MANY, POOL_RESERVE,
    POOL_RELEASE, POOL_READ, SET_PLAN, PLAN_READ, PLAN_USAGE, PLAN_DEBIT, PRICING_SET, PRICING_READ, REFUND_FIND,
    REFUND, SWEEP_DUE, SWEEP_CREDITS,
)}
"""Every script's spec by script name (the library holds the scripts in this order)."""
