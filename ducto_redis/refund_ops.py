"""Refunds and expiring-credit sweeps: the calls every store shell runs (validation, keys, ARGV, replies).

**Refunds.** ``refund_credits`` names only a transaction. A debit's id carries its account's shard
(:func:`~ducto_redis.core.tx_id_in_shard`), and the debit script writes a refund record under
that shard's tag (``{ns:N}:rf:<tx>`` = "amount|refunded|grant parts|user id", kept for
``refund_window_seconds``). A refund is two calls: ``refund_find.lua`` (read-only) reads which
user the record names (or a remembered reply), then ``refund.lua`` checks and credits back under
that user's keys, all in the shard's one hash tag — so it works on Redis Cluster. ``refund.lua``
re-reads the record, so the first read deciding nothing cannot go stale.

**Sweeps.** ``sweep_expired_credits`` asks every shard for its accounts with a grant due
(``sweep_due.lua`` over the shard's grant index, by Redis TIME), then runs ``sweep_credits.lua``
once per shard (per 128 accounts) with those accounts' keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors as E
from .core import (
    Call,
    _err,
    _reply,
    construct,
    idempotency_of,
    metadata_json,
    metadata_of,
    new_id,
    ready,
    shard_of_tx,
)
from .errors import InvalidInputError
from .models import CreditMetadata, ExpiredCredit, RefundResult, SweepResult
from .progress import ProgressFn
from .validation import check_amount, check_id, check_label

if TYPE_CHECKING:
    from .core import StoreCore

SWEEP_ACCOUNTS_PER_CALL = 128
SWEEP_CALLS_PER_STEP = 8  # calls per round trip when a sweep reports progress


@dataclass(slots=True)
class RefundRequest:
    """A validated refund whose account is known (the second call's arguments)."""

    transaction_id: str
    shard: int
    amount: str  # "" = the whole debit
    reason: str
    metadata: str
    has_key: str
    raw_key: str
    user_id: str = ""


class RefundOps:
    """Builds the :class:`Call` of refunds and sweeps for one store core."""

    def __init__(self, core: StoreCore) -> None:
        self.core = core
        self.keys = core.keys
        self.scripts = core.scripts

    # refunds

    def _result(self, tx: str, r: list[str]) -> RefundResult:
        return construct(RefundResult,
            refund_transaction_id=r[2], original_transaction_id=tx, user_id=r[5] if len(r) > 5 else "",
            amount=int(r[3]) if len(r) > 3 else 0, new_balance=int(r[4]) if len(r) > 4 else 0,
            error=_err(r[0]), idempotent=r[1] == "1",
        )

    def find(
        self,
        transaction_id: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: CreditMetadata | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[RefundResult | RefundRequest]:
        """Validate a refund and find the debit's user: a RefundRequest to :meth:`apply`, or a result
        decided already (bad amount, unknown transaction, a replayed idempotency key)."""
        tx = check_id(transaction_id, "transaction_id")
        n = None if amount is None else check_amount(amount, "amount", 1)
        why = "" if reason is None else check_label(reason, "reason")
        meta = metadata_of(metadata)
        ikey = idempotency_of(idempotency_key, meta)
        shard = shard_of_tx(tx, self.keys.shards)
        if shard is None:
            return ready(RefundResult(refund_transaction_id="", original_transaction_id=tx, user_id="",
                                      error=E.TRANSACTION_NOT_FOUND))
        req = RefundRequest(tx, shard, "" if n is None else str(n), why, metadata_json(meta),
                            "0" if ikey is None else "1", ikey or "")

        def parse(raw: Any) -> RefundResult | RefundRequest:
            r = _reply(raw, 3)
            if r[1] == "1" or r[0] != "ok":  # a remembered reply, or no such refundable debit
                return self._result(tx, r)
            req.user_id = r[2]
            return req

        keys = [self.keys.refundable(shard, tx), self.keys.refund_idempotency(shard, tx, ikey)]
        return Call(self.scripts["refund_find"], keys, [self.core._offset(), req.has_key], parse)

    def apply(self, req: RefundRequest) -> Call[RefundResult]:
        """The refund itself, under the keys of the user :meth:`find` read."""
        k = self.keys.user(req.user_id)
        if k.shard != req.shard:  # a record always names a user of its own shard
            raise InvalidInputError("transaction_id", "refund record names a user of another shard")
        keys = [
            self.keys.refundable(req.shard, req.transaction_id),
            self.keys.refund_idempotency(req.shard, req.transaction_id, req.raw_key or None), k.ledger, k.grant_index,
            k.account, k.grants, k.holds, k.hold_expiry,
        ]
        args = [
            self.core._offset(), new_id(), req.transaction_id, req.user_id, req.amount, req.reason, req.metadata,
            req.has_key, req.raw_key, self.core._idem_ttl,
        ]
        return Call(self.scripts["refund"], keys, args, lambda raw: self._result(req.transaction_id, _reply(raw, 6)))

    # sweeps

    def due_accounts(self) -> list[Call[list[str]]]:
        """One read-only call per shard: the users with a grant due now (by Redis TIME)."""
        return [
            Call(self.scripts["sweep_due"], [self.keys.grant_index(shard)], [self.core._offset()],
                 lambda raw: _reply(raw, 2)[2:])
            for shard in range(self.keys.shards)
        ]

    def sweep(self, due: list[list[str]], dry_run: bool) -> list[Call[list[str]]]:
        """The sweep calls: one per shard with due accounts (per 128 accounts)."""
        if not isinstance(dry_run, bool):
            raise InvalidInputError("dry_run", f"must be a bool, got {type(dry_run).__name__}")
        calls: list[Call[list[str]]] = []
        for shard, users in enumerate(due):
            for start in range(0, len(users), SWEEP_ACCOUNTS_PER_CALL):
                chunk = users[start : start + SWEEP_ACCOUNTS_PER_CALL]
                keys = [self.keys.grant_index(shard), self.keys.ledger_stream(shard)]
                for uid in chunk:
                    k = self.keys.user(uid)
                    keys += [k.account, k.grants, k.holds, k.hold_expiry]
                args = [self.core._offset(), "1" if dry_run else "0", new_id(), *chunk]
                calls.append(Call(self.scripts["sweep_credits"], keys, args, lambda raw: _reply(raw, 4)))
        return calls

    def sweep_steps(self, due: list[list[str]], dry_run: bool,
                    progress: ProgressFn | None = None) -> Iterator[list[Call[list[str]]]]:
        """The sweep calls in round trips: all at once, or with ``progress`` a few shards' worth at a
        time, reporting ``progress(accounts swept, accounts due)`` after each (the shell runs each
        step before asking for the next)."""
        calls = self.sweep(due, dry_run)
        if progress is None:
            yield calls
            return
        total, done = sum(len(users) for users in due), 0
        for start in range(0, len(calls), SWEEP_CALLS_PER_STEP):
            step = calls[start : start + SWEEP_CALLS_PER_STEP]
            yield step
            done += sum(len(c.args) - 3 for c in step)  # ARGV: offset, dry run, entry id, then the users
            progress(done, total)

    @staticmethod
    def sweep_result(replies: list[list[str]], dry_run: bool) -> SweepResult:
        """Every shard's expiries as one :class:`SweepResult`."""
        out = SweepResult(dry_run=dry_run)
        for r in replies:
            out.expired_count += int(r[2])
            out.expired_amount += int(r[3])
            for i in range(4, len(r), 5):
                out.expired.append(ExpiredCredit(user_id=r[i], grant_id=r[i + 1], amount=int(r[i + 2]),
                                                 expires_at_ms=int(r[i + 3]), entry_id=r[i + 4]))
        return out
