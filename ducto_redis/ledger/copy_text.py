"""Ledger entries (Redis stream fields, as bytes) -> PostgreSQL COPY text, fast.

The flusher's hot loop. One line per entry, columns in ``COPY_COLUMNS`` order, for
``COPY ... (FORMAT text, NULL '')``: an absent field is an empty field, i.e. NULL (empty values were
mapped to NULL before too; the Lua scripts never write an empty field). Timestamps are rendered as
``YYYY-MM-DD HH:MM:SS.mmm+00`` from the entry's ``ts`` (ms) with one formatted prefix per second,
so rows can go straight into the ledger table.

Entries made by the same script path carry the same field names in the same order (a *shape*).
For each shape a C-level ``itemgetter`` picking the columns out of the entry's values is built
once; an entry then costs a few slices and one join. Shapes without an id, with a field not in a
column of its own (it goes to the ``extra`` JSON) or with a repeated field take the general path.

Values that need COPY escaping (backslash, tab, newline, carriage return) are rare: a batch is
first formatted without escaping, then checked with C-speed scans (exact count of tabs and
newlines, no backslash, no CR); a batch that fails the check is formatted again, escaping every
field. Either way Postgres reads exactly the values Redis holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

COLUMNS = (
    "entry_id", "namespace", "shard", "stream_ms", "stream_seq", "ts", "account_kind", "account_id", "member",
    "kind", "amount", "balance_after", "held_after", "hold", "reservation_id", "operation_type", "model",
    "tx_type", "idempotency_key", "expires_ms", "cap_action", "reason", "metadata", "extra",
)
# the order of the COPY lines: the per-stream constants first, then the entry's own values
COPY_COLUMNS = ("namespace", "shard", *(c for c in COLUMNS if c not in ("namespace", "shard")))
# column -> stream field, for the columns read from the entry's fields
FIELD_OF = {
    "entry_id": b"id", "account_kind": b"ak", "account_id": b"acct", "member": b"member", "kind": b"kind",
    "amount": b"amount", "balance_after": b"bal", "held_after": b"held", "hold": b"hold",
    "reservation_id": b"rid", "operation_type": b"op", "model": b"model", "tx_type": b"type",
    "idempotency_key": b"idem", "expires_ms": b"exp", "cap_action": b"cap", "reason": b"reason",
    "metadata": b"meta",
}
KNOWN = frozenset((*FIELD_OF.values(), b"ts"))

# one entry: (shard, stream entry id, its fields as the flat [name, value, ...] list Redis sends)
Entry = tuple[int, bytes, list[bytes]]

_E = b""
_TAB = b"\t"
_TABS = len(COLUMNS) - 1
_SECONDS: dict[bytes, bytes] = {}


def _second_prefix(head: bytes) -> bytes:
    """b"YYYY-MM-DD HH:MM:SS." for the epoch second ``head`` (cached: a batch spans few seconds)."""
    p = _SECONDS.get(head)
    if p is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        t = datetime.fromtimestamp(int(head), timezone.utc)
        p = _SECONDS[head] = t.strftime("%Y-%m-%d %H:%M:%S.").encode()
    return p


def ts_text(ms: bytes) -> bytes:
    """Epoch milliseconds (ASCII digits) as a timestamptz literal in UTC."""
    if len(ms) >= 4 and ms.isdigit():
        return _second_prefix(ms[:-3]) + ms[-3:] + b"+00"
    t = datetime.fromtimestamp(int(ms) / 1000, timezone.utc)  # negative or tiny: the slow way
    return t.isoformat(timespec="milliseconds").encode()


def _meta(meta: bytes) -> bytes:
    """Metadata as JSON: an object is kept, anything else is wrapped as {"raw": ...}."""
    if not meta or meta[:1] == b"{":
        return meta
    return json.dumps({"raw": meta.decode()}).encode()


def _escape(v: bytes) -> bytes:
    if b"\\" in v:
        v = v.replace(b"\\", b"\\\\")
    return v.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


class _Shape:
    """How to turn the values of entries with one field list into a line."""

    __slots__ = ("fast", "getter", "meta", "n", "ts")

    def __init__(self, names: tuple[bytes, ...]) -> None:
        n = len(names)
        pos = {name: i for i, name in enumerate(names)}
        self.n = n
        # the fast path needs an id, the defaulted fields, and nothing for the `extra` JSON
        self.fast = (len(pos) == n and KNOWN.issuperset(names)
                     and all(k in pos for k in (b"id", b"ts", b"ak", b"amount")))
        self.ts = pos.get(b"ts", -1)
        self.meta = pos.get(b"meta", -1)
        # values are extended with: stream ms (n), stream seq (n + 1), ts text (n + 2), empty (n + 3)
        extra_at = {"stream_ms": n, "stream_seq": n + 1, "ts": n + 2}
        picks = [extra_at[c] if c in extra_at else pos.get(FIELD_OF.get(c, b"\0"), n + 3) for c in COPY_COLUMNS[2:]]
        self.getter: Callable[[list[bytes]], tuple[bytes, ...]] = itemgetter(*picks)


_SHAPES: dict[tuple[bytes, ...], _Shape] = {}


def _general_line(head: bytes, namespace: bytes, shard: int, mid: bytes, flat: list[bytes], escape: bool) -> bytes:
    """One line from any entry (the reference path): dict semantics, defaults, extra JSON."""
    it = iter(flat)
    f: dict[bytes, bytes] = dict(zip(it, it, strict=False))
    g = f.get
    ms, _, seq = mid.partition(b"-")
    extra = {k.decode(): v.decode() for k, v in f.items() if k not in KNOWN}
    values: dict[str, Any] = {c: g(k, _E) for c, k in FIELD_OF.items()}
    values.update(
        entry_id=g(b"id") or b"%s:%d:%s" % (namespace, shard, mid), stream_ms=ms, stream_seq=seq or b"0",
        ts=ts_text(g(b"ts") or ms), account_kind=g(b"ak") or b"u", amount=g(b"amount") or b"0",
        metadata=_meta(g(b"meta", _E)), extra=json.dumps(extra).encode() if extra else _E,
    )
    cols = [values[c] for c in COPY_COLUMNS[2:]]
    if escape:
        cols = [_escape(c) for c in cols]
    return head + _TAB.join(cols)


def _lines(entries: Sequence[Entry], namespace: bytes, escape: bool) -> list[bytes]:
    out: list[bytes] = []
    append = out.append
    heads: dict[int, bytes] = {}
    shapes = _SHAPES
    seconds = _SECONDS
    join = _TAB.join
    for shard, mid, flat in entries:
        head = heads.get(shard)
        if head is None:
            head = heads[shard] = (_escape(namespace) if escape else namespace) + b"\t%d\t" % shard
        names = tuple(flat[0::2])
        shape = shapes.get(names)
        if shape is None:
            if len(shapes) > 10_000:
                shapes.clear()
            shape = shapes[names] = _Shape(names)
        if not shape.fast or escape:
            append(_general_line(head, namespace, shard, mid, flat, escape))
            continue
        values = flat[1::2]
        ms, _, seq = mid.partition(b"-")
        ts = values[shape.ts]
        if len(ts) >= 4 and ts.isdigit():
            sec = seconds.get(ts[:-3]) or _second_prefix(ts[:-3])
            tstext = sec + ts[-3:] + b"+00"
        else:
            tstext = ts_text(ts or ms)
        if shape.meta >= 0:
            meta = values[shape.meta]
            if meta[:1] != b"{":
                values[shape.meta] = _meta(meta)
        values += (ms, seq or b"0", tstext, _E)
        append(head + join(shape.getter(values)))
    return out


def copy_payload(entries: Sequence[Entry], namespace: str) -> bytes:
    """The COPY text (``NULL ''``) of ``entries``, one line each, columns in ``COPY_COLUMNS`` order."""
    if not entries:
        return b""
    ns = namespace.encode()
    payload = b"\n".join(_lines(entries, ns, False)) + b"\n"
    n = len(entries)
    if (b"\\" in payload or b"\r" in payload or payload.count(b"\n") != n
            or payload.count(b"\t") != n * _TABS):
        payload = b"\n".join(_lines(entries, ns, True)) + b"\n"
    return payload
