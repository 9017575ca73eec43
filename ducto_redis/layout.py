"""The stored formats: what every field of an account hash holds, the grants hash, the values the
scripts take and keep (rate limits, quantity limits, grant parts, pricing records), the ledger row,
transaction ids.

This module is the one definition the Python side reads and writes them by (restore, reconcile,
the call builders, the tests); ``lua/lib/02_state.lua`` (and ``07_grants.lua`` for grants) is the
scripts' side of the same formats, and ``tests/test_layout.py`` holds the two together: what the
scripts write decodes here and encodes back to the same text, and what is encoded here the scripts
read.

**One hash per account** (``{ns:N}:u:<id>`` or ``{ns:N}:t:<id>``, see keys.py): a decision reads
the fields it needs in one HMGET and writes back what changed in one HSET. Crossing between Lua
and Redis costs about as much per field as per command, so the hot scalars share one field.

==========  =====================================================================================
field       value
==========  =====================================================================================
``b``       balance (decimal)
``S``       state: ``held|hx|gx|rl|tat|dB|dK|mB|mK|dC|mC|ql`` (see :class:`State`)
``r``       recent mutations, newest first: ``<call id>=<entry>;...`` (see :data:`RING_KEEP`)
``M|<m>``   per-model spend and caps: ``T|dB|dA|mB|mA|dC|mC`` (see :class:`ModelWindow`)
``h:<rid>`` an open hold: user ``amount|expires_ms|op``; team ``amount|expires_ms|n|<member><op>``
``U|<id>``  a team member: ``spent|cap|period|dB|dA|mB|mA|held|role`` (see :class:`Member`)
``r:<tx>``  a refunded debit: the amount refunded (a debit is refunded once)
``plan``    the user's plan and its allowance use this month: ``mB|used|<plan id>``
``P|<id>``  allowance used this month under a plan the user has left: ``mB|used``
``life``    lifetime purchased; ``created`` creation time (ms); teams: ``name``, ``mc`` members
``qt|..``   a quantity limit's arrival time (``qt|<name>|<model>``, ms; lua/lib/06_limits.lua)
``qh|<rid>`` a hold's quantity estimate, ``<model>|name=n;...`` (lua/lib/06_limits.lua)
==========  =====================================================================================

A team exists once its hash has ``b``: pool_create.lua writes it (with ``created``), and nothing
writes ``b`` to a team that does not exist (a team cap set beforehand writes ``S`` only), so the
team scripts tell ``team_not_found`` from the fields they read anyway.

A user's expiring grants live in their own hash (``<account>:grants``): grant id ->
``expires_ms|remaining`` (see :class:`Grant`). The rate limit ``rl`` in ``S`` is
``limit,period_ms,burst`` (:class:`RateLimit`), the quantity limits ``ql``
``name|model|limit|period_ms;...`` (:class:`QuantityLimit`).

**Windows with anchors.** A window's spend is kept as an *anchor*: for the account's day window
``dK = balance + spend today`` (``mK`` the same for the month). A debit lowers the balance and
raises the spend by the same amount, so the anchor does not move and a plain charge rewrites
only ``b``; a balance change that is not spend (a credit, a refund, an expiry) moves the anchor
with it. A window whose bucket (``dB`` day number, ``mB`` = year*12 + month - 1) is not the
current one has spent 0. Per-model windows and member windows anchor on their own all-time
total ``T`` / ``spent`` instead: ``dA = T - spend today``.

Caps are ``<limit><action>`` with action ``d`` (deny), ``w`` (warn) or ``n`` (notify); ``""`` = none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

BALANCE = "b"
STATE = "S"
RING = "r"
LIFE = "life"
CREATED = "created"
NAME = "name"
MEMBER_COUNT = "mc"
PLAN = "plan"
MODEL_PREFIX = "M|"
HOLD_PREFIX = "h:"
MEMBER_PREFIX = "U|"
REFUNDED_PREFIX = "r:"
PLAN_PREFIX = "P|"

# a re-sent call is recognised while its account's ring still holds it: the ring keeps its newest
# entries up to the first ';' at or after this many bytes (at least three entries of ~44 bytes)
RING_KEEP = 130

ACTIONS = {"deny": "d", "warn": "w", "notify": "n"}
ACTION_NAMES = {v: k for k, v in ACTIONS.items()}
PERIODS = {"total": "t", "daily": "d", "monthly": "m"}
PERIOD_NAMES = {v: k for k, v in PERIODS.items()}
REMOVED = "removed"  # a member's period once removed: their record (spend history) stays, period "x"
PERIODS_STORED = {**PERIODS, REMOVED: "x"}
PERIOD_NAMES_STORED = {v: k for k, v in PERIODS_STORED.items()}

DAY_MS = 86_400_000


# ── buckets ───────────────────────────────────────────────────────────


def day_bucket(ms: int) -> int:
    """The UTC day number of ``ms`` (lib's ``bucket_of('d', ms)``)."""
    return ms // DAY_MS


def month_bucket(ms: int) -> int:
    """year*12 + month - 1 of ``ms`` in UTC (lib's ``bucket_of('m', ms)``)."""
    t = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return t.year * 12 + t.month - 1


def month_bounds(bucket: int) -> tuple[int, int]:
    """(first ms, end ms exclusive) of the month ``bucket``."""
    y, m = divmod(bucket, 12)
    start = datetime(y, m + 1, 1, tzinfo=timezone.utc)
    ny, nm = (y + 1, 1) if m == 11 else (y, m + 2)
    return int(start.timestamp() * 1000), int(datetime(ny, nm, 1, tzinfo=timezone.utc).timestamp() * 1000)


# ── caps ──────────────────────────────────────────────────────────────


def cap_text(limit: int | None, action: str) -> str:
    """A stored cap: ``"<limit><d|w|n>"``, or ``""`` for none."""
    return "" if limit is None else f"{limit}{ACTIONS[action]}"


def cap_of(text: str) -> tuple[int, str] | None:
    """(limit, action name) of a stored cap, or None."""
    if not text:
        return None
    return int(text[:-1]), ACTION_NAMES[text[-1]]


def _int(text: str, default: int = 0) -> int:
    return int(text) if text else default


def _opt(text: str) -> int | None:
    return int(text) if text else None


def _s(value: int | None) -> str:
    return "" if value is None else str(value)


# ── the account state ─────────────────────────────────────────────────


@dataclass
class State:
    """Field ``S`` of an account hash (with ``b``, the balance, beside it)."""

    held: int = 0
    hold_expiry: int | None = None  # hx: earliest open hold's expiry (may be stale-early)
    grant_expiry: int | None = None  # gx: earliest expiring grant's expiry
    rate_limit: str = ""  # rl: "limit,period_ms,burst"
    tat: int | None = None  # the rate limiter's theoretical arrival time (ms)
    day: int | None = None  # dB
    day_anchor: int = 0  # dK = balance + spend today
    month: int | None = None  # mB
    month_anchor: int = 0  # mK
    day_cap: str = ""  # dC
    month_cap: str = ""  # mC
    # ql: quantity limits (tokens per period...), "name|model|limit|period_ms;..." (last: it holds '|')
    quantity_limits: str = ""

    def encode(self) -> str:
        return "|".join((
            str(self.held), _s(self.hold_expiry), _s(self.grant_expiry), self.rate_limit, _s(self.tat),
            _s(self.day), str(self.day_anchor), _s(self.month), str(self.month_anchor), self.day_cap, self.month_cap,
            self.quantity_limits,
        ))

    @classmethod
    def decode(cls, text: str | None) -> State:
        if not text:
            return cls()
        p = text.split("|", 11)
        return cls(_int(p[0]), _opt(p[1]), _opt(p[2]), p[3], _opt(p[4]), _opt(p[5]), _int(p[6]), _opt(p[7]),
                   _int(p[8]), p[9], p[10], p[11] if len(p) > 11 else "")

    def spend(self, balance: int, now_ms: int) -> tuple[int, int]:
        """(spent today, spent this month) for an account whose balance is ``balance``."""
        d = self.day_anchor - balance if self.day == day_bucket(now_ms) else 0
        m = self.month_anchor - balance if self.month == month_bucket(now_ms) else 0
        return d, m

    def with_spend(self, balance: int, day: int, day_spend: int, month: int, month_spend: int) -> State:
        """Anchors set so that today's and this month's spend read as given."""
        self.day, self.day_anchor = day, balance + day_spend
        self.month, self.month_anchor = month, balance + month_spend
        return self


@dataclass
class ModelWindow:
    """Field ``M|<model>``: a model's all-time spend, day/month windows anchored on it, its caps."""

    total: int = 0
    day: int | None = None
    day_anchor: int = 0  # dA = total - spend today
    month: int | None = None
    month_anchor: int = 0
    day_cap: str = ""
    month_cap: str = ""

    def encode(self) -> str:
        return "|".join((str(self.total), _s(self.day), str(self.day_anchor), _s(self.month), str(self.month_anchor),
                         self.day_cap, self.month_cap))

    @classmethod
    def decode(cls, text: str | None) -> ModelWindow:
        if not text:
            return cls()
        p = text.split("|")
        return cls(_int(p[0]), _opt(p[1]), _int(p[2]), _opt(p[3]), _int(p[4]), p[5], p[6])

    def spend(self, now_ms: int) -> tuple[int, int]:
        d = self.total - self.day_anchor if self.day == day_bucket(now_ms) else 0
        m = self.total - self.month_anchor if self.month == month_bucket(now_ms) else 0
        return d, m


@dataclass
class Member:
    """Field ``U|<member id>`` of a team hash (a removed member keeps it, period ``removed``).

    ``spent`` leads the record: a debit changes only it (the windows move when a period rolls over,
    ``held`` with holds), so the scripts parse the rest once per distinct text and remember it."""

    role: str = "member"
    cap: int | None = None
    period: str = "total"  # total | daily | monthly | removed
    spent: int = 0  # all-time spend from the pool
    day: int | None = None
    day_anchor: int = 0  # spent - spend today
    month: int | None = None
    month_anchor: int = 0
    held: int = 0  # held by the member's open team holds

    def encode(self) -> str:
        return "|".join((str(self.spent), _s(self.cap), PERIODS_STORED[self.period], _s(self.day), str(self.day_anchor),
                         _s(self.month), str(self.month_anchor), str(self.held), self.role))

    @classmethod
    def decode(cls, text: str) -> Member:
        """The record, or one of the older order ``cap|period|spent|...`` (read until written again)."""
        p = text.split("|", 8)
        if p[1] in PERIOD_NAMES_STORED:  # the older order: a period (a letter) second, never a cap
            p[0], p[1], p[2] = p[2], p[0], p[1]
        return cls(p[8], _opt(p[1]), PERIOD_NAMES_STORED[p[2]], _int(p[0]), _opt(p[3]), _int(p[4]), _opt(p[5]),
                   _int(p[6]), _int(p[7]))

    def spend(self, now_ms: int) -> tuple[int, int]:
        d = self.spent - self.day_anchor if self.day == day_bucket(now_ms) else 0
        m = self.spent - self.month_anchor if self.month == month_bucket(now_ms) else 0
        return d, m


@dataclass
class Hold:
    """Field ``h:<reservation id>``: an open hold (``member`` for a team hold)."""

    amount: int
    expires_ms: int
    operation_type: str = ""
    member: str | None = None

    def encode(self) -> str:
        if self.member is None:
            return f"{self.amount}|{self.expires_ms}|{self.operation_type}"
        return f"{self.amount}|{self.expires_ms}|{len(self.member)}|{self.member}{self.operation_type}"

    @classmethod
    def decode(cls, text: str, team: bool) -> Hold:
        if not team:
            a, e, op = text.split("|", 2)
            return cls(int(a), int(e), op)
        a, e, n, rest = text.split("|", 3)
        return cls(int(a), int(e), rest[int(n):], rest[: int(n)])


def plan_text(month: int, used: int, plan_id: str) -> str:
    """Field ``plan``: the current plan with this month's allowance use."""
    return f"{month}|{used}|{plan_id}"


def plan_of(text: str | None) -> tuple[int | None, int, str]:
    """(month, used, plan id) of field ``plan`` ("" plan id = none)."""
    if not text:
        return None, 0, ""
    m, used, plan = text.split("|", 2)
    return _opt(m), int(used), plan


def plan_left_text(month: int, used: int) -> str:
    """Field ``P|<plan id>``: the allowance used this month under a plan the user has left."""
    return f"{month}|{used}"


def plan_left_of(text: str) -> tuple[int | None, int]:
    """(month, used) of a field ``P|<plan id>``."""
    m, used = text.split("|")
    return _opt(m), int(used)


@dataclass(frozen=True)
class RateLimit:
    """The request-rate limit ``rl`` of an account's state: ``limit`` requests per ``period_ms``,
    ``burst`` at once (GCRA, lua/lib/06_limits.lua)."""

    limit: int
    period_ms: int
    burst: int

    def encode(self) -> str:
        return f"{self.limit},{self.period_ms},{self.burst}"

    @classmethod
    def decode(cls, text: str) -> RateLimit | None:
        if not text:
            return None
        limit, period, burst = text.split(",")
        return cls(int(limit), int(period), int(burst))


@dataclass(frozen=True)
class QuantityLimit:
    """One quantity limit: ``limit`` units of ``name`` per ``period_ms``, for ``model`` ("" = all).

    Stored in the state's ``ql`` as ``name|model|limit|period_ms`` joined by ``;``; set_quantity_limit.lua
    takes the ``limit|period_ms`` part (:meth:`value`) and keeps one limit per (name, model)."""

    name: str
    model: str
    limit: int
    period_ms: int

    def value(self) -> str:
        """What set_quantity_limit.lua takes as its ARGV ``value``."""
        return f"{self.limit}|{self.period_ms}"

    def encode(self) -> str:
        return f"{self.name}|{self.model}|{self.value()}"

    @classmethod
    def decode_all(cls, text: str) -> list[QuantityLimit]:
        """Every limit of a state's ``ql``."""
        out = []
        for spec in filter(None, text.split(";")):
            name, model, limit, period = spec.split("|")
            out.append(cls(name, model, int(limit), int(period)))
        return out


@dataclass
class Grant:
    """One expiring grant, field ``<grant id>`` of a user's grants hash: ``expires_ms|remaining``."""

    expires_ms: int
    remaining: int

    def encode(self) -> str:
        return f"{self.expires_ms}|{self.remaining}"

    @classmethod
    def decode(cls, text: str) -> Grant:
        expires, remaining = text.split("|")
        return cls(int(expires), int(remaining))


def grant_parts_of(text: str | None) -> list[tuple[str, int, int]]:
    """The grants a debit spent from (its row's ``extra.gc``), or a refund gave back to (``extra.gr``),
    and refund.lua's ARGV ``parts``: ``"<grant id>:<expires ms>:<amount>;..."`` as (id, expires, amount)."""
    out = []
    for part in filter(None, (text or "").split(";")):
        gid, expires, amount = part.rsplit(":", 2)
        out.append((gid, int(expires), int(amount)))
    return out


def grant_parts_text(parts: list[tuple[str, int, int]]) -> str:
    """The inverse of :func:`grant_parts_of`."""
    return ";".join(f"{gid}:{expires}:{amount}" for gid, expires, amount in parts)


def pricing_record(pricing_id: str, version: int, label: str, ts: int, config_json: str) -> str:
    """A published pricing version as pricing_set.lua keeps it (a field of the versions hash): JSON
    ``{id, version, label, ts, config}``, the config as published."""
    return (f'{{"id":{json.dumps(pricing_id)},"version":{version},"label":{json.dumps(label)},"ts":{ts},'
            f'"config":{config_json}}}')


@dataclass
class Account:
    """Every field of one account hash, decoded (restore writes it, reconcile reads it)."""

    balance: int = 0
    state: State = field(default_factory=State)
    life: int = 0
    created: int | None = None
    models: dict[str, ModelWindow] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    plan: str | None = None
    plans_left: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    team: bool = False

    def fields(self) -> dict[str, str]:
        """The hash's fields (no ring: a restored account has no recent calls). A team never created
        (``created`` None: a cap was set on it) has no ``b``: the scripts tell a team exists by it."""
        out = {STATE: self.state.encode()}
        if self.created is not None or not self.team:
            out.update({BALANCE: str(self.balance), LIFE: str(self.life)})
        if self.created is not None:
            out[CREATED] = str(self.created)
        out.update({MODEL_PREFIX + m: w.encode() for m, w in self.models.items()})
        out.update({HOLD_PREFIX + r: h.encode() for r, h in self.holds.items()})
        out.update({MEMBER_PREFIX + u: m.encode() for u, m in self.members.items()})
        out.update({REFUNDED_PREFIX + t: str(a) for t, a in self.refunded.items()})
        if self.plan is not None:
            out[PLAN] = self.plan
        out.update({PLAN_PREFIX + p: v for p, v in self.plans_left.items()})
        if self.name is not None:
            out[NAME] = self.name
            out[MEMBER_COUNT] = str(sum(1 for m in self.members.values() if m.period != REMOVED))
        return out

    @classmethod
    def decode(cls, fields: dict[str, str], team: bool) -> Account:
        a = cls(balance=_int(fields.get(BALANCE, "")), state=State.decode(fields.get(STATE)),
                life=_int(fields.get(LIFE, "")), created=_opt(fields.get(CREATED, "")), plan=fields.get(PLAN),
                name=fields.get(NAME), team=team)
        for f, v in fields.items():
            if f.startswith(MODEL_PREFIX):
                a.models[f[2:]] = ModelWindow.decode(v)
            elif f.startswith(HOLD_PREFIX):
                a.holds[f[2:]] = Hold.decode(v, team)
            elif f.startswith(MEMBER_PREFIX):
                a.members[f[2:]] = Member.decode(v)
            elif f.startswith(REFUNDED_PREFIX):
                a.refunded[f[2:]] = int(v)
            elif f.startswith(PLAN_PREFIX):
                a.plans_left[f[2:]] = v
        return a


# ── transaction ids ───────────────────────────────────────────────────

_TX = re.compile(r"([0-9a-f]{8})-([0-9a-f]{4})-8([0-9a-f]{3})-([0-9a-f]{4})-([0-9a-f]{12})")


def tx_id(shard: int, stream_id: str | bytes, row: int = 0) -> str:
    """The id of row ``row`` of ledger stream entry ``stream_id`` in ``shard``: UUID-shaped, version
    8 (so never one of the random version-4 ids of holds and credits): ``tttttttt-tttt-8rrr-ssss-qqqqqqqqqqqq``
    in hex: t the entry's time (48 bits), r the row (12 bits), s the shard (16), q its sequence (48).

    Debits and settlements get no id of their own: their ledger row is the id. A refund finds the
    debit from the id alone (its shard, then the stream entry or the database row)."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = sid.partition("-")
    return _tx_time(ms) + (_ROW_HEX[row] if 0 <= row < _ROWS else "%03x" % row) + _tx_place(shard, seq)  # noqa: UP031


def tx_ref_id(shard: int, ref: str) -> str:
    """:func:`tx_id` of a script reply's ``<entry>/<row>`` reference ("" for "": the call wrote no
    row); the same three parts joined without tx_id's steps for bytes and a missing row (every debit
    reply's id is read this way: a tenth of its parsing)."""
    if not ref:
        return ""
    entry, _, row = ref.partition("/")
    ms, _, seq = entry.partition("-")
    r = int(row) if row else 0
    return _tx_time(ms) + (_ROW_HEX[r] if r < _ROWS else "%03x" % r) + _tx_place(shard, seq)  # noqa: UP031


# %-formatting the five fields cost more than the rest of a debit's reply parsing (~8 000 instructions
# an id); the parts around the row are formatted once each instead: the time's per millisecond (the
# entries a batch's calls write mostly share one), the shard's and sequence's per shard (a sequence
# is 0 but for a second entry within one millisecond), the row's 4 096 values once.
_ROWS = 4096
_ROW_HEX = tuple("%03x" % r for r in range(_ROWS))  # noqa: UP031


@lru_cache(maxsize=1024)
def _tx_time(ms: str) -> str:
    """:func:`tx_id`'s part before its row: ``tttttttt-tttt-8``."""
    m = int(ms)
    return "%08x-%04x-8" % (m >> 16, m & 0xFFFF)  # noqa: UP031


@lru_cache(maxsize=4096)
def _tx_place(shard: int, seq: str) -> str:
    """:func:`tx_id`'s part after its row: ``-ssss-qqqqqqqqqqqq``."""
    return "-%04x-%012x" % (shard, int(seq or 0))  # noqa: UP031


def parse_tx_id(transaction_id: str) -> tuple[int, str, int] | None:
    """(shard, stream id, row) of an id made by :func:`tx_id`, or None for any other id."""
    m = _TX.fullmatch(transaction_id)
    if m is None:
        return None
    ms = (int(m.group(1), 16) << 16) | int(m.group(2), 16)
    return int(m.group(4), 16), f"{ms}-{int(m.group(5), 16)}", int(m.group(3), 16)


# ── the ledger row ────────────────────────────────────────────────────

# A ledger entry is one stream field, ``q``: one or more rows (one per decision; a batch's decisions
# share an entry) separated by "\n", each the entry's row of the Postgres ledger in COPY text
# (tab-separated, COPY-escaped, "" = NULL). The first columns are what the script computes; the rest
# (``CLIENT_COLUMNS``) arrive pre-escaped as one argument, the client's "fragment" of the row.
# An empty ``id`` (debits) is the row's place in the stream: :func:`tx_id`.
SCRIPT_COLUMNS = ("id", "ts", "kind", "amount", "bal", "held", "hold", "exp", "cap", "reason", "extra")
CLIENT_COLUMNS = ("op", "ak", "acct", "member", "rid", "model", "type", "idem", "meta")
ROW_COLUMNS = (*SCRIPT_COLUMNS, *CLIENT_COLUMNS)
ROW_FIELD = "q"

_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def copy_escape(value: str) -> str:
    """A value as COPY text (``FORMAT text``): backslash, tab, newline and CR escaped."""
    # four substring scans cost a third of one regex search on a short id (the hot path's common case)
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group(0)], value)
    return value


def fragment(op: str = "", ak: str = "u", acct: str = "", member: str = "", rid: str = "", model: str = "",
             type: str = "", idem: str = "", meta: str = "") -> str:
    """The client's part of a ledger row (``CLIENT_COLUMNS``), escaped, led by its tab."""
    return "\t" + "\t".join(copy_escape(v) for v in (op, ak, acct, member, rid, model, type, idem, meta))


_UNESCAPE = re.compile(r"\\(.)", re.S)
_UNESCAPED = {"t": "\t", "n": "\n", "r": "\r"}


def copy_unescape(value: str) -> str:
    """The value of COPY text (the inverse of :func:`copy_escape`)."""
    return _UNESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), value) if "\\" in value else value


def parse_row(text: str) -> dict[str, str]:
    """A ledger row's values by column name (``ROW_COLUMNS``), unescaped, empty ones left out."""
    return {name: copy_unescape(v) for name, v in zip(ROW_COLUMNS, text.split("\t"), strict=False) if v}
