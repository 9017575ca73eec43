"""Giving back a forward-auth decision whose request the upstream never answered (``POST /v1/void``).

A gateway that could not get a response from its upstream (connection refused, reset, timed out:
the gateway's own 502 / 503 / 504) calls ``/v1/void`` with the headers ``/v1/authorize`` gave it:
``X-Ducto-Account``, ``X-Transaction-Id`` (a ``cost`` route's charge) or ``X-Reservation-Id`` (a
``hold`` route's hold), and ``X-Ducto-Void``, the service's signature of those three and of the time
of the decision. The charge is refunded, the hold released (``Gate.void``: at most once, only the
account's own), and the client gets the gateway's status with a JSON body.

The signature is what makes the headers trustworthy: a client could send its own ``X-Transaction-Id``
where a gateway passes the client's headers on (Caddy's error routes after forward-auth itself
failed). Without the service's secret no client can sign, so a void names only a decision the service
made, for the account it made it for, within ``hold_ttl_seconds`` of it. A replayed decision (a
retried request answered with an earlier one's decision) gets no signature: it belongs to the earlier
request, which may have been served. The secret is derived from the service tokens (every worker
derives the same); without tokens (loopback only, the API open) from the namespace.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ..settings import Settings

GATEWAY_STATUSES = frozenset({502, 503, 504})


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"ducto-void\0" + secret.encode()).digest()


def _mac(key: bytes, stamp: str, account: str, transaction_id: str, reservation_id: str) -> str:
    msg = f"{stamp}\0{account}\0{transaction_id}\0{reservation_id}".encode()
    return hashlib.blake2b(msg, key=key, digest_size=16).hexdigest()


class VoidSigner:
    """Signs a decision for ``X-Ducto-Void`` and checks a signature a void brings back."""

    def __init__(self, settings: Settings) -> None:
        secrets = settings.bearer_tokens() or [f"namespace:{settings.namespace}"]
        self.keys = [_key(s) for s in secrets]  # the first signs; any verifies (a token being rotated)
        self.max_age = settings.hold_ttl_seconds

    def sign(self, account: str, transaction_id: str, reservation_id: str) -> str:
        """``<unix seconds>.<signature>`` of a decision."""
        stamp = str(int(time.time()))
        return f"{stamp}.{_mac(self.keys[0], stamp, account, transaction_id, reservation_id)}"

    def check(self, value: str, account: str, transaction_id: str, reservation_id: str) -> str | None:
        """None when ``value`` signs this decision and is recent; else why not (``invalid``, ``expired``)."""
        stamp, _, mac = value.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            return "invalid"
        if not any(hmac.compare_digest(mac, _mac(k, stamp, account, transaction_id, reservation_id))
                   for k in self.keys):
            return "invalid"
        if time.time() - int(stamp) > self.max_age:
            return "expired"
        return None


def gateway_status(value: str | None) -> int:
    """The status the gateway answers for an upstream it could not reach (502 unless 503 or 504 is said)."""
    if value is not None and value.isdigit() and int(value) in GATEWAY_STATUSES:
        return int(value)
    return 502
