"""A pytest plugin that makes ``import ducto...`` load ducto-redis, for running ducto 1.0's own tests.

Loaded by ``bench/ducto_suite.py`` (``-p ducto_shim``), never by the project's own test run.
Every ``ducto`` module ducto 1.0's tests import is an alias module that hands out the attributes of
the ducto-redis module it maps to (``MODULES``); a name missing there fails the import as it would
for a user. On the ``redis`` backend (``DUCTO_SUITE_BACKEND=redis``) ``MemoryStore()`` builds a
:class:`~ducto_redis.RedisStore` on ``DUCTO_SUITE_REDIS_URL`` in a namespace of its own (deleted
when the run ends), with its ledger in PostgreSQL (``DUCTO_SUITE_DATABASE_URL``, schema
``DUCTO_SUITE_LEDGER_SCHEMA``). Each test's outcome is written as JSON to ``DUCTO_SUITE_REPORT``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
import uuid
from typing import Any

import pytest

# ducto 1.0's module -> the ducto-redis module that holds the same names
MODULES = {
    "ducto": "ducto_redis",
    "ducto.config": "ducto_redis.config",
    "ducto.engine": "ducto_redis.pricing.engine",
    "ducto.metrics": "ducto_redis.pricing.metrics",
    "ducto.breakdown": "ducto_redis.pricing.metrics",
    "ducto.expr": "ducto_redis.pricing.expr",
    "ducto.events": "ducto_redis.events",
    "ducto.manager": "ducto_redis.manager",
    "ducto.interface": "ducto_redis",
    "ducto.interface.memory": "ducto_redis.memory",
    "ducto.interface.models": "ducto_redis.models",
    "ducto.__main__": "ducto_redis.__main__",
}

_namespaces: list[str] = []
_outcomes: dict[str, str] = {}


class _Alias(types.ModuleType):
    """A ``ducto.*`` module: every attribute comes from its ducto-redis module (or ``overrides``)."""

    def __init__(self, name: str, target: str, overrides: dict[str, Any]) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package, so that its submodules import
        self._target = target
        self._overrides = overrides

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in self._overrides:
            return self._overrides[attr]
        return getattr(importlib.import_module(self._target), attr)


def _redis_store_class() -> type:
    from ducto_redis import RedisStore
    from ducto_redis.connect import sync_client

    url = os.environ.get("DUCTO_SUITE_REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = os.environ["DUCTO_SUITE_DATABASE_URL"]
    schema = os.environ["DUCTO_SUITE_LEDGER_SCHEMA"]

    class RedisBackedStore(RedisStore):
        """ducto's ``MemoryStore()``, on the real Redis (a fresh namespace per store) with its ledger
        in PostgreSQL (the run's schema, migrated by the runner as an operator would)."""

        def __init__(self) -> None:
            namespace = "ducto-suite-" + uuid.uuid4().hex[:12]
            _namespaces.append(namespace)
            super().__init__(sync_client(url), namespace=namespace, database_url=database_url,
                             ledger_schema=schema)

    return RedisBackedStore


def _install() -> None:
    overrides: dict[str, Any] = {}
    if os.environ.get("DUCTO_SUITE_BACKEND", "memory") == "redis":
        overrides["MemoryStore"] = _redis_store_class()
    for name, target in MODULES.items():
        sys.modules[name] = _Alias(name, target, overrides)


_install()


def _drop_namespaces() -> None:
    if not _namespaces:
        return
    from ducto_redis.connect import sync_client

    client = sync_client(os.environ.get("DUCTO_SUITE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    for namespace in _namespaces:
        keys = list(client.scan_iter(match=f"{{{namespace}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    client.close()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _outcomes[report.nodeid] = "import error"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    _drop_namespaces()
    path = os.environ.get("DUCTO_SUITE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)
