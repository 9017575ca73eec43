"""Rebuild Redis from the ledger (restore) and compare the two (reconcile).

The rows come from a :class:`~ducto_redis.ledger.database.LedgerDatabase`: PostgreSQL (the
flusher's) or SQLite (MemoryStore's embedded ledger) — the same read, the same derivation.

Both derive each account's state from its ledger entries in stream order: balance and held
(the last entry's ``bal``/``held``), lifetime purchases, open holds, caps and rate limit (config
entries), the current day's and month's spend windows, and for teams the name, members (config
entries carry the member record), member totals, member windows and member holds.

Expiring grants (credit entries with an expiry, less what debits' ``gc``, ``credit_expired``
expiries and refunds' ``gr`` moved) come back with the account's ``gx`` field and the shard's grant
index; refund records come back for the debits still inside ``refund_window_seconds``.

Published pricing versions (config entries of the pricing stream, account kind ``p``) come back
as they were: every version, the last one active.

Not restored: idempotency keys (a retry within their TTL after a Redis loss decides again) and
the rate limiter's position (it starts fresh).

``recovery.py`` runs these: restore with its safety checks (backlog, live keys, dry run, another
namespace) and reconcile over both sides.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..core import shard_of_tx
from ..keys import member_window_field
from .database import LedgerDatabase

DAY_MS = 86_400_000
WINDOW_GRACE_MS = 3_600_000


def day_bucket(ms: int) -> tuple[int, int]:
    """(UTC day number, end of that day in ms) as lua/lib.lua's bucket_of('d')."""
    d = ms // DAY_MS
    return d, (d + 1) * DAY_MS


def month_bucket(ms: int) -> tuple[int, int]:
    """(year*12 + month - 1, end of that month in ms) as lua/lib.lua's bucket_of('m')."""
    t = datetime.fromtimestamp(ms / 1000, timezone.utc)
    ny, nm = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    end = int(datetime(ny, nm, 1, tzinfo=timezone.utc).timestamp() * 1000)
    return t.year * 12 + t.month - 1, end


@dataclass
class AccountState:
    """What the ledger says one account's Redis keys hold."""

    kind: str
    account_id: str
    exists: bool = False
    created_ms: int = 0
    bal: int = 0
    held: int = 0
    life: int = 0
    name: str = ""
    rate_limit: str | None = None
    quantity_limits: str | None = None  # the account hash's 'ql' (tokens per period...)
    holds: dict[str, tuple[int, int, str, str]] = field(default_factory=dict)  # rid -> amount, exp, op, member
    caps: dict[str, str] = field(default_factory=dict)
    day: dict[str, int] = field(default_factory=dict)  # "*" / "m|<model>" (users and team caps)
    month: dict[str, int] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)  # team: member -> record JSON
    mspend: dict[str, int] = field(default_factory=dict)
    mday: dict[str, int] = field(default_factory=dict)
    mmonth: dict[str, int] = field(default_factory=dict)
    grants: dict[str, list[int]] = field(default_factory=dict)  # grant id -> [expires ms, remaining]
    refundable: dict[str, list[Any]] = field(default_factory=dict)  # tx -> [amount, refunded, parts, ts ms]
    plan: str | None = None  # user: the plan id set last (None: never set)
    plan_used: dict[str, int] = field(default_factory=dict)  # user: plan id -> allowance used this month
    pricing: list[dict[str, Any]] = field(default_factory=list)  # kind "p": version records, in order

    def _plans(self, e: dict[str, Any], extra: dict[str, Any], kind: str, ts: int, now_ms: int) -> None:
        """Plan changes (config op plan_set) and allowance use this month ('free' on debits and on
        config op allowance_used), from the entry's extra fields."""
        if kind == "config" and e["operation_type"] == "plan_set":
            self.plan = extra.get("plan", "")
        free = int(extra.get("free") or 0)
        if free and extra.get("plan") and month_bucket(ts)[0] == month_bucket(now_ms)[0]:
            self.plan_used[extra["plan"]] = self.plan_used.get(extra["plan"], 0) + free

    def _grant_parts(self, parts: str, sign: int) -> None:
        """Move the parts "id:expires:amount;..." of a debit (sign -1) or a refund (+1)."""
        for part in filter(None, (parts or "").split(";")):
            gid, exp, n = part.rsplit(":", 2)
            g = self.grants.setdefault(gid, [int(exp), 0])
            g[1] += sign * int(n)
            if g[1] <= 0:
                del self.grants[gid]

    def _expiry_and_refunds(self, e: dict[str, Any], extra: dict[str, Any], kind: str, ts: int) -> None:
        if kind == "credit" and e["expires_ms"] and int(e["amount"]) > 0:
            self.grants[e["entry_id"]] = [int(e["expires_ms"]), int(e["amount"])]
        elif kind in ("debit", "settle") and int(e["amount"]) < 0:
            self._grant_parts(extra.get("gc", ""), -1)
            self.refundable[e["entry_id"]] = [-int(e["amount"]), 0, extra.get("gc", ""), ts]
        elif kind == "expire" and e["reason"] == "credit_expired":
            self._grant_parts(f"{extra.get('grant')}:{e['expires_ms']}:{-int(e['amount'])}", -1)
        elif kind == "refund":
            self._grant_parts(extra.get("gr", ""), 1)
            if extra.get("ref") in self.refundable:
                self.refundable[extra["ref"]][1] += int(e["amount"])

    def apply(self, e: dict[str, Any], now_ms: int) -> None:
        """Fold one ledger row (a dict of the table's columns) into the state."""
        kind = e["kind"]
        if self.kind == "p":
            if kind == "config" and e["operation_type"] == "pricing_set":
                self.pricing.append(e["metadata"])
            return
        ts = int(e["ts"].timestamp() * 1000)
        if e["balance_after"] is not None:
            self.bal, self.held = int(e["balance_after"]), int(e["held_after"] or 0)
        if kind == "credit":
            if not self.exists:
                self.exists, self.created_ms = True, ts
            if e["tx_type"] == "team_created":
                self.life += int(e["amount"])
                self.name = (e["metadata"] or {}).get("name", "")
            elif e["tx_type"] == "purchase":
                self.life += int(e["amount"])
        elif kind == "hold":
            self.holds[e["reservation_id"]] = (int(e["hold"]), int(e["expires_ms"] or 0),
                                               e["operation_type"] or "", e["member"] or "")
        elif kind in ("settle", "release", "expire") and e["reservation_id"]:
            self.holds.pop(e["reservation_id"], None)
        if kind in ("debit", "settle") and int(e["amount"]) < 0:
            self._spend(-int(e["amount"]), e["model"] or "", e["member"], ts, now_ms)
        if kind == "config":
            self._config(e)
        if self.kind == "u":
            extra = e.get("extra") or {}
            if isinstance(extra, str):
                extra = json.loads(extra)
            self._expiry_and_refunds(e, extra, kind, ts)
            self._plans(e, extra, kind, ts, now_ms)

    def _spend(self, amount: int, model: str, member: str | None, ts: int, now_ms: int) -> None:
        today, this_month = day_bucket(ts)[0] == day_bucket(now_ms)[0], month_bucket(ts)[0] == month_bucket(now_ms)[0]
        scopes = ["*"] + ([f"m|{model}"] if model else [])
        for scope in scopes:
            if today:
                self.day[scope] = self.day.get(scope, 0) + amount
            if this_month:
                self.month[scope] = self.month.get(scope, 0) + amount
        if member:
            self.mspend[member] = self.mspend.get(member, 0) + amount
            if today:
                self.mday[member] = self.mday.get(member, 0) + amount
            if this_month:
                self.mmonth[member] = self.mmonth.get(member, 0) + amount

    def _config(self, e: dict[str, Any]) -> None:
        op, meta = e["operation_type"], e["metadata"]
        if op in ("cap_set", "cap_removed"):
            f = ("d" if meta["cap_type"] == "daily" else "m") + (f"|{meta['model']}" if meta.get("model") else "")
            if op == "cap_set":
                self.caps[f] = f"{meta['limit']}|{meta['action']}"
            else:
                self.caps.pop(f, None)
        elif op == "rate_limit_set":
            self.rate_limit = meta.get("raw") if isinstance(meta, dict) else meta  # "limit|period_ms|burst"
        elif op == "rate_limit_removed":
            self.rate_limit = None
        elif op in ("quantity_limit_set", "quantity_limit_removed"):
            self.quantity_limits = (meta.get("ql") if isinstance(meta, dict) else None) or None
        elif op in ("member_added", "member_updated"):
            self.members[e["member"]] = json.dumps(meta, separators=(",", ":"))
        elif op == "member_removed":
            self.members.pop(e["member"], None)


def derive(source: LedgerDatabase, namespace: str, now_ms: int | None = None) -> Iterator[AccountState]:
    """The state of every account of the namespace, as the ledger in ``source`` (PostgreSQL or
    SQLite) says."""
    now_ms = now_ms or int(time.time() * 1000)
    state: AccountState | None = None
    for row in source.restore_rows(namespace):
        if row["metadata"] is not None and isinstance(row["metadata"], str):
            row["metadata"] = json.loads(row["metadata"])
        if state is None or (state.kind, state.account_id) != (row["account_kind"], row["account_id"]):
            if state is not None:
                yield state
            state = AccountState(row["account_kind"].strip(), row["account_id"])
        state.apply(row, now_ms)
    if state is not None:
        yield state


def _account_keys(store: Any, s: AccountState) -> Any:
    return store.core.keys.team(s.account_id) if s.kind == "t" else store.core.keys.user(s.account_id)


def pricing_records(s: AccountState) -> tuple[dict[str, str], dict[str, str]]:
    """(the active pricing hash, the versions hash) as pricing_set.lua wrote them. The config JSON is
    dumped again from the validated model, as ``set_active_pricing`` sent it, so publishing the same
    config after a restore is still a no-op."""
    from ..models import PricingConfigData

    versions: dict[str, str] = {}
    active: dict[str, str] = {}
    for rec in s.pricing:
        config = PricingConfigData.model_validate(rec["config"]).model_dump_json(exclude_none=True)
        label = rec.get("label") or ""
        version, ts = str(rec["version"]), str(rec["ts"])
        versions[version] = (f'{{"id":{json.dumps(rec["id"])},"version":{version},"label":{json.dumps(label)},'
                             f'"ts":{ts},"config":{config}}}')
        active = {"id": rec["id"], "version": version, "label": label, "ts": ts, "config": config}
    return active, versions


def _write_pricing(store: Any, s: AccountState) -> None:
    keys = store.core.keys
    active, versions = pricing_records(s)
    p = store.client.pipeline(transaction=False)
    p.delete(keys.pricing_active(), keys.pricing_versions())
    if versions:
        p.hset(keys.pricing_versions(), mapping=versions)
        p.hset(keys.pricing_active(), mapping=active)
    p.execute()


def write_state(store: Any, s: AccountState, now_ms: int) -> None:
    """Replace one account's keys in Redis with the derived state (one pipeline)."""
    if s.kind == "p":
        _write_pricing(store, s)
        return
    k = _account_keys(store, s)
    team = s.kind == "t"
    keys = [k.account, k.holds, k.hold_expiry, k.caps, k.day_window, k.month_window]
    if team:
        keys += [k.members, k.member_spend, k.member_day, k.member_month, k.member_held]
    p = store.client.pipeline(transaction=False)
    for key in keys:
        p.delete(key)
    acct: dict[str, str] = {}
    if s.exists:
        acct.update(bal=str(s.bal), held=str(s.held), life=str(s.life), created=str(s.created_ms))
        if team:
            acct.update(name=s.name, mc=str(len(s.members)))
    if s.rate_limit:
        acct["rl"] = s.rate_limit
    if s.quantity_limits:
        acct["ql"] = s.quantity_limits
    if not team:
        p.delete(k.grants)
        p.delete(k.plan_window)
        if s.plan is not None:
            acct["plan"] = s.plan
        if s.plan_used:
            m_bucket, m_end = month_bucket(now_ms)
            used = {f"p|{pid}": str(n) for pid, n in s.plan_used.items()}
            p.hset(k.plan_window, mapping={"_b": str(m_bucket), **used})
            p.pexpireat(k.plan_window, m_end + WINDOW_GRACE_MS)
    if s.grants:
        acct["gx"] = str(min(exp for exp, _ in s.grants.values()))
        p.hset(k.grants, mapping={gid: f"{exp}|{rem}" for gid, (exp, rem) in s.grants.items()})
        p.zadd(k.grant_index, {s.account_id: int(acct["gx"])})
    window_ms = store.settings.refund_window_seconds * 1000
    for tx, (amount, refunded, parts, ts) in s.refundable.items():
        # only debits refund_credits can find (ids carrying this account's shard), still in the window
        if ts + window_ms > now_ms and shard_of_tx(tx, store.core.keys.shards) == k.shard:
            p.set(k.refundable(tx), f"{amount}|{refunded}|{parts}|{s.account_id}")
            p.pexpireat(k.refundable(tx), ts + window_ms)
    if acct:
        p.hset(k.account, mapping=acct)
    mheld: dict[str, int] = {}
    for rid, (amount, exp, op, member) in s.holds.items():
        if team:
            p.hset(k.holds, rid, json.dumps({"a": str(amount), "e": str(exp), "m": member, "o": op}))
            mheld[member] = mheld.get(member, 0) + amount
        else:
            p.hset(k.holds, rid, f"{amount}|{exp}|{op}")
        p.zadd(k.hold_expiry, {rid: exp})
    if s.caps:
        p.hset(k.caps, mapping=s.caps)
    d_bucket, d_end = day_bucket(now_ms)
    m_bucket, m_end = month_bucket(now_ms)
    windows = ((k.day_window, s.day, d_bucket, d_end), (k.month_window, s.month, m_bucket, m_end))
    for key, values, bucket, end in windows:
        if values:
            p.hset(key, mapping={"_b": str(bucket), **{f: str(v) for f, v in values.items()}})
            p.pexpireat(key, end + WINDOW_GRACE_MS)
    if team:
        if s.members:
            p.hset(k.members, mapping=s.members)
        if s.mspend:
            p.hset(k.member_spend, mapping={m: str(v) for m, v in s.mspend.items()})
        for key, values, bucket, end in ((k.member_day, s.mday, d_bucket, d_end),
                                         (k.member_month, s.mmonth, m_bucket, m_end)):
            if values:
                p.hset(key, mapping={"_b": str(bucket), **{member_window_field(m): str(v) for m, v in values.items()}})
                p.pexpireat(key, end + WINDOW_GRACE_MS)
        if mheld:
            p.hset(k.member_held, mapping={m: str(v) for m, v in mheld.items()})
    p.execute()




def _int_fields(h: dict[str, str], skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {f: int(v) for f, v in h.items() if f not in skip and int(v) != 0}


def account_drift(store: Any, s: AccountState, now_ms: int) -> list[str]:
    """How Redis differs from the ledger for one account (empty when they agree)."""
    c = store.client
    found: list[str] = []

    def check(what: str, redis_value: Any, ledger_value: Any) -> None:
        if redis_value != ledger_value:
            found.append(f"{what}: redis={redis_value!r} ledger={ledger_value!r}")

    if s.kind == "p":
        active, versions = pricing_records(s)
        stored = c.hgetall(store.core.keys.pricing_versions())
        check("pricing versions", {v: json.loads(x) for v, x in stored.items()},
              {v: json.loads(x) for v, x in versions.items()})
        check("active pricing", c.hget(store.core.keys.pricing_active(), "version"), active.get("version"))
        return found
    k = _account_keys(store, s)
    acct = c.hgetall(k.account)

    if s.exists:
        check("balance", int(acct.get("bal", 0)), s.bal)
        check("held", int(acct.get("held", 0)), s.held)
        check("lifetime", int(acct.get("life", 0)), s.life)
    check("holds", set(c.hkeys(k.holds)), set(s.holds))
    check("caps", c.hgetall(k.caps), s.caps)
    if s.kind == "u":
        check("grants", c.hgetall(k.grants), {gid: f"{exp}|{rem}" for gid, (exp, rem) in s.grants.items()})
    for name, key, values, bucket in (("day window", k.day_window, s.day, day_bucket(now_ms)[0]),
                                      ("month window", k.month_window, s.month, month_bucket(now_ms)[0])):
        h = c.hgetall(key)
        check(name, _int_fields(h, ("_b",)) if h.get("_b") == str(bucket) else {}, values)
    if s.kind == "t":
        check("members", {m: json.loads(v) for m, v in c.hgetall(k.members).items()},
              {m: json.loads(v) for m, v in s.members.items()})
        check("member totals", _int_fields(c.hgetall(k.member_spend)), s.mspend)
        if s.exists:
            check("member count", int(acct.get("mc", 0)), len(s.members))
    return found
