"""Lua scripts: loaded from ``lua/*.lua`` with importlib.resources, run by EVALSHA.

Every script is the part of ``lib.lua`` (shared helpers) it uses, followed by the script's own file:
Redis runs a script's whole chunk on every call, and defining all of lib.lua's closures and tables
took ~9 us per call, so :func:`prelude_for` keeps only the top-level definitions the script names,
directly or through another kept definition, in lib.lua's order. A script is
registered once per store (``SCRIPT LOAD`` in ``setup()``, or on first use); when Redis answers
NOSCRIPT (after ``SCRIPT FLUSH``, a restart or a failover) the call is sent once with EVAL, which
runs it and caches it again: a cache flushed at any moment never fails a call.
"""

from __future__ import annotations

import hashlib
import re
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


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES = re.compile(r"local\s+function\s+([A-Za-z_][A-Za-z0-9_]*)|local\s+([A-Za-z_][A-Za-z0-9_,\s]*?)\s*(?:=|$)")


def _lib_blocks(lib: str) -> list[tuple[set[str], str]]:
    """lib.lua as its top-level statements: (names each defines, its text, comments before it included).

    A statement starts at a line beginning with ``local``; lines indented, blank, ``end`` or comments
    belong to the statement around them. Anything else at the top level is refused (it could be a
    side effect a dropped block would lose).
    """
    blocks: list[tuple[set[str], list[str]]] = [(set(), [])]
    pending: list[str] = []  # comment lines before the next statement
    for line in lib.splitlines():
        if line.startswith("local"):
            m = _DEFINES.match(line)
            if m is None:
                raise ValueError(f"lib.lua: cannot tell what this defines: {line!r}")
            names = {m.group(1)} if m.group(1) else {n.strip() for n in m.group(2).split(",")}
            blocks.append((names, [*pending, line]))
            pending = []
        elif line.startswith("--") or not line.strip():
            pending.append(line)
        elif line[0].isspace() or line.startswith("end"):
            blocks[-1][1].extend([*pending, line])
            pending = []
        else:
            raise ValueError(f"lib.lua: a top-level statement that defines nothing: {line!r}")
    blocks[-1][1].extend(pending)
    return [(names, "\n".join(lines)) for names, lines in blocks]


def prelude_for(body: str, lib: str) -> str:
    """The definitions of ``lib`` that ``body`` uses, directly or through each other, in lib's order."""
    blocks = _lib_blocks(lib)
    owner = {name: i for i, (names, _) in enumerate(blocks) for name in names}
    keep: set[int] = set()
    todo = [owner[w] for w in set(_WORD.findall(body)) if w in owner]
    while todo:
        i = todo.pop()
        if i not in keep:
            keep.add(i)
            todo.extend(owner[w] for w in set(_WORD.findall(blocks[i][1])) if w in owner and owner[w] not in keep)
    return "\n".join(text for i, (_, text) in enumerate(blocks) if i in keep or i == 0)


class Script:
    """One Lua script: its full source (prelude + body) and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        body = _read(name)
        self.source = prelude_for(body, _read("lib")) + "\n" + body
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
