"""The flusher's consumer group on each ledger stream: created (again after a Redis restart),
acknowledged and trimmed after each commit, and kept free of dead consumers."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import ResponseError

log = logging.getLogger("ducto_redis.flusher")

GROUP = "ducto-flusher"

# Remove, atomically, the consumers of a stream's group that hold no pending entry and have been idle
# at least ARGV[2] ms: all but ARGV[3] (this flusher), or only ARGV[4] when given. Atomic, so a
# consumer that reads in between is either seen with its entries (kept) or re-created by its read.
_REAP = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  local wanted = (ARGV[4] ~= '' and f['name'] == ARGV[4]) or (ARGV[4] == '' and f['name'] ~= ARGV[3])
  if wanted and tonumber(f['pending']) == 0 and tonumber(f['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""


def group_gone(exc: BaseException) -> bool:
    """A reply saying the consumer group (or the stream) is gone."""
    text = str(exc)
    return isinstance(exc, ResponseError) and ("NOGROUP" in text or "no such key" in text)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def trim_point(last_delivered: Any, pending: Any) -> str:
    """The MINID below which a stream's entries are stored and acknowledged.

    ``last_delivered`` must have been read before ``pending`` (the pending summary): an entry is
    pending from delivery until its ack, and delivery is in id order, so everything below the
    oldest pending id is acknowledged, and with nothing pending everything delivered up to
    ``last_delivered`` is.
    """
    if pending and pending.get("pending"):
        return _text(pending["min"])
    ms, _, seq = _text(last_delivered).partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class ConsumerGroups:
    """The Redis side of :class:`~ducto_redis.ledger.flusher.LedgerFlusher` (a mixin: it uses the
    flusher's client, streams, consumer name and ``claim_idle_ms``)."""

    client: Any
    cluster: bool
    streams: list[bytes]
    consumer: str
    claim_idle_ms: int
    regrouped: int
    reaped: int
    _groups_ready: bool

    def ensure_groups(self) -> None:
        """Create the consumer group on every shard stream (MKSTREAM; existing groups are kept)."""
        for s in self.streams:
            try:
                self.client.xgroup_create(s, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _regroup(self, exc: BaseException) -> None:
        """The group is gone (Redis restarted or the namespace's keys were deleted): create it again.
        Entries it delivers again are stored once (the idempotent path)."""
        self.regrouped += 1
        log.warning("consumer group %s is missing (%s): Redis restarted or its keys were deleted; re-creating it",
                    GROUP, str(exc).splitlines()[0])
        self._groups_ready = False
        self.ensure_groups()

    def reap_consumers(self, *, only_self: bool = False) -> int:
        """Remove from the group the consumers that hold nothing and were idle ``claim_idle_ms`` (dead
        flushers: their entries were claimed by now), or with ``only_self`` this flusher's own consumer
        if it holds nothing. Returns how many were removed."""
        me = self.consumer.encode()
        idle = 0 if only_self else self.claim_idle_ms
        args = (GROUP, idle, me, me if only_self else b"")
        if self.cluster:  # a cluster pipeline runs no scripts: one call per stream, each to its node
            replies: list[Any] = []
            for s in self.streams:
                try:
                    replies.append(self.client.eval(_REAP, 1, s, *args))
                except redis.RedisError as exc:
                    replies.append(exc)
        else:
            pipe = self.client.pipeline(transaction=False)
            for s in self.streams:
                pipe.eval(_REAP, 1, s, *args)
            replies = pipe.execute(raise_on_error=False)
        removed = sum(int(n) for n in replies if not isinstance(n, Exception))
        if removed and not only_self:
            log.info("removed %d idle consumer(s) holding no entries from group %s", removed, GROUP)
        self.reaped += removed
        return removed

    def pending_elsewhere(self) -> int:
        """Entries of the namespace delivered to a consumer and not yet acknowledged (XPENDING)."""
        pipe = self.client.pipeline(transaction=False)
        for s in self.streams:
            pipe.xpending(s, GROUP)
        replies = pipe.execute(raise_on_error=False)
        return sum(int(r.get("pending", 0)) for r in replies if isinstance(r, dict))

    def _ack_and_trim(self, by_stream: dict[int, list[bytes]]) -> None:
        """XACK the batch, then XTRIM each stream it touched: two pipelined round trips."""
        shards = list(by_stream)
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            s = self.streams[shard]
            pipe.xack(s, GROUP, *by_stream[shard])
            pipe.xinfo_groups(s)  # the last delivered id, read BEFORE the pending summary
            pipe.xpending(s, GROUP)
        replies = pipe.execute(raise_on_error=False)
        gone = next((r for r in replies if isinstance(r, Exception) and group_gone(r)), None)
        failed = next((r for r in replies if isinstance(r, Exception) and not group_gone(r)), None)
        if failed is not None:
            raise failed
        if gone is not None:  # committed already; the group vanished since the read: nothing to ack
            self._regroup(gone)
            return
        pipe = self.client.pipeline(transaction=False)
        for i, shard in enumerate(shards):
            groups, pending = replies[3 * i + 1], replies[3 * i + 2]
            group = next((g for g in groups if _text(g["name"]) == GROUP), None)
            if group is None:
                continue
            pipe.xtrim(self.streams[shard], minid=trim_point(group["last-delivered-id"], pending), approximate=False)
        pipe.execute()
