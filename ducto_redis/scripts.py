"""Lua scripts: loaded from ``lua/*.lua`` with importlib.resources, run by EVALSHA.

Every script is ``lib.lua`` (shared helpers) followed by the script's own file. A script is
registered once per store (``SCRIPT LOAD`` in ``setup()``, or on first use); when Redis answers
NOSCRIPT (after ``SCRIPT FLUSH``, a restart or a failover) the call is sent once with EVAL, which
runs it and caches it again: a cache flushed at any moment never fails a call.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

SCRIPT_NAMES = (
    "add_credits",
    "reserve",
    "debit",
    "debit_many",
    "release",
    "set_cap",
    "balance",
    "check_cap",
    "set_rate_limit",
    "hit_rate_limit",
    "pool_create",
    "pool_member",
    "pool_debit",
    "pool_debit_many",
    "pool_reserve",
    "pool_release",
    "pool_read",
    "set_plan",
    "plan_read",
    "plan_usage",
    "plan_debit",
    "pricing_set",
    "pricing_read",
    "refund_find",
    "refund",
    "sweep_due",
    "sweep_credits",
)


def _lua_dir() -> Path:
    """The folder of .lua files: inside the installed wheel, else the source checkout's ``lua/``."""
    packaged = resources.files("ducto_redis") / "lua"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "lua"


@cache
def _read(name: str) -> str:
    return (_lua_dir() / f"{name}.lua").read_text(encoding="utf-8")


class Script:
    """One Lua script: its full source (prelude + body) and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _read("lib") + "\n" + _read(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def run(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on a sync client; on NOSCRIPT run it once with EVAL.

        EVAL sends the source (which Redis caches again for the next EVALSHA) and cannot itself
        fail with NOSCRIPT, so a cache flushed again between a reload and a retry cannot fail the
        call. NOSCRIPT means the script did not run: running it now applies it exactly once.
        """
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    async def run_async(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on an asyncio client; on NOSCRIPT run it once with EVAL (see :meth:`run`)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


@cache
def scripts() -> dict[str, Script]:
    """Every script by name (sources read once per process)."""
    return {name: Script(name) for name in SCRIPT_NAMES}
