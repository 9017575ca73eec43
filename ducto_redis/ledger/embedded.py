"""MemoryStore's embedded ledger: the ledger entries copied from the in-process streams into SQLite.

The scripts append entries to the shards' streams as they do on Redis. The entries new in a stream
(XRANGE from the last one copied) are turned into rows by ``copy_text`` exactly as the flusher
turns them for PostgreSQL, and inserted in one SQLite transaction; analytics and restore then read
SQLite as they read PostgreSQL (``database.py``, ``queries.py``, ``restore.py``). When:

* **a file** (``MemoryStore(ledger_file=...)``, ``DUCTO_LEDGER_FILE``): after every call, before it
  returns, so every decision that returned is in the file (WAL, ``synchronous=FULL``). A
  file-backed store that starts on a fresh in-process server rebuilds its state from the file (the
  same restore as from PostgreSQL): a single-process app keeps balances, holds, caps, teams, plans
  and grants across restarts with no server at all;
* **in memory** (the default): every :data:`COPY_EVERY` calls, and before anything reads the ledger
  (analytics, restore, reconcile, :meth:`EmbeddedLedger.entry`), so every read sees every decision
  made before it, at a fraction of the per-call cost (an in-memory ledger dies with the process
  either way).

Copied entries stay in the streams for their readers (refunds find a debit there): once
:data:`STREAM_TAIL` more have been copied, a stream is trimmed to its newest :data:`STREAM_TAIL`, so it
holds between one and two tails and memory stays bounded. Stores sharing one
in-process server (``AsyncMemoryStore(server=store.server)``) share one ledger per namespace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import fakeredis

from ..keys import KeySchema
from ..settings import Settings
from .copy_text import Entry, copy_payload
from .database import SqliteLedger

STREAM_TAIL = 1000
"""Copied entries kept in each stream (the most recent); older ones are trimmed."""
COPY_EVERY = 256
"""An in-memory ledger copies the streams touched once per this many calls (and before any read)."""

_REGISTRY_LOCK = threading.Lock()
_ATTRIBUTE = "_ducto_ledgers"  # on the in-process server: its ledgers live and die with it


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


class EmbeddedLedger:
    """Copies one namespace's ledger streams, on one in-process server, into a :class:`SqliteLedger`."""

    def __init__(self, server: Any, keys: KeySchema, path: str | Path | None = None) -> None:
        self.db = SqliteLedger(path)
        self.path = self.db.path
        self.namespace = keys.namespace
        self.client: Any = fakeredis.FakeRedis(server=server)  # bytes: the flusher's fast path
        self.shard_of = {name: shard for shard, name in enumerate(keys.all_ledger_streams())}
        self._last: dict[str, bytes] = {}
        self._since_trim: dict[str, int] = {}
        self._pending: set[str] = set()  # streams written since the last copy (in-memory ledger)
        self._calls = 0
        self._lock = threading.RLock()

    @classmethod
    def open(cls, server: Any, settings: Settings, keys: KeySchema) -> EmbeddedLedger:
        """The ledger of ``keys.namespace`` on ``server``, shared by every store on that server (a
        second store naming another file is refused). Opened on a file that holds entries of the
        namespace, with the server holding none of its keys (a fresh process), it first rebuilds the
        namespace's state in the server from the file."""
        with _REGISTRY_LOCK:
            by_namespace: dict[str, EmbeddedLedger] = getattr(server, _ATTRIBUTE, None) or {}
            setattr(server, _ATTRIBUTE, by_namespace)
            found = by_namespace.get(keys.namespace)
            path = settings.ledger_file
            if found is not None:
                if path is not None and str(path) != found.path:
                    raise ValueError(f"ledger_file: namespace {keys.namespace!r} on this server already keeps its "
                                     f"ledger in {found.path or 'memory'}, not {path}")
                return found
            ledger = by_namespace[keys.namespace] = cls(server, keys, path)
        if ledger.path is not None:
            ledger._restore(server, settings, keys)
        return ledger

    def _restore(self, server: Any, settings: Settings, keys: KeySchema) -> None:
        from ..store import RedisStore
        from .recovery import restore

        if not self.db.rows("SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (keys.namespace,)):
            return
        if next(iter(self.client.scan_iter(match=keys.pattern(), count=1000)), None) is not None:
            return  # the server already holds this namespace: it is the live state
        # a fresh server: the file is the whole truth, nothing in the server to protect
        restore(RedisStore(fakeredis.FakeRedis(server=server, decode_responses=True), settings), self.db, force=True)
        self.resume()

    def after(self, keys: Iterable[str]) -> None:
        """A call naming ``keys`` ran: copy its streams now (a file), or note them for the next copy."""
        streams = [k for k in keys if k in self.shard_of]
        if not streams:
            return
        if self.path is not None:
            self.copy(streams)
            return
        with self._lock:
            self._pending.update(streams)
            self._calls += 1
            if self._calls >= COPY_EVERY:
                self.flush()

    def flush(self) -> int:
        """Copy what the streams written since the last copy hold; returns how many entries."""
        with self._lock:
            return self.copy(sorted(self._pending))

    def entry(self, namespace: str, entry_id: str) -> dict[str, Any] | None:
        """One entry by id, the ledger brought up to date first (a :class:`LedgerReader`)."""
        self.flush()
        return self.db.entry(namespace, entry_id)

    def copy(self, streams: Sequence[str] | None = None) -> int:
        """Copy the entries new in ``streams`` (default: every stream) into SQLite; returns how many."""
        with self._lock:
            self._pending.difference_update(self.shard_of if streams is None else streams)
            self._calls = 0
            entries: list[Entry] = []
            read: dict[str, list[bytes]] = {}
            for stream in self.shard_of if streams is None else streams:
                start = b"(" + self._last[stream] if stream in self._last else b"-"
                for mid, fields in self.client.xrange(stream, min=start):
                    entries.append((self.shard_of[stream], mid, [x for kv in fields.items() for x in kv]))
                    read.setdefault(stream, []).append(mid)
            if not entries:
                return 0
            self.db.append(copy_payload(entries, self.namespace))
            for stream, ids in read.items():
                self._last[stream] = ids[-1]
                self._since_trim[stream] = self._since_trim.get(stream, 0) + len(ids)
                if self._since_trim[stream] >= STREAM_TAIL:
                    self._trim(stream)
            return len(entries)

    def _trim(self, stream: str) -> None:
        """Drop the stream's entries older than its last :data:`STREAM_TAIL`, all of them copied."""
        self._since_trim[stream] = 0
        kept = self.client.xrevrange(stream, count=STREAM_TAIL)
        if len(kept) < STREAM_TAIL:
            return
        oldest_kept = _stream_id(kept[-1][0])
        ms, seq = _stream_id(self._last[stream])
        minid = min(oldest_kept, (ms, seq + 1))  # never past an entry not yet copied
        self.client.xtrim(stream, minid=f"{minid[0]}-{minid[1]}", approximate=False)

    def unflushed_start(self, stream: str) -> str | None:
        """Where the entries of ``stream`` not yet copied begin (an XRANGE start), None when the
        stream holds none."""
        with self._lock:
            last = self._last.get(stream)
            start = "-" if last is None else "(" + last.decode()
            return start if self.client.xrange(stream, min=start, count=1) else None

    def resume(self) -> None:
        """After a restart: each stream continues after the last id the file holds, so entries of the
        new run never take an id (nor an id derived from one) of an earlier run."""
        with self._lock:
            streams = {shard: name for name, shard in self.shard_of.items()}
            for shard, (ms, seq) in self.db.last_stream_ids(self.namespace).items():
                stream = streams.get(shard)
                if stream is None or self.client.exists(stream):
                    continue
                mid = f"{ms}-{seq}".encode()
                self.client.xadd(stream, {"_": "resume"}, id=mid)
                self.client.xdel(stream, mid)
                self._last[stream] = mid

    def close(self) -> None:
        """Close the SQLite database (the file keeps every entry copied)."""
        self.db.close()
