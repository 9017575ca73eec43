"""The key schema: every Redis key name ducto-redis uses is built here and nowhere else.

Layout (``ns`` = namespace, ``N`` = shard of the account, ``<id>`` = escaped account id)::

    {ns:N}:u:<id>            HASH  a user account: every field a decision reads or writes (balance,
                                   state, holds, per-model windows and caps, refund markers, plan...;
                                   ducto_redis/layout.py defines each field's format)
    {ns:N}:t:<id>            HASH  a team pool: the same, plus its members (U|<member id>)
    {ns:N}:u:<id>:i:<key>    STRING remembered reply of an idempotency key (expires); the account's
                                   ``...:i`` (no key) is never written: a script's "no key" KEYS entry
    {ns:N}:u:<id>:grants     HASH  expiring grant id -> "expires_ms|remaining" (the account's state
                                   holds the earliest expiry; none = no grants)
    {ns:N}:gexp              ZSET  the shard's accounts with expiring grants, by earliest expiry
    {ns:N}:ri:<tx>:<key>     STRING remembered reply of a refund's idempotency key (expires)
    {ns:N}:ledger            STREAM the shard's ledger entries (flushed to Postgres)
    {ns:N}:events            STREAM the shard's events (cap warnings, ...)
    {ns:pricing}:active      STRING the active pricing config (JSON: id, version, label, config)
    {ns:pricing}:versions    HASH  version number -> that version's JSON (every version kept)
    {ns:pricing}:ledger      STREAM ledger entries of published pricing versions (flushed with the
                                   shards' streams; its rows carry shard number = shards)

The hash tag ``{ns:N}`` is the shard: every key one script touches shares it, ledger stream
included, so each script runs in one Redis Cluster slot. An account maps to its shard by
CRC32 of its kind and id, so the shard count is fixed for a namespace's life.

Ids may hold any text. ``escape_id`` percent-escapes ``%``, ``{``, ``}``, ``:``, white space
and control characters; the mapping is injective (``%`` itself is escaped), so two ids never
share a key and no id can reach outside its account's keys.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

USER = "u"
TEAM = "t"
_EVENTS = ":events"  # a shard's events stream: its hash tag, then this

MAX_ID_LENGTH = 4096

_ESCAPE = re.compile(r"[%{}:\s\x00-\x1f\x7f]")


def escape_id(raw: str) -> str:
    """Percent-escape the characters that could alter a key's structure (injective)."""
    return _ESCAPE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8")), raw)


def unescape_id(escaped: str) -> str:
    """The id ``escape_id`` made ``escaped`` from (its inverse: ``%`` is always escaped)."""
    return unquote(escaped, encoding="utf-8", errors="strict") if "%" in escaped else escaped


def shard_of(kind: str, account_id: str, shards: int) -> int:
    """The shard (hash tag) an account lives in."""
    return zlib.crc32(f"{kind}:{account_id}".encode()) % shards


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """Every key name of one account (user or team), all under the account's shard tag."""

    kind: str
    account_id: str
    shard: int
    tag: str
    base: str

    @property
    def account(self) -> str:
        return self.base

    @property
    def grants(self) -> str:
        """User only: expiring grant id -> "expires_ms|remaining" (layout.py Grant; lua/lib/07_grants.lua)."""
        return grants_of(self.base)

    @property
    def grant_index(self) -> str:
        """The shard's ZSET of accounts with expiring grants, scored by their earliest expiry."""
        return self.tag + ":gexp"

    @property
    def ledger(self) -> str:
        return self.tag + ":ledger"

    @property
    def events(self) -> str:
        return self.tag + _EVENTS

    def idempotency(self, key: str | None) -> str:
        """Key remembering the reply to ``key``; without a key, a name that is never written."""
        if not key:
            return no_idempotency_key(self.base)
        return self.base + ":i:" + escape_id(key)


def no_idempotency_key(account: str) -> str:
    """The name a script is given, where it takes an idempotency key per decision, for a decision
    without one: ``<account>:i``, never written (a script tells it from a real key by its length)."""
    return account + ":i"


def grants_of(account: str) -> str:
    """The grants hash of the user account whose key is ``account``."""
    return account + ":grants"


def events_of(key: str) -> str:
    """The events stream of the shard whose hash tag leads ``key`` (an account's key)."""
    return key[: key.index("}") + 1] + _EVENTS


LEFT_OUT: dict[str, Callable[[str], str]] = {"events": events_of, "grants": grants_of, "idem": no_idempotency_key}
"""What an optional KEY a call left out stands for, made from the call's first KEY (its account):
the shard's events stream, the account's grants hash, the never-written "no idempotency key" name."""


@dataclass(frozen=True, slots=True)
class LeftOutKeys:
    """The optional KEYS of one script (the last ones of its KEYS, in brackets in its spec): how a
    call that left them out is given them all. The one rule for a lean call's widened KEYS and for
    a lean call packed into a "many" twin."""

    required: int
    makers: tuple[Callable[[str], str], ...]
    made: Callable[[str], tuple[str, ...]] = field(init=False, repr=False, compare=False)
    """An account's optional KEYS, made once for the hot accounts (a batch fills every lean decision)."""

    def __post_init__(self) -> None:
        makers = self.makers
        object.__setattr__(self, "made", lru_cache(maxsize=8192)(lambda account: tuple(m(account) for m in makers)))

    @classmethod
    def of(cls, names: Sequence[str], optional: int, where: str) -> LeftOutKeys:
        """For a script whose KEYS are ``names``, the last ``optional`` of them optional. Raises for an
        optional KEY :data:`LEFT_OUT` cannot make."""
        opt = names[len(names) - optional:]
        unknown = [n for n in opt if n not in LEFT_OUT]
        if unknown:
            raise ValueError(f"{where}: no rule makes the optional KEY {unknown[0]!r} (keys.LEFT_OUT: "
                             f"{' '.join(LEFT_OUT)})")
        return cls(len(names) - optional, tuple(LEFT_OUT[n] for n in opt))

    def fill(self, keys: Sequence[str]) -> list[str]:
        """``keys`` with every optional KEY they leave out put back (a list: a new one if any was)."""
        n = len(keys)
        if n == self.required:
            return [*keys, *self.made(keys[0])]
        if n >= self.required + len(self.makers):
            return keys if isinstance(keys, list) else list(keys)
        return [*keys, *self.made(keys[0])[n - self.required:]]


class KeySchema:
    """Builds key names for one namespace and shard count."""

    def __init__(self, namespace: str, shards: int) -> None:
        if not namespace or any(c in namespace for c in "{}: \t\r\n"):
            raise ValueError("namespace: must be non-empty without '{', '}', ':' or white space")
        if shards < 1:
            raise ValueError("shards: must be at least 1")
        self.namespace = namespace
        self.shards = shards
        self._user = lru_cache(maxsize=65536)(self._build_user)
        self._team = lru_cache(maxsize=16384)(self._build_team)

    def tag(self, shard: int) -> str:
        """The hash tag of shard ``shard``."""
        return f"{{{self.namespace}:{shard}}}"

    def ledger_stream(self, shard: int) -> str:
        """The ledger stream of ``shard``."""
        return self.tag(shard) + ":ledger"

    def events_stream(self, shard: int) -> str:
        """The events stream of ``shard``."""
        return self.tag(shard) + _EVENTS

    def grant_index(self, shard: int) -> str:
        """The ZSET of ``shard``'s accounts with expiring grants, by earliest expiry (ms)."""
        return self.tag(shard) + ":gexp"

    def refund_idempotency(self, shard: int, transaction_id: str, key: str | None) -> str:
        """Remembered reply of a refund's idempotency key, scoped to the refunded transaction (a refund
        knows its shard, not its account, before it runs)."""
        if not key:
            return self.tag(shard) + ":ri"
        return self.tag(shard) + ":ri:" + transaction_id + ":" + escape_id(key)

    def all_ledger_streams(self) -> list[str]:
        """Every ledger stream: the shards' in shard order, then the pricing stream (number ``shards``)."""
        return [*(self.ledger_stream(s) for s in range(self.shards)), self.pricing_ledger()]

    def all_events_streams(self) -> list[str]:
        """Every shard's events stream."""
        return [self.events_stream(s) for s in range(self.shards)]

    def pricing_active(self) -> str:
        """The active pricing configuration (one hash tag of its own, read by no debit script)."""
        return f"{{{self.namespace}:pricing}}:active"

    def pricing_versions(self) -> str:
        """Every published pricing version, by version number."""
        return f"{{{self.namespace}:pricing}}:versions"

    def pricing_ledger(self) -> str:
        """The ledger stream of pricing versions (restore publishes them again from the ledger)."""
        return f"{{{self.namespace}:pricing}}:ledger"

    def user(self, user_id: str) -> AccountKeys:
        """Keys of a user account."""
        return self._user(user_id)

    def team(self, team_id: str) -> AccountKeys:
        """Keys of a team pool."""
        return self._team(team_id)

    def probe(self, shard: int) -> AccountKeys:
        """Keys of a never-used probe account in ``shard`` (health checks run real scripts on it)."""
        tag = self.tag(shard)
        return AccountKeys(USER, "", shard, tag, f"{tag}:probe")

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace (the embedded ledger's restart check)."""
        return f"{{{self.namespace}:*}}*"

    def account_of(self, key: str) -> tuple[str, str] | None:
        """(kind, id) of the account one of whose keys ``key`` is, or None for a shard's or the
        pricing's keys (the inverse of the account key names above; operators' tools only)."""
        prefix = "{" + self.namespace + ":"
        close = key.find("}:", len(prefix))
        if not key.startswith(prefix) or close < 0:
            return None
        kind, sep, rest = key[close + 2:].partition(":")
        if kind not in (USER, TEAM) or not sep:
            return None
        return kind, unescape_id(rest.partition(":")[0])

    def _build(self, kind: str, account_id: str) -> AccountKeys:
        shard = shard_of(kind, account_id, self.shards)
        tag = self.tag(shard)
        return AccountKeys(kind, account_id, shard, tag, f"{tag}:{kind}:{escape_id(account_id)}")

    def _build_user(self, user_id: str) -> AccountKeys:
        return self._build(USER, user_id)

    def _build_team(self, team_id: str) -> AccountKeys:
        return self._build(TEAM, team_id)
