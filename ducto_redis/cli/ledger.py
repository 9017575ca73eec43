"""The ledger's operator commands: migrate, flush, status, restore, reconcile, sweep-credits."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import click
from rich.console import Console

from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode, missing_extra
from .output import emit, polled_progress, progress_bar, table

POSITIVE = click.IntRange(min=1)


@cli.command()
@pass_state
def migrate(state: CliState) -> None:
    """Create the ledger schema in PostgreSQL (idempotent)."""
    from ..ledger.flusher import migrate as create_schema

    schema = state.settings().ledger_schema
    create_schema(state.database_url(), schema)
    emit(state, {"schema": schema, "ready": True}, lambda out: out.print(f"ledger schema {schema!r} ready"))


@cli.command(default_log_level=logging.INFO)
@click.option("--once", is_flag=True, help="drain what is there, then exit")
@click.option("--batch", type=POSITIVE, default=20_000, show_default=True, help="entries per PostgreSQL transaction")
@click.option("--processes", type=POSITIVE, default=1, show_default=True,
              help="flusher processes sharing the work (each holds about one core)")
@click.option("--log-interval", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="seconds between throughput lines in the log (0: none)")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="answer Prometheus metrics (ledger backlog, rows/s, batch time) on this port "
              "(needs the [service] extra)")
@pass_state
def flush(state: CliState, once: bool, batch: int, processes: int, log_interval: float,
          metrics_port: int | None) -> None:
    """Copy ledger entries from Redis into PostgreSQL (until interrupted, or --once)."""
    from ..ledger.flusher import LedgerFlusher
    from ..ledger.flusher import migrate as create_schema

    if metrics_port is not None:  # before anything is touched
        try:
            from ..metrics import serve_ledger_metrics
        except ImportError as exc:
            raise missing_extra("--metrics-port", "service", exc) from None
    settings, url = state.settings(), state.database_url()
    store = state.store()
    store.client.ping()  # an unreachable Redis fails here, with its own exit code
    create_schema(url, settings.ledger_schema)
    on_batch = serve_ledger_metrics(metrics_port, store).on_batch if metrics_port is not None else None
    start = store.ledger_lag().backlog

    def drained() -> tuple[int, int]:  # (entries gone from the streams, entries in all): the progress
        left = store.ledger_lag().backlog
        return max(0, start - left), max(start, start - left)

    if processes > 1:
        from ..ledger.processes import run_flusher_processes

        kwargs = {"url": settings.redis_url, "namespace": settings.namespace, "database_url": url,
                  "ledger_schema": settings.ledger_schema}
        with polled_progress("flush", "entries", drained) if once else contextlib.nullcontext():
            moved = run_flusher_processes(processes, kwargs, url, batch=batch, once=once,
                                          log_level=logging.getLogger("ducto_redis").getEffectiveLevel(),
                                          log_interval=log_interval)
    else:
        flusher = LedgerFlusher(store, url, batch=batch, log_interval=log_interval, on_batch=on_batch)
        if once:
            with polled_progress("flush", "entries", drained):
                flusher.drain(timeout=3600)
        else:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand, then stop
                signal.signal(sig, lambda *_: stop.set())
            flusher.run(stop)
        moved = flusher.flushed
    emit(state, {"flushed": moved}, lambda out: out.print(f"flushed {moved} entries"))


@cli.command()
@pass_state
def status(state: CliState) -> None:
    """Print the ledger's backlog per shard, pending entries and the oldest entry's age."""
    store = state.store()
    lag = store.ledger_lag()
    shards = store.settings.shards

    def human(out: Console) -> None:
        rows = [(shard, n) for shard, n in sorted(lag.per_shard.items())]
        if rows:
            out.print(table(f"ledger backlog per shard ({len(rows)} of {shards} shards hold entries)",
                            ("shard", "entries"), [*rows, ("all", lag.backlog)], numeric=("shard", "entries")))
        out.print(f"backlog {lag.backlog} entries, pending {lag.pending}, "
                  f"oldest unflushed {lag.oldest_unflushed_age_ms} ms")

    emit(state, {**lag.model_dump(), "shards": shards}, human)


@cli.command()
@pass_state
def restore(state: CliState) -> None:
    """Rebuild every Redis key of the namespace from the ledger."""
    store, url = state.store(), state.database_url()
    with progress_bar("restore", "accounts") as progress:
        n = store.restore_from_ledger(url, progress=progress)
    emit(state, {"restored": n}, lambda out: out.print(f"restored {n} accounts"))


@cli.command()
@pass_state
def reconcile(state: CliState) -> None:
    """Compare Redis with the ledger, account by account; exit 1 on drift."""
    store, url = state.store(), state.database_url()
    with progress_bar("reconcile", "accounts") as progress:
        drift = store.reconcile_with_ledger(url, progress=progress)

    def human(out: Console) -> None:
        rows = []
        for account, lines in sorted(drift.items()):
            for line in lines:
                what, _, difference = line.partition(": ")
                rows.append((account, what, difference))
        if rows:
            out.print(table("drift between Redis and the ledger", ("account", "what", "difference"), rows))
        out.print(f"{len(drift)} accounts drift" if drift else "0 drift")

    emit(state, {"drift": drift, "accounts_drifting": len(drift)}, human)
    if drift:
        raise click.exceptions.Exit(int(ExitCode.NO))


@cli.command("sweep-credits")
@click.option("--dry-run", is_flag=True, help="report what would expire, write nothing")
@pass_state
def sweep_credits(state: CliState, dry_run: bool) -> None:
    """Remove expired unspent credit grants from balances (run it from cron)."""
    store = state.store()
    with progress_bar("sweep", "accounts") as progress:
        r = store.sweep_expired_credits(dry_run=dry_run, progress=progress)

    def human(out: Console) -> None:
        out.print(f"{'would expire' if r.dry_run else 'expired'} {r.expired_count} grants, {r.expired_amount} credits")

    emit(state, r.model_dump(mode="json"), human)


__all__ = ["CliError", "flush", "migrate", "reconcile", "restore", "status", "sweep_credits"]
