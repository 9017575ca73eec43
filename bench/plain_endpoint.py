"""The yardstick of the service benchmark: a plain Starlette endpoint making ONE bare redis.asyncio
EVALSHA of the shared reference debit script (../shared/bench/reference_debit.lua; its keys and
arguments as its README gives them), per request; ``/auth`` is the same as a forward-auth target.

Run: ``uvicorn plain_endpoint:app --app-dir bench --workers N`` (``DUCTO_REDIS_URL``, and
``DUCTO_REFERENCE_LUA`` when the script is not at ../shared/bench/reference_debit.lua).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_LUA = Path(__file__).resolve().parents[2] / "shared/bench/reference_debit.lua"
LUA = Path(os.environ.get("DUCTO_REFERENCE_LUA", DEFAULT_LUA))
client = aioredis.Redis.from_url(os.environ.get("DUCTO_REDIS_URL", "redis://127.0.0.1:6379/0"))
sha: str | None = None
ids = itertools.count()
PID = os.getpid()


async def debit(account: str) -> list[int]:
    global sha
    if sha is None:
        sha = await client.script_load(LUA.read_text())
    t = "{" + account + "}"
    reply: list[int] = await client.evalsha(sha, 4, f"ref:{t}:bal", f"ref:{t}:day", f"ref:{t}:mem", f"ref:{t}:ledger",
                                            1, 10**15, "m1", 10**15, f"e{PID}-{next(ids)}", 1735689600000, 90000)
    return reply


async def charge(request: Request) -> JSONResponse:
    body = await request.json()
    ok, balance = await debit(body["user_id"])
    return JSONResponse({"ok": ok == 1, "balance_after": balance}, 200 if ok == 1 else 402)


async def auth(request: Request) -> Response:
    ok, balance = await debit(request.headers.get("x-api-key", "anon"))
    return Response(b"", 200 if ok == 1 else 402, {"X-Credits-Remaining": str(balance)})


app = Starlette(routes=[Route("/charge", charge, methods=["POST"]), Route("/auth", auth)])
