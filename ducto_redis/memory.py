"""MemoryStore: the embedded default, RedisStore over an in-process fakeredis running the same Lua."""

from __future__ import annotations

from typing import Any

from .settings import Settings
from .store import RedisStore


class MemoryStore(RedisStore):
    """A store that needs no server: an in-process fakeredis (with lupa) runs the very same scripts.

    Usable straight after construction, as ducto's ``MemoryStore`` is. Each instance has its own
    private server unless ``server`` is given.
    """

    def __init__(
        self, namespace: str = "ducto", *, server: Any = None, settings: Settings | None = None, **overrides: Any
    ) -> None:
        import fakeredis  # imported here: code that never builds an embedded store never loads it (nor lupa)

        self.server = server or fakeredis.FakeServer()
        client = fakeredis.FakeRedis(server=self.server, decode_responses=True)
        super().__init__(client, settings or Settings(), namespace=namespace, **overrides)
