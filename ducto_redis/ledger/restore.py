"""Rebuild Redis from the ledger (restore) and compare the two (reconcile).

The rows come from a :class:`~ducto_redis.ledger.database.LedgerDatabase`: PostgreSQL (the
flusher's) or SQLite (MemoryStore's embedded ledger) — the same read, the same derivation.

Both derive each account's hash (ducto_redis/layout.py :class:`~ducto_redis.layout.Account`) from
its ledger rows in stream order: balance and held (the last row's), lifetime purchases, open holds,
caps and rate limit (config rows), today's and this month's spend (all models, and per model), the
plan and its allowance use this month, refund markers (a refunded debit stays refunded), and for
teams the name and members (config rows carry the member record) with their spend and holds.
Expiring grants (credit rows with an expiry, less what debits' ``gc``, ``credit_expired`` expiries
and refunds' ``gr`` moved) come back with the shard's grant index. Each shard's stream is set past
the last id the ledger holds, so new rows never reuse a debit's id.

Published pricing versions (config rows of the pricing stream, account kind ``p``) come back as
they were: every version, the last one active.

Not restored: idempotency keys and recent call ids (a retry within their life after a Redis loss
decides again) and the rate limiter's position (it starts fresh).

``recovery.py`` runs these: restore with its safety checks (backlog, live keys, dry run, another
namespace) and reconcile over both sides.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..layout import (
    REMOVED,
    Account,
    Grant,
    Hold,
    Member,
    ModelWindow,
    RateLimit,
    State,
    cap_text,
    day_bucket,
    grant_parts_of,
    month_bucket,
    plan_left_text,
    plan_of,
    plan_text,
    pricing_record,
)
from .database import LedgerDatabase


@dataclass
class Spend:
    """Spend of one scope (all models, a model, a member): all time, today, this month."""

    total: int = 0
    day: int = 0
    month: int = 0

    def add(self, amount: int, today: bool, this_month: bool) -> None:
        self.total += amount
        self.day += amount if today else 0
        self.month += amount if this_month else 0


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else (v or {})


@dataclass
class AccountState:
    """What the ledger says one account's hash holds (folded row by row, then :meth:`account`)."""

    kind: str
    account_id: str
    exists: bool = False
    created_ms: int = 0
    bal: int = 0
    held: int = 0
    life: int = 0
    name: str = ""
    rate_limit: str = ""
    quantity_limits: str = ""  # "name|model|limit|period_ms;..." (tokens per period...)
    holds: dict[str, Hold] = field(default_factory=dict)
    caps: dict[tuple[str, str], str] = field(default_factory=dict)  # (period d|m, model or "") -> cap text
    spend: dict[str, Spend] = field(default_factory=dict)  # "" = all models, else the model
    members: dict[str, Member] = field(default_factory=dict)  # team
    removed: dict[str, str] = field(default_factory=dict)  # team: removed member -> their last role
    member_spend: dict[str, Spend] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)  # grant id -> what is left of it
    refunded: dict[str, int] = field(default_factory=dict)  # debit id -> amount refunded
    plan: str | None = None  # user: the plan id set last (None: never set)
    plan_used: dict[str, int] = field(default_factory=dict)  # user: plan id -> allowance used this month
    pricing: list[dict[str, Any]] = field(default_factory=list)  # kind "p": version records, in order
    last_entry: dict[int, tuple[int, int]] = field(default_factory=dict)  # shard -> the last stream id seen

    def _grant_parts(self, parts: list[tuple[str, int, int]], sign: int) -> None:
        """Move the grant parts of a debit (sign -1), a refund (+1) or an expiry (-1)."""
        for gid, expires, n in parts:
            g = self.grants.setdefault(gid, Grant(expires, 0))
            g.remaining += sign * n
            if g.remaining <= 0:
                del self.grants[gid]

    def apply(self, e: dict[str, Any], now_ms: int) -> None:
        """Fold one ledger row (a dict of the table's columns) into the state."""
        kind = e["kind"]
        shard, sid = int(e["shard"]), (int(e["stream_ms"]), int(e["stream_seq"]))
        if sid > self.last_entry.get(shard, (0, 0)):
            self.last_entry[shard] = sid
        if self.kind == "p":
            if kind == "config" and e["operation_type"] == "pricing_set":
                self.pricing.append(_json(e["metadata"]))
            return
        ts = int(e["ts"].timestamp() * 1000)
        extra = _json(e.get("extra"))
        amount = int(e["amount"] or 0)
        if e["balance_after"] is not None:
            self.bal, self.held = int(e["balance_after"]), int(e["held_after"] or 0)
        if kind == "credit":
            if not self.exists:
                self.exists, self.created_ms = True, ts
            if e["tx_type"] == "team_created":
                self.life += amount
                self.name = _json(e["metadata"]).get("name", "")
            elif e["tx_type"] == "purchase":
                self.life += amount
            if e["expires_ms"] and amount > 0:
                self.grants[e["entry_id"]] = Grant(int(e["expires_ms"]), amount)
        elif kind == "hold":
            member = e["member"] if self.kind == "t" else None
            self.holds[e["reservation_id"]] = Hold(int(e["hold"]), int(e["expires_ms"] or 0),
                                                   e["operation_type"] or "", member)
        elif kind == "config":
            self._config(e, extra, ts, now_ms)
        elif kind == "refund":
            self._grant_parts(grant_parts_of(extra.get("gr")), 1)
            ref = extra.get("ref")
            if ref:
                self.refunded[ref] = self.refunded.get(ref, 0) + amount
        elif kind == "expire" and e["reason"] == "credit_expired":
            self._grant_parts([(str(extra.get("grant")), int(e["expires_ms"]), -amount)], -1)
        if kind in ("settle", "release", "expire") and e["reservation_id"]:
            self.holds.pop(e["reservation_id"], None)
        if kind in ("debit", "settle"):
            if amount < 0:
                self._spend(-amount, e["model"] or "", e["member"], ts, now_ms)
                self._grant_parts(grant_parts_of(extra.get("gc")), -1)
            self._free(extra, ts, now_ms)

    def _free(self, extra: dict[str, Any], ts: int, now_ms: int) -> None:
        free = int(extra.get("free") or 0)
        if free and extra.get("plan") and month_bucket(ts) == month_bucket(now_ms):
            self.plan_used[extra["plan"]] = self.plan_used.get(extra["plan"], 0) + free

    def _spend(self, amount: int, model: str, member: str | None, ts: int, now_ms: int) -> None:
        today, this_month = day_bucket(ts) == day_bucket(now_ms), month_bucket(ts) == month_bucket(now_ms)
        for scope in ("", model) if model else ("",):
            self.spend.setdefault(scope, Spend()).add(amount, today, this_month)
        if member:
            self.member_spend.setdefault(member, Spend()).add(amount, today, this_month)

    def _config(self, e: dict[str, Any], extra: dict[str, Any], ts: int, now_ms: int) -> None:
        op, meta = e["operation_type"], _json(e["metadata"])
        if op in ("cap_set", "cap_removed"):
            scope = ("d" if meta["cap_type"] == "daily" else "m", meta.get("model") or "")
            if op == "cap_set":
                self.caps[scope] = cap_text(int(meta["limit"]), meta["action"])
            else:
                self.caps.pop(scope, None)
        elif op == "rate_limit_set":
            limit = int(meta["limit"])
            self.rate_limit = RateLimit(limit, int(meta["period_ms"]), int(meta.get("burst") or limit)).encode()
        elif op == "rate_limit_removed":
            self.rate_limit = ""
        elif op in ("quantity_limit_set", "quantity_limit_removed"):
            self.quantity_limits = meta.get("ql") or ""
        elif op in ("member_added", "member_updated"):
            cap = meta.get("cap")
            self.removed.pop(e["member"], None)
            self.members[e["member"]] = Member(role=meta.get("role", "member"), cap=None if cap is None else int(cap),
                                               period=meta.get("period", "total"))
        elif op == "member_removed":
            gone = self.members.pop(e["member"], None)
            if gone is not None:
                self.removed[e["member"]] = gone.role
        elif op == "plan_set":
            self.plan = extra.get("plan", "")
        elif op == "allowance_used":
            self._free(extra, ts, now_ms)

    def account(self, now_ms: int) -> Account:
        """The account hash this state is (:class:`~ducto_redis.layout.Account`)."""
        day, month = day_bucket(now_ms), month_bucket(now_ms)
        team = self.kind == "t"
        whole = self.spend.get("", Spend())
        state = State(held=self.held, rate_limit=self.rate_limit, quantity_limits=self.quantity_limits,
                      hold_expiry=min((h.expires_ms for h in self.holds.values()), default=None),
                      grant_expiry=min((g.expires_ms for g in self.grants.values()), default=None),
                      day_cap=self.caps.get(("d", ""), ""), month_cap=self.caps.get(("m", ""), ""))
        state.with_spend(self.bal, day, whole.day, month, whole.month)
        a = Account(balance=self.bal, state=state, life=self.life, created=self.created_ms if self.exists else None,
                    holds=dict(self.holds), refunded=dict(self.refunded), team=team)
        models = {m for m in self.spend if m} | {m for _, m in self.caps if m}
        for m in sorted(models):
            sp = self.spend.get(m, Spend())
            a.models[m] = ModelWindow(total=sp.total, day=day, day_anchor=sp.total - sp.day, month=month,
                                      month_anchor=sp.total - sp.month, day_cap=self.caps.get(("d", m), ""),
                                      month_cap=self.caps.get(("m", m), ""))
        if team:
            a.name = self.name if self.exists else None
            records = {**{u: Member(role, None, REMOVED) for u, role in self.removed.items()}, **self.members}
            for uid, rec in records.items():
                sp = self.member_spend.get(uid, Spend())
                held = sum(h.amount for h in self.holds.values() if h.member == uid)
                a.members[uid] = Member(rec.role, rec.cap, rec.period, sp.total, day, sp.total - sp.day, month,
                                        sp.total - sp.month, held)
        elif self.plan is not None or self.plan_used:
            if self.plan is not None:
                a.plan = plan_text(month, self.plan_used.get(self.plan, 0), self.plan)
            a.plans_left = {p: plan_left_text(month, n) for p, n in self.plan_used.items() if p != self.plan}
        return a


def derive(source: LedgerDatabase, namespace: str, now_ms: int | None = None) -> Iterator[AccountState]:
    """The state of every account of the namespace, as the ledger in ``source`` (PostgreSQL or
    SQLite) says."""
    now_ms = now_ms or int(time.time() * 1000)
    state: AccountState | None = None
    for row in source.restore_rows(namespace):
        if state is None or (state.kind, state.account_id) != (row["account_kind"].strip(), row["account_id"]):
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
        version, ts = int(rec["version"]), int(rec["ts"])
        versions[str(version)] = pricing_record(rec["id"], version, label, ts, config)
        active = {"id": rec["id"], "version": str(version), "label": label, "ts": str(ts), "config": config}
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
    a = s.account(now_ms)
    p = store.client.pipeline(transaction=False)
    p.delete(k.account)  # one key per delete: a cluster pipeline takes no multi-key command
    p.delete(k.grants)
    if (s.exists or a.holds or a.members or a.plan is not None or a.models or s.rate_limit or s.caps
            or s.quantity_limits):
        p.hset(k.account, mapping=a.fields())
    if s.grants:
        p.hset(k.grants, mapping={gid: g.encode() for gid, g in s.grants.items()})
        p.zadd(k.grant_index, {s.account_id: min(g.expires_ms for g in s.grants.values())})
    p.execute()


def set_streams_past(store: Any, last: dict[int, tuple[int, int]]) -> None:
    """Move each shard's ledger stream past the last id the ledger holds for it (creating it if need
    be): a debit's id is its place in the stream, so a rebuilt Redis must never hand it out again."""
    keys = store.core.keys
    for shard, (ms, seq) in last.items():
        stream = keys.ledger_stream(shard) if shard < keys.shards else keys.pricing_ledger()
        try:
            info = store.client.xinfo_stream(stream)
        except Exception:  # no such stream: make it, empty, with that last id
            eid = store.client.xadd(stream, {"q": ""}, id=f"{ms}-{seq + 1}")
            store.client.xdel(stream, eid)
            continue
        generated = tuple(int(x) for x in str(info["last-generated-id"]).split("-"))
        if generated < (ms, seq):
            store.client.xsetid(stream, f"{ms}-{seq}")


def account_meaning(a: Account, now_ms: int, team: bool) -> dict[str, Any]:
    """What reconcile compares of an account: its meaning, not its encoding (anchors and buckets of
    windows that rolled over differ in form, not in what they say)."""
    day_spend, month_spend = a.state.spend(a.balance, now_ms)
    out: dict[str, Any] = {
        "balance": a.balance, "held": a.state.held, "lifetime": a.life, "spend today": day_spend,
        "spend this month": month_spend, "caps": (a.state.day_cap, a.state.month_cap),
        "rate limit": a.state.rate_limit, "quantity limits": a.state.quantity_limits,
        "holds": {r: (h.amount, h.expires_ms, h.operation_type, h.member) for r, h in a.holds.items()},
        "models": {m: (*w.spend(now_ms), w.day_cap, w.month_cap) for m, w in a.models.items()
                   if w.day_cap or w.month_cap or any(w.spend(now_ms))},
        "refunded": a.refunded,
    }
    if team:
        out["exists"] = a.created is not None  # created with b (layout.py): a team cap alone makes no team
        out["members"] = {u: (m.role, m.cap, m.period, m.spent, *m.spend(now_ms), m.held) for u, m in a.members.items()}
    else:
        out["plan"] = a.plan and plan_of(a.plan)[2]
    return out


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
    team = s.kind == "t"
    redis_side = account_meaning(Account.decode(c.hgetall(k.account), team), now_ms, team)
    ledger_side = account_meaning(s.account(now_ms), now_ms, team)
    for what, value in ledger_side.items():
        check(what, redis_side[what], value)
    if not team:
        check("grants", {gid: Grant.decode(v) for gid, v in c.hgetall(k.grants).items()}, s.grants)
    return found
