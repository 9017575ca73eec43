"""Example gateway: a Starlette app behind CreditMiddleware.

Run it (Redis at $DUCTO_REDIS_URL):  uvicorn examples.gateway_app:app --port 8000
Seed a key:  curl -X POST 'localhost:8000/seed?key=demo-key&credits=1000&rps=50'
Then:        curl -H 'X-API-Key: demo-key' localhost:8000/chat
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ducto_redis.aio import AsyncRedisStore
from ducto_redis.asgi import CreditMiddleware

store = AsyncRedisStore.from_url(
    os.environ.get("DUCTO_REDIS_URL"), namespace=os.environ.get("DUCTO_NAMESPACE", "gateway-demo")
)


async def chat(request: Request) -> JSONResponse:
    return JSONResponse({"answer": "42"})


async def search(request: Request) -> JSONResponse:
    return JSONResponse({"results": []})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def seed(request: Request) -> JSONResponse:
    """Demo only: give an API key credits and a rate limit."""
    key = request.query_params.get("key", "demo-key")
    await store.add_credits(key, int(request.query_params.get("credits", "1000")), type="purchase")
    await store.set_rate_limit(key, limit=int(request.query_params.get("rps", "50")), period_seconds=1)
    return JSONResponse({"seeded": key, "balance": (await store.get_balance(key)).balance})


app = Starlette(routes=[Route("/chat", chat), Route("/search", search), Route("/health", health),
                        Route("/seed", seed, methods=["POST"])])
app.add_middleware(CreditMiddleware, store=store, costs={"/chat": 5, "/search": 1, "/health": 0},
                   exempt_paths=("/seed",))
