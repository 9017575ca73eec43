"""Lua scripts: ``lua/*.lua`` loaded with importlib.resources, run as Redis Functions (FCALL).

All scripts live in ONE function library, ``ducto_<content hash>``: the shared helpers
(``lua/lib/*.lua``, joined) once, then each script's file as the body of a function
``ducto_<hash>_<script>`` taking KEYS and ARGV (each laid out as its spec in specs.py says).
Redis runs a library's top level once, when it is loaded, so a call runs only its own body; as
plain scripts every call re-ran the helpers' definitions (~9 us of a ~40 us debit).
Libraries of different versions have different names, so two deployments can share a Redis.

The library is loaded once per Redis (``FUNCTION LOAD REPLACE``, on every primary of a cluster) by
``setup()`` or on first use: a call answered "Function not found" did not run, so it loads the
library and calls again; if the library is gone again by then, or the server has no functions
(Redis < 7), the call is sent with EVAL and the script's source, which cannot miss. Functions are
kept in RDB/AOF and replicated, so a restart or a failover rarely needs the reload at all.

A script's EVAL source is the helpers followed by its body. The helpers' top level only defines
(locals, functions, constant tables): a library's top level runs at load time, where Redis offers no
``string``, ``table`` or ``cjson``.
"""

from __future__ import annotations

import hashlib
import sys
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from .settings import DEFAULT_SCRIPT_CONFIG
from .specs import SPECS, ScriptSpec

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # pragma: no cover
    from importlib.abc import Traversable

SCRIPT_NAMES = tuple(SPECS)
"""Every script, in library order: one ``lua/<name>.lua`` each, laid out as its spec says (specs.py)."""


def lua_files() -> Traversable:
    """The folder of .lua files, ``ducto_redis/lua``: in a wheel the files themselves, in a source
    checkout a symlink to the top-level ``lua/``. Found only through importlib.resources."""
    return resources.files("ducto_redis") / "lua"


@cache
def _read(name: str) -> str:
    return (lua_files() / f"{name}.lua").read_text(encoding="utf-8")


@cache
def library_source() -> str:
    """The shared helpers: ``lua/lib/*.lua`` joined in name order, the one place that order is set
    (each file one topic, numbered: a file may use what the files before it define)."""
    lib = sorted((f for f in (lua_files() / "lib").iterdir() if f.name.endswith(".lua")), key=lambda f: f.name)
    return default_config_line() + "\n".join(f.read_text(encoding="utf-8") for f in lib)


def default_config_line() -> str:
    """The library's first line: the configuration of the default settings, which a script reads
    for a ``config`` argument of ``""`` or left out (lib/01_base.lua ``config``; settings.py
    :func:`~ducto_redis.settings.script_config` sends "" for it)."""
    return f"local DEFAULT_CONFIG = '{DEFAULT_SCRIPT_CONFIG}'  -- the default settings' (ducto_redis/scripts.py)\n"


def function_missing(exc: BaseException) -> bool:
    """Whether an error reply says the function is not loaded (or FCALL unknown): the call did not run."""
    text = str(exc)
    return isinstance(exc, ResponseError) and (text.startswith("Function not found")
                                               or text.lower().startswith("unknown command"))


KEYS_SHORT = "DUCTO_KEYS"
"""The error code of a lean call's refusal (lua/lib/08_debit.lua keys_short): its decision needs the
KEYS the call left out; nothing was written (it did not run), and its widened form is sent instead."""


def keys_short(exc: BaseException) -> bool:
    """Whether an error reply is a lean call's refusal: it did not run, and needs all its KEYS."""
    return isinstance(exc, ResponseError) and str(exc).startswith(KEYS_SHORT)


def fcall(client: Any, function: str, keys: list[str], args: list[Any]) -> Any:
    """FCALL on a sync client. On a cluster it goes straight to the node of the first key's slot:
    redis-py would otherwise ask the server for FCALL's keys (COMMAND GETKEYS) on every call. A
    redirect (MOVED, ASK) is still followed by the cluster client."""
    if keys and isinstance(client, RedisCluster):
        cluster: Any = client  # redis-py's cluster methods are untyped
        return cluster.execute_command("FCALL", function, len(keys), *keys, *args,
                                       target_nodes=cluster.get_node_from_key(keys[0]))
    return client.fcall(function, len(keys), *keys, *args)


async def fcall_async(client: Any, function: str, keys: list[str], args: list[Any]) -> Any:
    """:func:`fcall` on an asyncio client."""
    if keys and isinstance(client, AsyncRedisCluster):
        await client.initialize()  # the slot map (a no-op once the client has it)
        return await client.execute_command("FCALL", function, len(keys), *keys, *args,
                                            target_nodes=client.get_node_from_key(keys[0]))
    return await client.fcall(function, len(keys), *keys, *args)


BIND = "if not rcall then bind() end\n"  # the globals into the library's locals (lib/01_base.lua)


class Library:
    """The function library holding every script (see the module docstring)."""

    __slots__ = ("name", "source")

    def __init__(self, lib: str, bodies: dict[str, str]) -> None:
        digest = hashlib.sha1("\0".join([lib, *bodies.values()]).encode("utf-8")).hexdigest()[:12]
        self.name = f"ducto_{digest}"
        parts = [f"#!lua name={self.name}", lib]
        for script, body in bodies.items():
            parts.append(f"redis.register_function('{self.name}_{script}', function(KEYS, ARGV)\n{BIND}{body}\nend)")
        self.source = "\n".join(parts)

    def load(self, client: Any) -> bool:
        """FUNCTION LOAD REPLACE (on every primary of a cluster); False when the server refuses it."""
        try:
            client.function_load(self.source, replace=True)
        except ResponseError:
            return False
        return True

    async def load_async(self, client: Any) -> bool:
        """:meth:`load` on an asyncio client."""
        try:
            await client.function_load(self.source, replace=True)
        except ResponseError:
            return False
        return True


class Script:
    """One script: its spec, its function in the library, and its EVAL source (helpers + body)."""

    __slots__ = ("function", "library", "name", "source", "spec")

    def __init__(self, name: str, library: Library) -> None:
        self.name = name
        self.spec: ScriptSpec = SPECS[name]
        self.library = library
        self.function = f"{library.name}_{name}"
        self.source = library_source() + "\n" + BIND + _read(name)

    def run(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """FCALL on a sync client; if the function is not loaded, load the library and call again;
        if it is still not there, EVAL the source (see the module docstring). A call answered
        "Function not found" did not run: running it afterwards applies it exactly once."""
        try:
            return fcall(client, self.function, keys, args)
        except ResponseError as exc:
            if not function_missing(exc):
                raise
        if self.library.load(client):
            try:
                return fcall(client, self.function, keys, args)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
        return client.eval(self.source, len(keys), *keys, *args)

    async def run_async(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """:meth:`run` on an asyncio client."""
        try:
            return await fcall_async(client, self.function, keys, args)
        except ResponseError as exc:
            if not function_missing(exc):
                raise
        if await self.library.load_async(client):
            try:
                return await fcall_async(client, self.function, keys, args)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
        return await client.eval(self.source, len(keys), *keys, *args)


@cache
def scripts() -> dict[str, Script]:
    """Every script by name, all in one library (sources read once per process)."""
    library = Library(library_source(), {name: _read(name) for name in SCRIPT_NAMES})
    return {name: Script(name, library) for name in SCRIPT_NAMES}
