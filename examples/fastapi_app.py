"""A FastAPI service that charges per request: the store opened by the app's lifespan, handed to the
routes by a dependency, each paid route charged through another dependency.

    pip install '.[asgi]' fastapi
    export DUCTO_REDIS_URL=redis://127.0.0.1:6379/0 DUCTO_NAMESPACE=fastapi-demo
    uvicorn examples.fastapi_app:app --port 8000
    curl -X POST -H 'X-API-Key: demo' 'localhost:8000/credits?amount=100'       # demo only: top up
    curl -X POST -H 'X-API-Key: demo' -H 'Idempotency-Key: q-1' localhost:8000/chat
    curl -H 'X-API-Key: demo' localhost:8000/balance

A refused charge answers 402 (no credits, a spend cap) or 429 (rate limited, with Retry-After);
a request repeated with the same Idempotency-Key is charged once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request

from ducto_redis import AsyncRedisStore, BalanceResult, DeductionResult


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One store for the app's life (its connection pool), closed on shutdown."""
    async with AsyncRedisStore.from_url() as store:  # DUCTO_REDIS_URL, DUCTO_NAMESPACE
        await store.setup()  # load the functions now rather than on the first request
        app.state.store = store
        yield


app = FastAPI(title="ducto-redis example", lifespan=lifespan)


def get_store(request: Request) -> AsyncRedisStore:
    """The app's store (a dependency: tests may override it)."""
    store: AsyncRedisStore = request.app.state.store
    return store


Store = Annotated[AsyncRedisStore, Depends(get_store)]
ApiKey = Annotated[str, Header(alias="X-API-Key", description="the account charged")]


def charge(cost: int, operation: str) -> Callable[..., Awaitable[DeductionResult]]:
    """A dependency charging ``cost`` credits to the caller before the route runs."""

    async def pay(store: Store, api_key: ApiKey,
                  idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> DeductionResult:
        r = await store.charge(api_key, cost, operation, idempotency_key=idempotency_key)
        if r.error == "rate_limited":
            raise HTTPException(429, detail=r.error, headers={"Retry-After": str(-(-(r.retry_after_ms or 0) // 1000))})
        if r.error:
            raise HTTPException(402, detail=r.error)
        return r

    return pay


@app.post("/chat")
async def chat(paid: Annotated[DeductionResult, Depends(charge(5, "chat"))]) -> dict[str, Any]:
    """A paid route: 5 credits a call."""
    return {"answer": "42", "balance": paid.balance_after, "replayed": paid.idempotent}


@app.get("/balance")
async def balance(store: Store, api_key: ApiKey) -> BalanceResult:
    """A free route: the caller's balance."""
    return await store.get_balance(api_key)


@app.post("/credits")
async def top_up(store: Store, api_key: ApiKey, amount: int = 100) -> dict[str, int]:
    """Demo only: credits for the caller (a real service adds them from its payment provider)."""
    r = await store.add_credits(api_key, amount, type="purchase")
    return {"balance": r.new_balance}
