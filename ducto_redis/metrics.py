"""Prometheus metrics of the hot path and the ledger (``prometheus_client``, the ``[service]`` extra).

What is measured:

- ``ducto_decisions_total{operation, outcome}``: decisions by operation (``charge``, ``reserve``,
  ``authorize``, ...) and outcome (``ok`` or the error code: ``insufficient_credits``,
  ``rate_limited``, ``unavailable``, ...);
- ``ducto_decision_seconds{operation}``: decision latency (the Redis call included);
- ``ducto_redis_errors_total{operation}``: Redis unreachable or too slow;
- ``ducto_fail_open_total{operation}``: requests let through because Redis failed and the fail
  mode is ``open``;
- ``ducto_ledger_backlog_entries{namespace}`` and ``ducto_ledger_oldest_unflushed_seconds{namespace}``:
  read from Redis at each scrape (:class:`LedgerLagCollector`);
- ``ducto_flusher_rows_total{namespace}``, ``ducto_flusher_batch_seconds{namespace}`` and
  ``ducto_flusher_rows_per_second{namespace}`` (the last batch): fed by the flusher's ``on_batch`` hook.

``serve`` answers them at ``/metrics``, ``ducto-redis flush --metrics-port`` on its own port, and
``metrics_app()`` is an ASGI app for your own (``Route("/metrics", metrics_app())``).
With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (``serve --workers`` does) and every
scrape sums all workers. ``import ducto_redis`` does not import prometheus_client; this module does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DecisionMetrics:
    """The hot path's counters and histograms (one set per process: see :func:`decision_metrics`)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.decisions = Counter("ducto_decisions", "Decisions by operation and outcome",
                                 ["operation", "outcome"], registry=registry)
        self.latency = Histogram("ducto_decision_seconds", "Decision latency, Redis call included",
                                 ["operation"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.redis_errors = Counter("ducto_redis_errors", "Redis unreachable or too slow, by operation",
                                    ["operation"], registry=registry)
        self.fail_open = Counter("ducto_fail_open", "Requests let through while Redis failed (fail_mode=open)",
                                 ["operation"], registry=registry)
        self._children: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        """Count one decision and its latency."""
        key = (operation, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(operation, outcome)
        child.inc()
        timer = self._timers.get(operation)
        if timer is None:
            timer = self._timers[operation] = self.latency.labels(operation)
        timer.observe(seconds)

    def redis_error(self, operation: str) -> None:
        """Count a Redis failure (connection refused, timeout)."""
        self.redis_errors.labels(operation).inc()

    def passed_open(self, operation: str) -> None:
        """Count a request let through by ``fail_mode=open``."""
        self.fail_open.labels(operation).inc()


_DECISIONS: DecisionMetrics | None = None


def decision_metrics() -> DecisionMetrics:
    """The process's decision metrics (registered once in the default registry)."""
    global _DECISIONS
    if _DECISIONS is None:
        _DECISIONS = DecisionMetrics()
    return _DECISIONS


class FlusherMetrics:
    """Flusher throughput; pass :meth:`on_batch` as ``LedgerFlusher(on_batch=...)``."""

    def __init__(self, namespace: str, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.rows = Counter("ducto_flusher_rows", "Ledger rows committed to PostgreSQL",
                            ["namespace"], registry=registry).labels(namespace)
        self.batch = Histogram("ducto_flusher_batch_seconds", "Time to store one batch (COPY, commit, ack)",
                               ["namespace"], registry=registry).labels(namespace)
        self.last_rows_per_second = 0.0

    def on_batch(self, rows: int, seconds: float) -> None:
        """Record one committed batch of ``rows`` entries that took ``seconds``."""
        self.rows.inc(rows)
        self.batch.observe(seconds)
        if seconds > 0:
            self.last_rows_per_second = rows / seconds


class LedgerLagCollector(Collector):
    """Reads the ledger backlog and the age of the oldest unflushed entry at each scrape.

    ``lag`` returns a ``LedgerLag`` (``RedisStore.ledger_lag``); a failing read yields nothing.
    """

    def __init__(self, namespace: str, lag: Callable[[], Any], flusher: FlusherMetrics | None = None) -> None:
        self.namespace = namespace
        self.lag = lag
        self.flusher = flusher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            lag = self.lag()
        except Exception:  # Redis away: the scrape still answers, without these gauges
            return
        backlog = GaugeMetricFamily("ducto_ledger_backlog_entries", "Ledger entries not yet in PostgreSQL",
                                    labels=["namespace"])
        backlog.add_metric([self.namespace], lag.backlog)
        yield backlog
        age = GaugeMetricFamily("ducto_ledger_oldest_unflushed_seconds", "Age of the oldest unflushed entry",
                                labels=["namespace"])
        age.add_metric([self.namespace], lag.oldest_unflushed_age_ms / 1000)
        yield age
        if self.flusher is not None:
            rate = GaugeMetricFamily("ducto_flusher_rows_per_second", "Rows per second of the last batch",
                                     labels=["namespace"])
            rate.add_metric([self.namespace], self.flusher.last_rows_per_second)
            yield rate


def scrape(extra: Collector | None = None) -> bytes:
    """The metrics text: this process's (or, with ``PROMETHEUS_MULTIPROC_DIR``, every worker's),
    plus ``extra`` (e.g. a :class:`LedgerLagCollector`)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    if extra is not None:
        registry.register(extra)
    return generate_latest(registry)


class _Default(Collector):
    """The default registry's metrics, seen from a scrape registry of its own."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


class MetricsApp:
    """An ASGI app answering the metrics; ``Route("/metrics", MetricsApp())`` in your own app."""

    def __init__(self, extra: Collector | None = None) -> None:
        self.extra = extra

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = scrape(self.extra)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": body})


def metrics_app(extra: Collector | None = None) -> MetricsApp:
    """An ASGI app answering the metrics (``Route("/metrics", metrics_app())``, or mount it)."""
    return MetricsApp(extra)


def serve_ledger_metrics(port: int, store: Any, host: str = "0.0.0.0") -> FlusherMetrics:
    """Answer ``ducto-redis flush``'s metrics on ``host:port`` (a thread): ledger backlog and age at
    each scrape, and the flusher's rows and batch times through the returned :class:`FlusherMetrics`
    (pass its ``on_batch`` to the flusher)."""
    from prometheus_client import start_http_server

    namespace = store.settings.namespace
    registry = CollectorRegistry()
    flusher = FlusherMetrics(namespace, registry)
    registry.register(LedgerLagCollector(namespace, store.ledger_lag, flusher))
    start_http_server(port, host, registry)
    return flusher
