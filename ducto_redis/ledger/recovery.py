"""Restore that cannot lose data by accident, and reconcile that walks both sides.

``restore`` rebuilds a namespace's Redis keys from the PostgreSQL ledger (``restore.py`` derives
each account's state and writes its keys). What it promises:

- it refuses (:class:`RestoreRefused`, nothing written) while the namespace it writes still has
  ledger entries not yet in PostgreSQL (they would be rolled back: their decisions happened in
  Redis only) or live keys (accounts it would overwrite), unless ``force``;
- ``dry_run`` writes nothing and reports what it would write: accounts per kind, holds, caps,
  grants, team members, refunded debits, plans, pricing versions — and what stands in the way;
- ``target_namespace`` restores into another namespace (a drill: the live one is only read), and
  ``reconcile`` then compares that namespace with the ledger of the one it came from.

``reconcile`` compares every account on both sides — those the ledger knows and those Redis holds,
an account with keys in Redis and no ledger row included — and reports an account whose entries
are still in the Redis streams as *not yet flushed* (its difference cannot be judged yet), apart
from *drift*.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DuctoError
from ..layout import Account as AccountHash
from ..progress import ProgressFn, no_progress
from .copy_text import entry_rows
from .database import LedgerDatabase
from .restore import AccountState, account_drift, derive, set_streams_past, write_state

Account = tuple[str, str]  # (kind, id): "u" user, "t" team, ("p", "pricing") the pricing versions
PRICING: Account = ("p", "pricing")


class RestoreRefused(DuctoError):
    """``restore`` would lose data (entries not yet flushed) or overwrite live keys; nothing was written."""

    def __init__(self, report: RestoreReport) -> None:
        super().__init__("; ".join(report.refusals))
        self.report = report


@dataclass
class Unflushed:
    """Ledger entries still in a namespace's Redis streams that PostgreSQL may not hold yet."""

    entries: int = 0
    accounts: Counter[Account] = field(default_factory=Counter)


def _stream_entries(client: Any, stream: str, start: str) -> Iterator[tuple[Any, Any]]:
    while True:
        chunk = client.xrange(stream, min=start, count=10_000)
        if not chunk:
            return
        yield from chunk
        last = chunk[-1][0]
        last = last.decode() if isinstance(last, bytes) else str(last)
        start = "(" + last


def unflushed(store: Any) -> Unflushed:
    """The entries of ``store``'s namespace not yet in its ledger database as far as Redis can tell
    (each stream from where ``store._unflushed_start`` says they begin), and the accounts they touch."""
    out = Unflushed()
    client = store.client
    for shard, stream in enumerate(store.core.keys.all_ledger_streams()):
        start = store._unflushed_start(stream)
        if start is None:
            continue
        for mid, fields in _stream_entries(client, stream, start):
            for row in entry_rows(shard, mid, fields):
                out.entries += 1
                out.accounts[(row.get("ak", "u"), row.get("acct", ""))] += 1
    return out


def live_keys(store: Any) -> int:
    """Keys of ``store``'s namespace other than its ledger streams and empty event streams: what a
    restore there would overwrite or leave beside the restored state."""
    keys = store.core.keys
    ledger = set(keys.all_ledger_streams())
    events = set(keys.all_events_streams())
    n = 0
    for key in store.client.scan_iter(match=f"{{{store.settings.namespace}:*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        if name in ledger or (name in events and not store.client.xlen(name)):
            continue
        n += 1
    return n


def redis_accounts(store: Any) -> set[Account]:
    """Every account that has at least one key in ``store``'s namespace."""
    schema = store.core.keys
    found: set[Account] = set()
    for key in store.client.scan_iter(match=f"{{{store.settings.namespace}:*", count=1000):
        account = schema.account_of(key.decode() if isinstance(key, bytes) else key)
        if account is not None:
            found.add(account)
    if store.client.exists(schema.pricing_versions()):
        found.add(PRICING)
    return found


@dataclass
class RestoreReport:
    """What a restore wrote — or, as a dry run, would write — and what stood in its way."""

    namespace: str
    ledger_namespace: str
    dry_run: bool = False
    written: bool = False
    accounts: Counter[str] = field(default_factory=Counter)  # "users" / "teams" -> how many
    holds: int = 0
    caps: int = 0
    rate_limits: int = 0
    grants: int = 0
    members: int = 0
    refunded: int = 0  # debits refunded (each stays refunded: a debit is refunded once)
    plans: int = 0
    pricing_versions: int = 0
    unflushed: int = 0  # entries of the written namespace not yet in PostgreSQL
    source_unflushed: int = 0  # a drill: entries of the source namespace the ledger does not hold yet
    live_keys: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def total_accounts(self) -> int:
        return self.accounts["users"] + self.accounts["teams"]

    def count(self, s: AccountState) -> None:
        """Add one derived account to the figures (no Redis involved)."""
        if s.kind == "p":
            self.pricing_versions += len(s.pricing)
            return
        self.accounts["teams" if s.kind == "t" else "users"] += 1
        self.holds += len(s.holds)
        self.caps += len(s.caps)
        self.rate_limits += 1 if s.rate_limit else 0
        self.grants += len(s.grants)
        self.members += len(s.members)
        self.plans += 1 if s.plan else 0
        self.refunded += len(s.refunded)

    def lines(self) -> list[str]:
        verb = "would restore" if self.dry_run or not self.written else "restored"
        where = self.namespace if self.namespace == self.ledger_namespace else \
            f"{self.namespace} (from the ledger of {self.ledger_namespace})"
        out = [f"{verb} {self.total_accounts} accounts into {where}: {self.accounts['users']} users, "
               f"{self.accounts['teams']} teams, {self.holds} holds, {self.caps} caps, {self.rate_limits} rate limits, "
               f"{self.grants} expiring grants, {self.members} team members, {self.refunded} refunded debits, "
               f"{self.plans} plans, {self.pricing_versions} pricing versions"]
        if self.unflushed:
            out.append(f"{self.unflushed} ledger entries of {self.namespace} are not in PostgreSQL yet")
        if self.source_unflushed:
            out.append(f"note: {self.source_unflushed} entries of {self.ledger_namespace} are not in PostgreSQL yet: "
                       "the drill restores the ledger without them")
        if self.live_keys:
            out.append(f"{self.namespace} holds {self.live_keys} live keys")
        out += [f"refused: {r}" for r in self.refusals]
        return out


def _refusals(report: RestoreReport) -> list[str]:
    out = []
    if report.unflushed:
        out.append(f"{report.unflushed} ledger entries of namespace {report.namespace!r} are not in PostgreSQL "
                   "yet: restoring now would roll their decisions back. Flush them first (ducto-redis flush "
                   "--once), or pass force to restore anyway")
    if report.live_keys:
        out.append(f"namespace {report.namespace!r} holds {report.live_keys} live keys: restore rebuilds a namespace "
                   "Redis lost. Restore into another namespace for a drill, or pass force to overwrite its accounts")
    return out


def restore(store: Any, source: LedgerDatabase, *, dry_run: bool = False, force: bool = False,
            target_namespace: str | None = None, progress: ProgressFn = no_progress) -> RestoreReport:
    """Rebuild the keys of ``target_namespace`` (default: the store's own) from the rows ``source``
    holds for the store's namespace. Refuses (:class:`RestoreRefused`, nothing written) while the
    namespace written has entries not yet flushed or live keys, unless ``force``; ``dry_run`` writes
    nothing and reports what it would write. ``progress(done, total)`` is called as accounts are written."""
    ns = store.settings.namespace
    target = store if target_namespace in (None, ns) else store._in_namespace(target_namespace)
    report = RestoreReport(target.settings.namespace, store.settings.namespace, dry_run=dry_run)
    report.unflushed = unflushed(target).entries
    if target is not store:
        report.source_unflushed = unflushed(store).entries
    report.live_keys = live_keys(target)
    report.refusals = [] if force else _refusals(report)
    if report.refusals and not dry_run:
        raise RestoreRefused(report)
    total = 0 if dry_run or progress is no_progress else source.count_accounts(ns)
    now_ms = int(time.time() * 1000)
    last: dict[int, tuple[int, int]] = {}
    for state in derive(source, ns, now_ms):
        report.count(state)
        if dry_run:
            continue
        write_state(target, state, now_ms)
        for shard, sid in state.last_entry.items():
            last[shard] = max(last.get(shard, (0, 0)), sid)
        if state.kind != "p":
            progress(report.total_accounts, max(total, report.total_accounts))
    if not dry_run:
        set_streams_past(target, last)  # the ledger's debit ids are never handed out again
    report.written = not dry_run
    return report


@dataclass
class ReconcileReport:
    """Redis against the ledger, account by account, on both sides."""

    namespace: str
    ledger_namespace: str
    drift: dict[str, list[str]] = field(default_factory=dict)  # "u:<id>" -> differences
    not_yet_flushed: dict[str, int] = field(default_factory=dict)  # "u:<id>" -> entries still in Redis
    ledger_accounts: int = 0
    redis_accounts: int = 0
    unflushed_entries: int = 0

    @property
    def agrees(self) -> bool:
        """No drift and nothing left to flush."""
        return not self.drift and not self.not_yet_flushed

    @property
    def exit_code(self) -> int:
        """0: everything agrees; 1: drift; 9: no drift, but some accounts cannot be judged until
        flushed (``ducto-redis``'s "not done yet")."""
        return 1 if self.drift else (9 if self.not_yet_flushed else 0)

    def lines(self) -> list[str]:
        """Each difference, each account not yet flushed, then the summary: the verdict last."""
        return [*self.detail_lines(), *self.summary_lines()]

    def detail_lines(self) -> list[str]:
        out = [f"{account}: {line}" for account, lines in sorted(self.drift.items()) for line in lines]
        return out + [f"{account}: not yet flushed ({n} entries in Redis)"
                      for account, n in sorted(self.not_yet_flushed.items())]

    def summary_lines(self) -> list[str]:
        out = [f"compared {self.ledger_accounts} accounts of the ledger and {self.redis_accounts} in Redis"]
        if self.not_yet_flushed:
            out.append(f"{len(self.not_yet_flushed)} accounts not yet flushed ({self.unflushed_entries} entries in the "
                       "Redis streams): flush, then reconcile again to judge them")
        out.append(f"{len(self.drift)} accounts drift" if self.drift else "0 drift")
        return out


def _label(account: Account) -> str:
    return f"{account[0]}:{account[1]}"


def _redis_only(store: Any, account: Account) -> list[str]:
    """What Redis holds for an account the ledger has no row of."""
    if account[0] == "p":
        return ["pricing versions in Redis, none in the ledger"]
    keys = store.core.keys.team(account[1]) if account[0] == "t" else store.core.keys.user(account[1])
    fields = store.client.hgetall(keys.account)
    if fields:
        acct = AccountHash.decode(fields, account[0] == "t")
        return [f"in Redis but not in the ledger: balance={acct.balance} held={acct.state.held}"]
    return ["keys in Redis but no account and no ledger row"]


def reconcile(store: Any, source: LedgerDatabase, *, ledger_namespace: str | None = None,
              progress: ProgressFn = no_progress) -> ReconcileReport:
    """Compare every account of the store's namespace with the ledger of ``ledger_namespace`` (default
    the same; another one after a drill restore), both sides walked: accounts only the ledger knows,
    and accounts only Redis holds. Accounts with entries still in the Redis streams are reported as
    not yet flushed, apart from drift."""
    ns = ledger_namespace or store.settings.namespace
    report = ReconcileReport(store.settings.namespace, ns)
    pending = unflushed(store)
    report.unflushed_entries = pending.entries

    def judge(account: Account, differences: list[str]) -> None:
        if not differences:
            return
        if pending.accounts.get(account):
            report.not_yet_flushed[_label(account)] = pending.accounts[account]
        else:
            report.drift[_label(account)] = differences

    now_ms = int(time.time() * 1000)
    total = 0 if progress is no_progress else source.count_accounts(ns)
    seen: set[Account] = set()
    for s in derive(source, ns, now_ms):
        account = (s.kind, s.account_id)
        seen.add(account)
        judge(account, account_drift(store, s, now_ms))
        if s.kind != "p":
            progress(len(seen), max(total, len(seen)))
    report.ledger_accounts = len(seen)
    in_redis = redis_accounts(store)
    report.redis_accounts = len(in_redis)
    for account in sorted(in_redis - seen):
        judge(account, _redis_only(store, account))
    for account, n in pending.accounts.items():  # entries of accounts neither side shows a difference for
        if _label(account) not in report.not_yet_flushed and account not in seen and account not in in_redis:
            report.not_yet_flushed[_label(account)] = n
    return report
