"""Error codes (ducto 1.0's strings, returned as result values) and the few exceptions.

A denial is a result with one of these codes in ``.error``; only real failures raise.
"""

from __future__ import annotations

import redis.exceptions

INSUFFICIENT_CREDITS = "insufficient_credits"
INSUFFICIENT_TEAM_BALANCE = "insufficient_team_balance"
SPEND_CAP_EXCEEDED = "spend_cap_exceeded"
USER_NOT_IN_TEAM = "user_not_in_team"
USER_NOT_FOUND = "user_not_found"
TEAM_NOT_FOUND = "team_not_found"
INVALID_AMOUNT = "invalid_amount"
TRANSACTION_NOT_FOUND = "transaction_not_found"
ALREADY_REFUNDED = "already_refunded"
RESERVATION_NOT_FOUND = "reservation_not_found"
LEDGER_BACKLOG_FULL = "ledger_backlog_full"
RATE_LIMITED = "rate_limited"
# refund_credits: the debit's ledger row has left Redis (flushed) and this store has no ledger
# database to read it from (set DUCTO_DATABASE_URL; the embedded store always has its own)
TRANSACTION_FLUSHED = "transaction_flushed"


class DuctoError(Exception):
    """Base class of every exception ducto-redis raises on purpose."""


class InvalidInputError(DuctoError, ValueError):
    """An argument is of the wrong type or out of range; ``field`` names it. Nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(DuctoError):
    """A pricing or store configuration is invalid."""


class InsufficientCreditsError(DuctoError):
    """Raised by the manager when a debit is refused (the store itself returns the code as a value)."""

    def __init__(self, message: str = INSUFFICIENT_CREDITS, *, code: str = INSUFFICIENT_CREDITS) -> None:
        super().__init__(message)
        self.code = code


class PricingNotLoadedError(DuctoError):
    """The manager was asked to price usage before any pricing configuration was loaded."""


class ExpressionError(DuctoError):
    """A pricing formula is invalid or failed to evaluate."""


class ScriptReplyError(DuctoError):
    """A Lua script answered with something the client cannot parse (a bug, never a denial)."""


class DecisionOutcomeUnknown(DuctoError, redis.exceptions.ConnectionError):
    """The connection failed after a call was written and before its answer was read: the call may
    or may not have run. The store never sends it again by itself (a re-sent decision could run
    twice); repeat it with the same ``idempotency_key`` to get its first result, or read the balance.
    A ``redis.ConnectionError``, so code that handles those handles this too."""
