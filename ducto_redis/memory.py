"""MemoryStore: the embedded store — an in-process fakeredis running the same Lua, and a SQLite ledger.

:class:`Embedded` is what MemoryStore and AsyncMemoryStore (``aio.py``) share: the in-process server
and the embedded ledger, which answers refunds of flushed debits and setup's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .core import Call
from .ledger.database import LedgerDatabase, LedgerReader
from .methods import StoreBase
from .models import SetupResult
from .settings import Settings, given
from .store import RedisStore

if TYPE_CHECKING:
    from .ledger.embedded import EmbeddedLedger

T = TypeVar("T")


class Embedded(StoreBase):
    """An embedded store's server (``server``: fakeredis's, shared by the stores given it) and ledger."""

    server: Any
    ledger: EmbeddedLedger
    asynchronous: bool  # the asyncio store's fakeredis client, or the sync one

    def __init__(
        self, namespace: str | None = None, *, server: Any = None, settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        import fakeredis  # imported here: code that never builds an embedded store never loads it (nor lupa)

        self.server = server or fakeredis.FakeServer()
        client_class = fakeredis.FakeAsyncRedis if self.asynchronous else fakeredis.FakeRedis
        client = client_class(server=self.server, decode_responses=True)
        store: Any = super()  # RedisStore or AsyncRedisStore, next in the store's MRO
        store.__init__(client, settings, **given(namespace=namespace), **overrides)
        self._open_ledger()

    def _open_ledger(self) -> None:
        from .ledger.embedded import EmbeddedLedger

        self.ledger = EmbeddedLedger.open(self.server, self.settings, self.core.keys)

    def _ledger_reader(self) -> LedgerReader | None:
        """The embedded SQLite ledger (it brings itself up to date before answering)."""
        return self.ledger

    def _describe_setup(self, result: SetupResult) -> None:
        result.tables_created.insert(0, f"ledger (SQLite, {self.ledger.path or 'in memory'})")


class MemoryStore(Embedded, RedisStore):
    """A store that needs no server: an in-process fakeredis (with lupa) runs the very same scripts,
    and its ledger entries are copied into SQLite (``ledger/embedded.py`` says when).

    Usable straight after construction, as ducto's ``MemoryStore`` is. Each instance has its own
    private server unless ``server`` is given (stores sharing a server share its ledger).

    ``ledger_file`` (or ``DUCTO_LEDGER_FILE``) keeps the ledger in that SQLite file instead of in
    memory; a store that starts on a fresh server with a file holding entries of its namespace
    rebuilds its state from them (balances, holds, caps, teams, plans, grants, pricing versions), so
    it carries on where the last process stopped. Analytics (``spend_by_user``, ...), restore and
    reconcile answer from the ledger, with the same queries as on PostgreSQL. ``setup()`` loads the
    scripts into the in-process server (the ledger table is SQLite's, created with the store); with
    a database URL it also creates the PostgreSQL ledger schema.
    """

    asynchronous = False

    # ── I/O: the calls' ledger entries go to SQLite (a file: before each call returns) ──

    def _run(self, call: Call[T]) -> T:
        try:
            return super()._run(call)
        finally:
            self.ledger.after(call.keys)

    def _run_many(self, calls: Sequence[Call[T]]) -> list[T]:
        try:
            return super()._run_many(calls)
        finally:
            self.ledger.after({k for c in calls for k in c.keys})

    # ── the ledger is the embedded one ────────────────────────────────

    def _ledger_database(self, database_url: str | None = None) -> LedgerDatabase:
        if database_url is not None:
            return super()._ledger_database(database_url)
        self.ledger.flush()
        return self.ledger.db

    def _catch_up(self) -> None:
        self.ledger.flush()

    def _unflushed_start(self, stream: str) -> str | None:
        """Where the entries not copied into SQLite yet begin (None: every entry is copied)."""
        return self.ledger.unflushed_start(stream)

    def _in_namespace(self, namespace: str) -> MemoryStore:
        """A store on this in-process server and these settings for another namespace."""
        return MemoryStore(namespace, server=self.server, settings=self.settings)
