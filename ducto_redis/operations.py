"""The one list of store methods: every operation mixin, the batched decisions, health and setup.

RedisStore, AsyncRedisStore, MemoryStore and AsyncMemoryStore all derive from :class:`StoreOps`
and a runner (``methods.py``): each method below and in the mixins is written once and runs on
all four. To add a store method, write it in the mixin of its topic (README: "Adding a store method").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from .accounts import AccountOps
from .batch import ChargeRequest, TeamDebitRequest, charge_calls, team_debit_calls
from .methods import Flow, blocking, client_io, flow, many
from .models import DeductionResult, SetupResult, TeamDeductionResult
from .plans import PlanOps
from .refund_ops import RefundOps
from .team_ops import TeamOps


def _setup_database(database_url: str, schema: str, result: SetupResult) -> None:
    """Create the ledger schema in PostgreSQL (blocking), saying in ``result`` what was done."""
    from .ledger.flusher import migrate

    try:
        migrate(database_url, schema)
        result.tables_created.append(f"{schema}.ledger")
    except Exception as exc:
        result.errors.append(f"ledger schema: {exc}")


def _script_loader(source: str) -> Callable[[Any], Any]:
    """SCRIPT LOAD of ``source`` on a client: its result (a sync client) or its awaitable (asyncio)."""
    return lambda client: client.script_load(source)


class StoreOps(AccountOps, TeamOps, RefundOps, PlanOps):
    """Every store method (see the module docstring)."""

    @flow
    def charge_many(self, requests: Sequence[ChargeRequest | Mapping[str, Any]]) -> Flow[list[DeductionResult]]:
        """Many ``charge`` decisions in one round trip (one script call per shard), results in order.

        Each request is a :class:`ChargeRequest` or a dict of ``charge``'s arguments. Every decision
        is all-or-nothing on its own, exactly as if ``charge`` were called once per request.
        """
        return (yield from many(charge_calls(self.core, requests)))

    @flow
    def deduct_team_many(
        self, requests: Sequence[TeamDebitRequest | Mapping[str, Any]]
    ) -> Flow[list[TeamDeductionResult]]:
        """Many ``deduct_team`` decisions in one round trip (one script call per team shard), in order.

        Each request is a :class:`TeamDebitRequest` or a dict of ``deduct_team``'s arguments.
        """
        return (yield from many(team_debit_calls(self.core, requests)))

    @flow
    def health(self) -> Flow[bool]:
        """True when a real script call answers on every shard (so on every node of a cluster)."""
        return all((yield from many(self.core.health_probes())))

    @flow
    def setup(self, database_url: str | None = None) -> Flow[SetupResult]:
        """Load the scripts' function library into Redis (FUNCTION LOAD); with a database URL (or
        ``DUCTO_DATABASE_URL``) also create the ledger schema in PostgreSQL. Safe to call again."""
        result = SetupResult()
        scripts = self.core.scripts
        library = next(iter(scripts.values())).library
        if (yield from client_io(library.load, library.load_async)):  # one function library holds every script
            result.rpcs_created.extend(f"{name}.lua" for name in scripts)
        else:  # no functions here (Redis < 7): the scripts are sent with EVAL
            for name, script in scripts.items():
                try:
                    load = _script_loader(script.source)
                    yield from client_io(load, load)
                    result.rpcs_created.append(f"{name}.lua")
                except redis.RedisError as exc:
                    result.errors.append(f"{name}.lua: {exc}")
        url = database_url or self.settings.database_url
        if url:
            yield from blocking(_setup_database, url, self.settings.ledger_schema, result)
        self._describe_setup(result)
        return result
