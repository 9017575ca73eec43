"""Several flusher processes at once (``ducto-redis flush --processes N``).

One flusher is one Python process: its reading and formatting hold one core while Postgres works
on another. Flushers share a stream's entries through the consumer group (each entry is delivered
to one of them, and a dead one's are claimed by another), so more processes drain a backlog
faster, up to what Redis and Postgres can take (bench/RESULTS.md, "Flusher").
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from typing import Any

__all__ = ["run_flusher_processes"]


def _flusher_process(store_kwargs: dict[str, Any], database_url: str, batch: int, once: bool, stop: Any,
                     out: Any, log_level: int | None = None, log_interval: float = 10.0,
                     claim_idle_ms: int = 30_000) -> None:
    """One flusher: drain (``once``) or run until ``stop`` is set; reports the entries it moved."""
    from ..store import RedisStore
    from .flusher import LedgerFlusher

    if log_level is not None:  # a spawned process starts with no logging set up
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(processName)s: %(message)s")
        logging.getLogger("ducto_redis").setLevel(log_level)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which sets `stop`
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    flusher = LedgerFlusher(RedisStore.from_url(**store_kwargs), database_url, batch=batch, log_interval=log_interval,
                            claim_idle_ms=claim_idle_ms)
    flusher.serve(once, stop)
    out.put(flusher.flushed)


def run_flusher_processes(processes: int, store_kwargs: dict[str, Any], database_url: str, *, batch: int = 20_000,
                          once: bool = False, log_level: int | None = None, log_interval: float = 10.0,
                          claim_idle_ms: int = 30_000) -> int:
    """Run ``processes`` flusher processes until they have drained the ledger (``once``) or until
    SIGINT/SIGTERM; returns the entries they moved in all. ``store_kwargs`` go to
    :meth:`RedisStore.from_url` in each process. A process that fails makes this raise. With
    ``log_level``, each process logs ``ducto_redis.*`` records at that level to its stderr (its
    throughput every ``log_interval`` seconds)."""
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    args = (store_kwargs, database_url, batch, once, stop, out, log_level, log_interval, claim_idle_ms)
    procs = [ctx.Process(target=_flusher_process, args=args, name=f"ducto-flusher-{i}") for i in range(processes)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            try:
                for p in procs:
                    p.join(0.2)
            except KeyboardInterrupt:
                stop.set()
    finally:
        stop.set()
        for p in procs:
            p.join()
        signal.signal(signal.SIGTERM, previous)
    moved = [out.get(timeout=5) for p in procs if p.exitcode == 0]
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"flusher process(es) {', '.join(failed)} failed; their entries stay pending "
                           "and are claimed by the next flusher")
    return sum(moved)
