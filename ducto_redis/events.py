"""Credit lifecycle events: ducto's ``CreditEventEmitter`` and ``CreditEvent``, and the reader that
delivers the events the Lua scripts write to Redis.

The manager emits ``credits.added``, ``credits.deducted``, ``credits.refunded``, ``credits.expired``,
``credits.low_balance`` and ``credits.plan_changed`` itself, after the store call. Cap events
(``credits.cap_warning``, ``credits.cap_reached``) are written by the debit scripts, in the same
atomic step as the decision, to the shard's events stream ``{ns:N}:events`` — whoever made the
debit (a gateway's ``charge`` as well as the manager). :class:`StreamEventReader` hands them to an
emitter through a Redis consumer group: each event is delivered to one reader of the group and
acknowledged after its handlers ran, so every event reaches a group exactly once (a handler that
raises leaves its event pending, and the next poll of that reader delivers it again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import ResponseError

from .core import tx_of

# ducto 1.0's ``ducto.events.CREDIT_EVENT_TYPES``, kept for code written against ducto
CREDIT_EVENT_TYPES = frozenset(
    {
        "credits.deducted",
        "credits.added",
        "credits.refunded",
        "credits.expired",
        "credits.cap_reached",
        "credits.cap_warning",
        "credits.low_balance",
        "credits.plan_changed",
    }
)

CreditEventType = str


@dataclass
class CreditEvent:
    """A credit lifecycle event (ducto's fields)."""

    type: CreditEventType
    timestamp: datetime
    user_id: str
    data: dict[str, Any] | None = field(default=None)


EventHandler = Callable[[CreditEvent], None]


class CreditEventEmitter:
    """Pub/sub of credit events by type; handlers run synchronously, in registration order."""

    def __init__(self) -> None:
        self._listeners: dict[CreditEventType, list[EventHandler]] = {}

    def on(self, type: CreditEventType, handler: EventHandler) -> None:
        """Register ``handler`` for events of ``type``."""
        self._listeners.setdefault(type, []).append(handler)

    def off(self, type: CreditEventType, handler: EventHandler) -> None:
        """Remove one registration of ``handler`` for ``type`` (no error if absent)."""
        handlers = self._listeners.get(type)
        if handlers:
            with contextlib.suppress(ValueError):
                handlers.remove(handler)

    def emit(self, event: CreditEvent) -> None:
        """Call every handler registered for ``event.type``."""
        for handler in list(self._listeners.get(event.type, ())):
            handler(event)

    def clear_type(self, type: CreditEventType) -> None:
        """Remove every handler of one type."""
        self._listeners.pop(type, None)

    def clear_all(self) -> None:
        """Remove every handler."""
        self._listeners.clear()


_INT_FIELDS = {"limit": "limit", "spend": "current_spend", "amount": "amount"}


def _shard_of_stream(stream: str) -> int:
    """The shard N of an events stream ``{ns:N}:events``."""
    return int(stream[stream.index(":") + 1 : stream.index("}")])


def event_from_stream(stream: str, entry_id: str, fields: dict[str, str]) -> CreditEvent:
    """A :class:`CreditEvent` from one entry of a Redis events stream (see ``cap_event`` in lua/lib/04_caps.lua).

    ``data["event_id"]`` (``"<stream>/<entry id>"``) is unique across shards: deduplicate on it.
    """
    data: dict[str, Any] = {"event_id": f"{stream}/{entry_id}"}
    for k, v in fields.items():
        if k in ("type", "ts", "acct"):
            continue
        if k in _INT_FIELDS:
            data[_INT_FIELDS[k]] = int(v)
        elif k == "ak":
            data["account_kind"] = "team" if v == "t" else "user"
        elif k == "ref":  # the decision's ledger row: its transaction id
            data["transaction_id"] = tx_of(_shard_of_stream(stream), v)
        else:
            data[k] = v
    data.setdefault("model", None)
    ts = int(fields.get("ts") or entry_id.split("-")[0])
    return CreditEvent(
        type=fields.get("type", "credits.unknown"),
        timestamp=datetime.fromtimestamp(ts / 1000, timezone.utc),
        user_id=fields.get("acct", ""),
        data=data,
    )


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class StreamEventReader:
    """Reads the shards' events streams with a consumer group and emits each event once.

    ``group`` names the audience: every group sees every event once (several managers in one
    group share the work; two groups each get everything). A group created now starts from the
    oldest event the stream still holds (streams are capped at ``DUCTO_EVENTS_MAXLEN``).
    """

    def __init__(self, client: Any, group: str = "ducto-events", consumer: str = "manager") -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self._ready: set[str] = set()

    def _ensure_group(self, stream: str) -> None:
        if stream in self._ready:
            return
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready.add(stream)

    def _read(self, stream: str, start: str, count: int) -> Any:
        try:
            return self.client.xreadgroup(self.group, self.consumer, {stream: start}, count=count)
        except ResponseError as exc:  # the stream or group was deleted since: make it again
            if "NOGROUP" not in str(exc):
                raise
            self._ready.discard(stream)
            self._ensure_group(stream)
            return self.client.xreadgroup(self.group, self.consumer, {stream: start}, count=count)

    def poll(self, emitter: CreditEventEmitter | None, streams: list[str], count: int = 100) -> int:
        """Deliver the waiting events of ``streams`` (this consumer's unacknowledged ones first);
        returns how many were emitted."""
        delivered = 0
        for stream in streams:
            self._ensure_group(stream)
            for start in ("0", ">"):  # own pending (a handler failed last time), then new ones
                while True:
                    got = self._read(stream, start, count)
                    entries = [(_s(i), {_s(k): _s(v) for k, v in (f or {}).items()})
                               for _, msgs in got or [] for i, f in msgs]
                    if not entries:
                        break
                    for entry_id, fields in entries:
                        if fields:  # empty: trimmed from the stream while pending
                            if emitter is not None:
                                emitter.emit(event_from_stream(stream, entry_id, fields))
                            delivered += 1
                        self.client.xack(stream, self.group, entry_id)
                    if start == "0" or len(entries) < count:
                        break
        return delivered
