"""Refunds and expiring-credit sweeps: two store methods, each a flow written once (see ``methods.py``).

**Refunds.** ``refund_credits`` names only a transaction. A debit's id names its ledger row: the
shard, the stream entry and the row in it (:func:`~ducto_redis.layout.tx_id`), so no per-debit
record is kept in Redis. A refund is two calls: ``refund_find.lua`` (read-only) reads the row from
the shard's stream (or a remembered reply); a debit no longer in the stream (flushed) is read from
the ledger database (PostgreSQL, or the embedded ledger); then ``refund.lua`` credits
it back under the account's keys. "Refunded once" is the account's marker ``r:<debit id>``,
checked and set by ``refund.lua`` in one step, so racing refunds cannot both pay out.

**Sweeps.** ``sweep_expired_credits`` asks every shard for its accounts with a grant due
(``sweep_due.lua`` over the shard's grant index, by Redis TIME), then runs ``sweep_credits.lua``
once per shard (per 128 accounts) with those accounts' keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import errors as E
from .core import (
    Call,
    StoreCore,
    construct,
    error_code,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_call_id,
    new_id,
    ready,
    split_reply,
    table_reply,
)
from .errors import InvalidInputError
from .keys import TEAM, USER
from .layout import copy_escape, fragment, parse_row, parse_tx_id
from .methods import Flow, StoreBase, blocking, flow, many, one
from .models import CreditMetadata, ExpiredCredit, RefundResult, SweepResult
from .progress import ProgressFn
from .specs import REFUND, REFUND_FIND, SWEEP_CREDITS, SWEEP_DUE
from .validation import check_amount, check_id, check_label

SWEEP_ACCOUNTS_PER_CALL = 128
REFUNDABLE_KINDS = ("debit", "settle")
SWEEP_CALLS_PER_STEP = 8  # calls per round trip when a sweep reports progress


@dataclass(slots=True)
class RefundRequest:
    """A validated refund; once its debit is found (``account_id`` set), the second call's arguments."""

    transaction_id: str
    amount: str  # "" = the whole debit
    reason: str
    metadata: str
    idempotency_key: str | None
    flushed: bool = True  # not found in Redis, where it would be had it not been flushed
    account_kind: str = USER
    account_id: str = ""
    member: str = ""
    debit_amount: int = 0
    parts: str = ""

    def found(self, kind: str, ak: str, acct: str, member: str, amount: int, parts: str) -> RefundRequest | None:
        """The request with its debit's details, or None when the row is not a refundable debit."""
        if kind not in REFUNDABLE_KINDS or amount >= 0 or not acct:
            return None
        self.account_kind, self.account_id, self.member = ak, acct, member
        self.debit_amount, self.parts = -amount, parts
        return self


# ── refunds: the calls and steps of the flow ──────────────────────────


def refund_result(tx: str, raw: Any) -> RefundResult:
    """A refund's result from refund.lua's reply (or the reply remembered for its idempotency key)."""
    r, f = split_reply(raw, REFUND.reply.size), REFUND.reply.pos
    account, member = json.loads(r[f.who])
    team = r[f.kind] == TEAM
    return construct(RefundResult,
        refund_transaction_id=r[f.tx], original_transaction_id=tx, user_id=member if team else account,
        team_id=account if team else None, amount=int(r[f.amount]), new_balance=int(r[f.balance]),
        error=error_code(r[f.status]), idempotent=r[f.idempotent] == "1",
    )


def not_found(req: RefundRequest, error: str = E.TRANSACTION_NOT_FOUND) -> RefundResult:
    """The answer for a debit that cannot be refunded (unknown, or not a debit)."""
    return RefundResult(refund_transaction_id="", original_transaction_id=req.transaction_id, user_id="",
                        error=error)


def find(
    core: StoreCore,
    transaction_id: str,
    amount: int | None = None,
    reason: str | None = None,
    metadata: CreditMetadata | dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Call[RefundResult | RefundRequest]:
    """Validate a refund and read its debit's row from the stream: a RefundRequest to
    :func:`apply` (``account_id`` empty: not in Redis, ask the ledger database; ``flushed``: it
    would be in Redis had it not been flushed), or a result decided already (bad amount, not a
    debit, a replayed idempotency key)."""
    tx = check_id(transaction_id, "transaction_id")
    n = None if amount is None else check_amount(amount, "amount", 1)
    why = "" if reason is None else check_label(reason, "reason")
    meta = metadata_of(metadata)
    ikey = idempotency_of(idempotency_key, meta)
    req = RefundRequest(tx, "" if n is None else str(n), why, metadata_json(meta), ikey)
    where = parse_tx_id(tx)
    if where is None:  # not an id of a stream row (an id from before them?): only a ledger database knows it
        req.flushed = False
        return ready(req)
    if where[0] >= core.keys.shards:
        return ready(not_found(req))
    shard, entry, row = where

    def parse(raw: Any) -> RefundResult | RefundRequest:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        if text.startswith("found\t"):
            row = parse_row(text[6:])
            got = req.found(row.get("kind", ""), row.get("ak", USER), row.get("acct", ""), row.get("member", ""),
                            int(row.get("amount", "0")), json.loads(row.get("extra", "{}")).get("gc", ""))
            return got if got is not None else not_found(req)
        if text == "gone":
            return req
        if text == E.TRANSACTION_NOT_FOUND:
            return not_found(req)
        return refund_result(tx, text)  # a remembered reply

    keys = REFUND_FIND.keys.pack(ledger=core.keys.ledger_stream(shard),
                                 idem=core.keys.refund_idempotency(shard, tx, ikey))
    args = REFUND_FIND.args.pack(entry=entry, row=str(row), has_idem="0" if ikey is None else "1")
    return Call(core.scripts["refund_find"], keys, args, parse)


def owns(result: RefundResult, user_id: str) -> bool:
    """Whether a refund decided already (a remembered reply) was of a debit of ``user_id``'s own account."""
    return result.team_id is None and result.user_id == user_id


def from_database(req: RefundRequest, row: dict[str, Any] | None) -> RefundRequest | RefundResult:
    """The request completed from the debit's row in the ledger database (None: no such entry)."""
    if row is None:
        return not_found(req)
    extra = row.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    got = req.found(row.get("kind") or "", row.get("account_kind") or USER, row.get("account_id") or "",
                    row.get("member") or "", int(row.get("amount") or 0), extra.get("gc", ""))
    return got if got is not None else not_found(req)


def apply(core: StoreCore, req: RefundRequest) -> Call[RefundResult]:
    """The refund itself, under the keys of the account its debit names."""
    team = req.account_kind == TEAM
    k = core.keys.team(req.account_id) if team else core.keys.user(req.account_id)
    idem = core.keys.refund_idempotency(k.shard, req.transaction_id, req.idempotency_key)
    frag = fragment(ak=req.account_kind, acct=req.account_id, member=req.member, type="refund",
                    idem=req.idempotency_key or "", meta=req.metadata)
    args = REFUND.args.pack(
        cid=new_call_id(), tx=new_id(), original=req.transaction_id, amount=str(req.debit_amount),
        requested=req.amount, parts=req.parts, reason=copy_escape(req.reason), frag=frag,
        has_idem="0" if req.idempotency_key is None else "1", config=core.config(),
    )
    keys = REFUND.keys.pack(account=k.account, grants=k.grants, gindex=k.grant_index, ledger=k.ledger, idem=idem)
    return Call(core.scripts["refund"], keys, args, lambda raw: refund_result(req.transaction_id, raw))


# ── sweeps: the calls and steps of the flow ───────────────────────────


def due_accounts(core: StoreCore) -> list[Call[list[str]]]:
    """One read-only call per shard: the users with a grant due now (by Redis TIME)."""

    def users(raw: Any) -> list[str]:
        due = SWEEP_DUE.reply
        return [g[due.each_pos.user] for g in due.groups(table_reply(raw, due.size))]

    return [
        Call(core.scripts["sweep_due"], SWEEP_DUE.keys.pack(gindex=core.keys.grant_index(shard)),
             SWEEP_DUE.args.pack(config=core.config()), users)
        for shard in range(core.keys.shards)
    ]


def sweep_calls(core: StoreCore, due: list[list[str]], dry_run: bool) -> list[Call[list[str]]]:
    """The sweep calls: one per shard with due accounts (per 128 accounts)."""
    calls: list[Call[list[str]]] = []
    for shard, users in enumerate(due):
        for start in range(0, len(users), SWEEP_ACCOUNTS_PER_CALL):
            chunk = users[start : start + SWEEP_ACCOUNTS_PER_CALL]
            keys = SWEEP_CREDITS.keys.pack(gindex=core.keys.grant_index(shard), ledger=core.keys.ledger_stream(shard))
            args = SWEEP_CREDITS.args.pack(dry="1" if dry_run else "0", call=new_id(), config=core.config())
            for uid in chunk:
                k = core.keys.user(uid)
                keys += SWEEP_CREDITS.keys.pack_each(account=k.account, grants=k.grants)
                args += SWEEP_CREDITS.args.pack_each(user=uid)
            calls.append(Call(core.scripts["sweep_credits"], keys, args,
                              lambda raw: table_reply(raw, SWEEP_CREDITS.reply.size)))
    return calls


def sweep_steps(core: StoreCore, due: list[list[str]], dry_run: bool,
                progress: ProgressFn | None = None) -> Iterator[list[Call[list[str]]]]:
    """The sweep calls in round trips: all at once, or with ``progress`` a few shards' worth at a
    time, reporting ``progress(accounts swept, accounts due)`` after each (each step is run before
    the next is asked for)."""
    calls = sweep_calls(core, due, dry_run)
    if progress is None:
        yield calls
        return
    total, done = sum(len(users) for users in due), 0
    for start in range(0, len(calls), SWEEP_CALLS_PER_STEP):
        step = calls[start : start + SWEEP_CALLS_PER_STEP]
        yield step
        done += sum(len(c.args) - SWEEP_CREDITS.args.size for c in step)  # ARGV: then one per user
        progress(done, total)


def sweep_result(replies: list[list[str]], dry_run: bool) -> SweepResult:
    """Every shard's expiries as one :class:`SweepResult`."""
    out = SweepResult(dry_run=dry_run)
    f, e = SWEEP_CREDITS.reply.pos, SWEEP_CREDITS.reply.each_pos
    for r in replies:
        out.expired_count += int(r[f.count])
        out.expired_amount += int(r[f.amount])
        for x in SWEEP_CREDITS.reply.groups(r):
            out.expired.append(ExpiredCredit(user_id=x[e.user], grant_id=x[e.grant], amount=int(x[e.amount]),
                                             expires_at_ms=int(x[e.expires]), entry_id=x[e.entry]))
    return out


class RefundOps(StoreBase):
    """The store methods of refunds and expiring-credit sweeps."""

    @flow
    def refund_credits(
        self,
        transaction_id: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        user_id: str | None = None,
    ) -> Flow[RefundResult]:
        """Give back a debit (``charge`` or settlement), in full (``amount`` None) or in part, once.

        The debit is found from its id alone: in its shard's ledger stream while it is not flushed,
        then in the ledger database (``DUCTO_DATABASE_URL``; the embedded store's own ledger), so any
        debit the ledger holds can be refunded, user or team (credits go back to the pool).
        ``error``: ``already_refunded`` once the debit has been refunded, ``invalid_amount`` for more
        than the debit or less than 1, ``transaction_not_found`` (unknown, or not a debit),
        ``transaction_flushed`` (flushed, and no ledger database to read it from). Credits spent
        from an expiring grant go back to that grant, with its expiry. With ``user_id``, only a debit
        of that user's own account is refunded: any other (another user's, a team's) answers
        ``transaction_not_found`` and writes nothing (forward-auth's void names the account it decided for).
        """
        core = self.core
        owner = None if user_id is None else check_id(user_id, "user_id")
        found = yield from one(find(core, transaction_id, amount, reason, metadata, idempotency_key))
        if isinstance(found, RefundResult):
            return found if owner is None or owns(found, owner) else not_found(RefundRequest(
                found.original_transaction_id, "", "", "", None))
        if not found.account_id:  # not in the stream: flushed (or never a debit)
            reader = self._ledger_reader()
            if reader is None:
                return not_found(found, E.TRANSACTION_FLUSHED if found.flushed else E.TRANSACTION_NOT_FOUND)
            row = yield from blocking(reader.entry, core.settings.namespace, found.transaction_id)
            found = from_database(found, row)
            if isinstance(found, RefundResult):
                return found
        if owner is not None and (found.account_kind != USER or found.account_id != owner):
            return not_found(found)
        return (yield from one(apply(core, found)))

    @flow
    def sweep_expired_credits(self, dry_run: bool = False, progress: ProgressFn | None = None) -> Flow[SweepResult]:
        """Remove expired unspent grant remainders from balances, on every shard (one ledger entry each).

        Idempotent (a second sweep finds nothing); ``dry_run`` reports and writes nothing. Expired
        credits are never spendable even before a sweep: every script expires them lazily. With
        ``progress``, the sweep runs a few shards per round trip and calls ``progress(accounts swept,
        accounts due)`` after each.
        """
        if not isinstance(dry_run, bool):
            raise InvalidInputError("dry_run", f"must be a bool, got {type(dry_run).__name__}")
        core = self.core
        due = yield from many(due_accounts(core))
        replies: list[list[str]] = []
        for step in sweep_steps(core, due, dry_run, progress):
            replies += yield from many(step)
        return sweep_result(replies, dry_run)
