"""Ledger entries (Redis stream fields, as bytes) -> PostgreSQL COPY text, fast; and back to values.

A script call appends ONE stream entry with one field, ``q``: its rows (one per decision, several
for a batch) joined by newlines, each a row of the Postgres ledger in COPY text (``FORMAT text,
NULL ''``), values in :data:`~ducto_redis.layout.ROW_COLUMNS` order, tab-separated and escaped
(ducto_redis/layout.py; lua/lib/03_ledger.lua writes them). The flusher only puts the columns Redis
cannot know in front of each row (namespace, shard, the stream id's two halves, the row's place in
the entry), names a row whose id is empty (debits) by its place (:func:`~ducto_redis.layout.tx_id`),
and turns ``ts`` (epoch ms) into a timestamp literal, ``YYYY-MM-DD HH:MM:SS.mmm+00``, with one
formatted prefix per second. A row with no ``ts`` takes its entry's (the stream id's milliseconds):
a single debit that writes its row before it reads the clock, and a batch of charges decided before
its time is known, take their time from that entry's id (lua/lib/08_debit.lua ``debit_clock``,
``many_stands``).

A row the fast path cannot take (a ``ts`` that is not epoch ms) takes the reference path: its values as a dict,
defaults, every value escaped. A payload whose tab or newline count is not exactly what its rows
must give is formatted again on the reference path, so Postgres reads exactly the values Redis holds.
Entries of the two older layouts (field ``r``: one row in the older column order; or one stream
field per value), still unflushed at an upgrade, take the reference path too: nothing is lost.
Reading an entry back (:func:`entry_rows`) gives each row's values by the scripts' column names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..layout import ROW_COLUMNS as ROW_FIELDS
from ..layout import ROW_FIELD as _ROW_FIELD
from ..layout import tx_id

COLUMN_OF = {
    "ts": "ts", "id": "entry_id", "ak": "account_kind", "acct": "account_id", "member": "member", "kind": "kind",
    "amount": "amount", "bal": "balance_after", "held": "held_after", "hold": "hold", "rid": "reservation_id",
    "op": "operation_type", "model": "model", "type": "tx_type", "idem": "idempotency_key", "exp": "expires_ms",
    "cap": "cap_action", "reason": "reason", "meta": "metadata", "extra": "extra",
}
ROW_COLUMNS = tuple(COLUMN_OF[f] for f in ROW_FIELDS)
# the order of the COPY lines: what the flusher knows first, then the row as the script wrote it
STREAM_COLUMNS = ("namespace", "shard", "stream_ms", "stream_seq", "stream_row")
COPY_COLUMNS = (*STREAM_COLUMNS, *ROW_COLUMNS)
# the table's columns (its key is (namespace, entry_id))
COLUMNS = ("entry_id", *STREAM_COLUMNS, *(c for c in ROW_COLUMNS if c != "entry_id"))
ROW_FIELD = _ROW_FIELD.encode()

# one entry: (shard, stream entry id, its fields as the flat [name, value, ...] list Redis sends)
Entry = tuple[int, bytes, list[bytes]]

_TAB, _NL = b"\t", b"\n"
_TABS = len(COPY_COLUMNS) - 1
_SECONDS: dict[bytes, bytes] = {}
_UNESCAPE = re.compile(rb"\\(.)", re.S)
_UNESCAPED = {b"t": b"\t", b"n": b"\n", b"r": b"\r"}


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


def _escape(v: bytes) -> bytes:
    if b"\\" in v:
        v = v.replace(b"\\", b"\\\\")
    return v.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _unescape(v: bytes) -> bytes:
    return _UNESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), v) if b"\\" in v else v


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


# the older row layout (field "r"): one row per entry, these columns, then ``extra``
LEGACY_ROW_FIELD = b"r"
LEGACY_ROW_FIELDS = ("ts", "id", "ak", "acct", "member", "kind", "amount", "bal", "held", "hold", "rid", "op",
                     "model", "type", "idem", "exp", "cap", "reason", "meta", "extra")


def _rows(flat: Sequence[Any]) -> list[bytes]:
    """An entry's rows (COPY text lines), or [] for an entry that is not in the row layout."""
    if len(flat) == 2 and _b(flat[0]) == ROW_FIELD:
        return _b(flat[1]).split(_NL)
    return []


def _line_values(line: bytes, names: Sequence[str] = ROW_FIELDS) -> dict[str, str]:
    # bytes that are not UTF-8 pass through unchanged (surrogateescape): PostgreSQL refuses the row,
    # and the flusher's quarantine keeps it, instead of the whole batch failing here
    cols = [_unescape(v).decode("utf-8", "surrogateescape") for v in line.split(_TAB)]
    return {name: v for name, v in zip(names, cols, strict=False) if v}


def _entry_values(flat: Sequence[Any]) -> list[dict[str, str]]:
    """Each row of an entry of any layout as raw values by the scripts' names (``extra`` as JSON text)."""
    rows = _rows(flat)
    if rows:
        return [_line_values(line) for line in rows]
    names = [_b(x).decode() for x in flat[0::2]]
    values = [_b(x) for x in flat[1::2]]
    if names == [LEGACY_ROW_FIELD.decode()]:
        return [_line_values(values[0], LEGACY_ROW_FIELDS)]
    known = {k: v.decode() for k, v in zip(names, values, strict=True) if v and k in COLUMN_OF}
    unknown = {k: v.decode() for k, v in zip(names, values, strict=True) if v and k not in COLUMN_OF}
    if unknown:
        known["extra"] = json.dumps(unknown)
    return [known]


def entry_rows(shard: int, stream_id: Any, fields: Mapping[Any, Any] | Sequence[Any]) -> list[dict[str, str]]:
    """A stream entry's rows, each its values by the scripts' column names (``id``, ``ts``, ``acct``,
    ...; ``extra``'s keys spread out), empty values left out, ``id`` named as the flusher names it.
    ``fields`` is a reply's dict or flat list (str or bytes)."""
    flat = [x for kv in fields.items() for x in kv] if isinstance(fields, Mapping) else list(fields)
    out = []
    for i, row in enumerate(_entry_values(flat)):
        if "extra" in row:
            row.update(json.loads(row.pop("extra")))
        if "id" not in row:
            row["id"] = tx_id(shard, _b(stream_id).decode(), i)
        if "ts" not in row:  # written before its call read the time: its entry's
            row["ts"] = _b(stream_id).decode().partition("-")[0]
        out.append(row)
    return out


def _meta(meta: str) -> str:
    """Metadata as JSON: an object is kept, anything else is wrapped as {"raw": ...}."""
    if not meta or meta[:1] == "{":
        return meta
    return json.dumps({"raw": meta})


def reference_line(namespace: bytes, shard: int, mid: bytes, index: int, f: dict[str, str]) -> bytes:
    """One COPY line from a row's values (the reference path): defaults, every value escaped."""
    ms, _, seq = mid.partition(b"-")
    values: dict[str, bytes] = {COLUMN_OF[k]: v.encode("utf-8", "surrogateescape") for k, v in f.items()}
    values.update(
        namespace=namespace, shard=b"%d" % shard, stream_ms=ms, stream_seq=seq or b"0", stream_row=b"%d" % index,
        entry_id=values.get("entry_id") or tx_id(shard, mid.decode(), index).encode(),
        ts=ts_text(values.get("ts") or ms), account_kind=values.get("account_kind") or b"u",
        amount=values.get("amount") or b"0", metadata=_meta(f.get("meta", "")).encode("utf-8", "surrogateescape"),
        kind=values.get("kind") or b"unknown", account_id=values.get("account_id") or b"",
    )
    return _TAB.join(_escape(values.get(c, b"")) for c in COPY_COLUMNS)


def _pieces(entries: Sequence[Entry], namespace: bytes) -> tuple[list[bytes], int]:
    """The payload's pieces and its number of rows."""
    out: list[bytes] = []
    extend = out.extend
    heads: dict[int, bytes] = {}
    seconds = _SECONDS
    escaped_ns = _escape(namespace)
    n = 0
    for shard, mid, flat in entries:
        head = heads.get(shard)
        if head is None:
            head = heads[shard] = escaped_ns + b"\t%d\t" % shard
        ms, _, seq = mid.partition(b"-")
        rows = _rows(flat)
        if not rows:  # an older layout
            for i, values in enumerate(_entry_values(flat)):
                n += 1
                extend((reference_line(namespace, shard, mid, i, values), _NL))
            continue
        for i, line in enumerate(rows):
            n += 1
            eid, _, rest = line.partition(_TAB)
            ts, _, rest = rest.partition(_TAB)
            if not ts:  # a row written before its call read the time: its entry's (debit_clock)
                ts = ms
            sec = seconds.get(ts[:-3])
            if sec is None and len(ts) >= 4 and ts.isdigit():
                sec = _second_prefix(ts[:-3])
            if sec is None:
                extend((reference_line(namespace, shard, mid, i, _line_values(line)), _NL))
                continue
            if not eid:
                eid = tx_id(shard, mid.decode(), i).encode()
            extend((head, ms, _TAB, seq or b"0", b"\t%d\t" % i, eid, _TAB, sec, ts[-3:], b"+00\t", rest, _NL))
    return out, n


def copy_rows(payload: bytes) -> list[tuple[str | None, ...]]:
    """The rows of a COPY text payload (:func:`copy_payload`'s), values in ``COPY_COLUMNS`` order,
    unescaped, ``None`` for NULL (an empty value): what a database without COPY inserts."""
    return [tuple(_unescape(v).decode() if v else None for v in line.split(_TAB))
            for line in payload.split(_NL) if line]


def copy_payload(entries: Sequence[Entry], namespace: str) -> bytes:
    """The COPY text (``NULL ''``) of ``entries``: one line per row, columns in ``COPY_COLUMNS`` order."""
    if not entries:
        return b""
    ns = namespace.encode()
    pieces, n = _pieces(entries, ns)
    payload = b"".join(pieces)
    if payload.count(_NL) != n or payload.count(_TAB) != n * _TABS:  # a row not as the scripts write it
        payload = b"".join(reference_line(ns, shard, mid, i, values) + _NL
                           for shard, mid, flat in entries for i, values in enumerate(_entry_values(flat)))
    return payload


def line_values(line: bytes) -> dict[str, bytes | None]:
    """One COPY line (as :func:`copy_payload` builds it, without its newline) back into its columns,
    unescaped; None for an empty value (COPY's NULL). A line with too few or too many values keeps
    what it has: the quarantine stores whatever can be read."""
    values = line.rstrip(_NL).split(_TAB)
    return {c: (_unescape(v) if v else None) for c, v in zip(COPY_COLUMNS, values, strict=False)}


def line_position(line: bytes) -> tuple[str, int, int, int, int]:
    """(namespace, shard, stream ms, stream seq, row in the entry) of a COPY line: the columns the
    flusher itself wrote."""
    ns, shard, ms, seq, row = ([*line.split(_TAB, 5), b"", b"", b"", b"", b""])[:5]
    return _unescape(ns).decode("utf-8", "replace"), _int(shard), _int(ms), _int(seq), _int(row)


def _int(v: bytes) -> int:
    return int(v) if v.isdigit() else -1
