"""Ledger entries (Redis stream fields, as bytes) -> PostgreSQL COPY text, fast; and back to fields.

The scripts store each ledger entry as ONE stream field, ``r``: the entry's row in COPY text
(``FORMAT text, NULL ''``), values in ``ROW_FIELDS`` order, tab-separated and COPY-escaped by Lua
(lib.lua's ``ledger``). The flusher only puts the columns Redis cannot know in front of it (namespace,
shard, the stream id's two halves) and turns the row's first value, ``ts`` (epoch ms), into a
timestamp literal, ``YYYY-MM-DD HH:MM:SS.mmm+00``, with one formatted prefix per second: an entry
costs two partitions and one list extend.

Entries in the older layout (one stream field per value, written before the row layout) and any
row the fast path cannot take (no ``ts`` or id) take the reference path: the entry's fields as a
dict, defaults, every value escaped. A payload whose tab or newline count is not exactly what its
entries must give is formatted again on the reference path, so Postgres reads exactly the values
Redis holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

# the row's values in order, by the scripts' field names (lib.lua's LEDGER_ROW), then `extra`
ROW_FIELDS = ("ts", "id", "ak", "acct", "member", "kind", "amount", "bal", "held", "hold", "rid", "op",
              "model", "type", "idem", "exp", "cap", "reason", "meta")
COLUMN_OF = {
    "ts": "ts", "id": "entry_id", "ak": "account_kind", "acct": "account_id", "member": "member", "kind": "kind",
    "amount": "amount", "bal": "balance_after", "held": "held_after", "hold": "hold", "rid": "reservation_id",
    "op": "operation_type", "model": "model", "type": "tx_type", "idem": "idempotency_key", "exp": "expires_ms",
    "cap": "cap_action", "reason": "reason", "meta": "metadata",
}
ROW_COLUMNS = (*(COLUMN_OF[f] for f in ROW_FIELDS), "extra")
# the order of the COPY lines: what the flusher knows first, then the row as the script wrote it
COPY_COLUMNS = ("namespace", "shard", "stream_ms", "stream_seq", *ROW_COLUMNS)
COLUMNS = ("entry_id", "namespace", "shard", "stream_ms", "stream_seq", *(c for c in ROW_COLUMNS if c != "entry_id"))
ROW_FIELD = b"r"

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


def entry_fields(fields: Mapping[Any, Any] | Sequence[Any]) -> dict[str, str]:
    """A stream entry's fields by name, as the scripts named them (``id``, ``ts``, ``acct``, ...;
    ``extra``'s keys are spread out), empty values left out: the same dict for the row layout and
    for the older one-field-per-value layout. ``fields`` is a reply's dict or flat list (str or bytes).
    """
    flat = [x for kv in fields.items() for x in kv] if isinstance(fields, Mapping) else list(fields)
    names = [_b(x) for x in flat[0::2]]
    values = [_b(x) for x in flat[1::2]]
    if names != [ROW_FIELD]:
        return {k.decode(): v.decode() for k, v in zip(names, values, strict=True) if v}
    cols = [_unescape(v).decode() for v in values[0].split(_TAB)]
    out = {name: v for name, v in zip(ROW_FIELDS, cols, strict=False) if v}
    if len(cols) > len(ROW_FIELDS) and cols[len(ROW_FIELDS)]:
        out.update(json.loads(cols[len(ROW_FIELDS)]))
    return out


def _meta(meta: str) -> str:
    """Metadata as JSON: an object is kept, anything else is wrapped as {"raw": ...}."""
    if not meta or meta[:1] == "{":
        return meta
    return json.dumps({"raw": meta})


def reference_line(namespace: bytes, shard: int, mid: bytes, flat: list[bytes]) -> bytes:
    """One line from any entry (the reference path): fields as a dict, defaults, every value escaped."""
    f = entry_fields(flat)
    ms, _, seq = mid.partition(b"-")
    extra = {k: v for k, v in f.items() if k not in COLUMN_OF}
    values: dict[str, bytes] = {COLUMN_OF[k]: v.encode() for k, v in f.items() if k in COLUMN_OF}
    values.update(
        namespace=namespace, shard=b"%d" % shard, stream_ms=ms, stream_seq=seq or b"0",
        entry_id=values.get("entry_id") or b"%s:%d:%s" % (namespace, shard, mid),
        ts=ts_text(values.get("ts") or ms), account_kind=values.get("account_kind") or b"u",
        amount=values.get("amount") or b"0", metadata=_meta(f.get("meta", "")).encode(),
        extra=json.dumps(extra).encode() if extra else b"",
    )
    return _TAB.join(_escape(values.get(c, b"")) for c in COPY_COLUMNS)


def _pieces(entries: Sequence[Entry], namespace: bytes) -> list[bytes]:
    """The payload's pieces: rows on the fast path, anything else through ``reference_line``."""
    out: list[bytes] = []
    extend = out.extend
    heads: dict[int, bytes] = {}
    seconds = _SECONDS
    escaped_ns = _escape(namespace)
    for shard, mid, flat in entries:
        head = heads.get(shard)
        if head is None:
            head = heads[shard] = escaped_ns + b"\t%d\t" % shard
        if len(flat) == 2 and flat[0] == ROW_FIELD:
            ts, _, rest = flat[1].partition(_TAB)
            sec = seconds.get(ts[:-3])
            if sec is None and len(ts) >= 4 and ts.isdigit():
                sec = _second_prefix(ts[:-3])
            if sec is not None and rest[:1] != _TAB:  # a time and an id: the fast path
                ms, _, seq = mid.partition(b"-")
                extend((head, ms, _TAB, seq or b"0", _TAB, sec, ts[-3:], b"+00\t", rest, _NL))
                continue
        extend((reference_line(namespace, shard, mid, flat), _NL))
    return out


def copy_rows(payload: bytes) -> list[tuple[str | None, ...]]:
    """The rows of a COPY text payload (:func:`copy_payload`'s), values in ``COPY_COLUMNS`` order,
    unescaped, ``None`` for NULL (an empty value): what a database without COPY inserts."""
    return [tuple(_unescape(v).decode() if v else None for v in line.split(_TAB))
            for line in payload.split(_NL) if line]


def copy_payload(entries: Sequence[Entry], namespace: str) -> bytes:
    """The COPY text (``NULL ''``) of ``entries``, one line each, columns in ``COPY_COLUMNS`` order."""
    if not entries:
        return b""
    ns = namespace.encode()
    payload = b"".join(_pieces(entries, ns))
    n = len(entries)
    if payload.count(_NL) != n or payload.count(_TAB) != n * _TABS:  # a row not as the scripts write it
        payload = b"".join(reference_line(ns, shard, mid, flat) + _NL for shard, mid, flat in entries)
    return payload


def line_values(line: bytes) -> dict[str, bytes | None]:
    """One COPY line (as :func:`copy_payload` builds it, without its newline) back into its columns,
    unescaped; None for an empty value (COPY's NULL). A line with too few or too many values keeps
    what it has: the quarantine stores whatever can be read."""
    values = line.rstrip(_NL).split(_TAB)
    return {c: (_unescape(v) if v else None) for c, v in zip(COPY_COLUMNS, values, strict=False)}


def line_position(line: bytes) -> tuple[str, int, int, int]:
    """(namespace, shard, stream ms, stream seq) of a COPY line: the columns the flusher itself wrote."""
    ns, shard, ms, seq = ([*line.split(_TAB, 4), b"", b"", b"", b""])[:4]
    return _unescape(ns).decode("utf-8", "replace"), _int(shard), _int(ms), _int(seq)


def _int(v: bytes) -> int:
    return int(v) if v.isdigit() else -1
