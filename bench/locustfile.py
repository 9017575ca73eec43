"""Load tests for ducto-redis with locust.

Three users:
- ``LibraryUser`` drives the store directly (as a worker would) and reports every decision to
  locust's statistics (request type "ducto", name = the method);
- ``BatchUser`` sends ``charge_many`` batches of 100 decisions over random accounts;
- ``GatewayUser`` drives the example gateway app (examples/gateway_app.py) over HTTP;
- ``ServiceUser`` calls the decision service's ``POST /v1/charge`` (``ducto-redis serve``);
- ``PlainUser`` calls the yardstick, bench/plain_endpoint.py's ``POST /charge`` (one bare EVALSHA);
- ``ForwardAuthUser`` sends ``GET /chat`` with an API key to a gateway (Caddy) whose forward_auth
  asks either the service or the plain endpoint.

``python bench/service.py --write`` starts all of them and runs these three side by side.

Point it at your own Redis with DUCTO_REDIS_URL (and DUCTO_NAMESPACE). Examples::

    # library, 60 s, 8 users, no web UI
    DUCTO_REDIS_URL=redis://127.0.0.1:6379/0 locust -f bench/locustfile.py LibraryUser \\
        --headless -u 8 -r 8 -t 60s --csv bench/locust-library
    # batched: 2 users, each a charge_many of 100 decisions at a time
    locust -f bench/locustfile.py BatchUser --headless -u 2 -r 2 -t 60s
    # gateway: start the app, then
    uvicorn examples.gateway_app:app --port 8000 --workers 1 &
    locust -f bench/locustfile.py GatewayUser --host http://127.0.0.1:8000 --headless -u 32 -r 32 -t 60s
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any, cast

from locust import HttpUser, User, between, events, task
from locust.contrib.fasthttp import FastHttpUser

from ducto_redis import RedisStore
from ducto_redis.batch import ChargeRequest

ACCOUNTS = int(os.environ.get("DUCTO_BENCH_ACCOUNTS", "1000"))
NAMESPACE = os.environ.get("DUCTO_NAMESPACE", "locust")


class StoreUser(User):
    """A locust user calling a RedisStore directly and timing each call (the library's users below)."""

    abstract = True
    wait_time = between(0, 0)

    def on_start(self) -> None:
        self.store = RedisStore.from_url(os.environ.get("DUCTO_REDIS_URL"), namespace=NAMESPACE)
        self.users = [f"acct-{i}" for i in range(ACCOUNTS)]
        # idempotent top-ups: every locust user runs this, the credit lands once per account
        for u in self.users:
            self.store.add_credits(u, 10**12, type="purchase", idempotency_key=f"locust-seed-{u}")

    def _timed(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        exc: Exception | None = None
        result = None
        try:
            result = fn(*args, **kwargs)
            if getattr(result, "error", None) not in (None, "insufficient_credits", "spend_cap_exceeded"):
                exc = RuntimeError(result.error)
        except Exception as e:
            exc = e
        cast(Any, events.request).fire(  # Any: locust's fire() is untyped
            request_type="ducto", name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=0, exception=exc, context={},
        )
        return result


class LibraryUser(StoreUser):
    """Calls RedisStore.charge / reserve+deduct directly and times each call."""

    @task(8)
    def charge(self) -> None:
        user = random.choice(self.users)
        self._timed("charge", self.store.charge, user, random.randint(1, 50), "locust")

    @task(2)
    def reserve_and_deduct(self) -> None:
        user = random.choice(self.users)
        hold = self._timed("reserve_credits", self.store.reserve_credits, user, 100, "locust-job")
        if hold is not None and hold.error is None:
            self._timed("deduct_credits", self.store.deduct_credits, user, hold.reservation_id,
                        random.randint(0, 100), idempotency_key=str(uuid.uuid4()))


class BatchUser(StoreUser):
    """Calls RedisStore.charge_many with 100 random accounts per call (one locust request = 100
    decisions; decisions/s = 100 x requests/s)."""

    @task
    def charge_many(self) -> None:
        reqs = [ChargeRequest(random.choice(self.users), random.randint(1, 50), "locust") for _ in range(100)]
        self._timed("charge_many x100", self.store.charge_many, reqs)


class GatewayUser(HttpUser):
    """Requests to the example gateway app with an API key that has credits and a generous rate."""

    wait_time = between(0, 0)

    def on_start(self) -> None:
        self.key = f"locust-{uuid.uuid4().hex[:8]}"
        self.client.post(f"/seed?key={self.key}&credits=100000000&rps=100000", name="/seed")

    @task(5)
    def chat(self) -> None:
        self.client.get("/chat", headers={"X-API-Key": self.key})

    @task(1)
    def health(self) -> None:
        self.client.get("/health", headers={"X-API-Key": self.key})


SERVICE_TOKEN = os.environ.get("DUCTO_BENCH_TOKEN", "bench-token")


def _account() -> str:
    return f"acct-{random.randrange(ACCOUNTS)}"


class ServiceUser(FastHttpUser):
    """``POST /v1/charge`` on the decision service (accounts seeded by bench/service.py)."""

    wait_time = between(0, 0)

    @task
    def charge(self) -> None:
        self.client.post("/v1/charge", json={"user_id": _account(), "amount": 1, "operation_type": "bench"},
                         headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, name="/v1/charge")


class PlainUser(FastHttpUser):
    """``POST /charge`` on the plain Starlette endpoint (one bare redis.asyncio EVALSHA)."""

    wait_time = between(0, 0)

    @task
    def charge(self) -> None:
        self.client.post("/charge", json={"user_id": _account(), "amount": 1}, name="/charge")


class ForwardAuthUser(FastHttpUser):
    """``GET /chat`` through a gateway doing forward-auth (the route costs 1 credit)."""

    wait_time = between(0, 0)

    @task
    def chat(self) -> None:
        self.client.get("/chat", headers={"X-API-Key": _account()}, name="/chat")
