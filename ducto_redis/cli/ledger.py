"""The ledger's operator commands: migrate, flush, status, restore, reconcile, sweep-credits."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict

import click
from rich.console import Console

from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode, missing_extra
from .output import emit, polled_progress, progress_bar, table

POSITIVE = click.IntRange(min=1)


def lines(text: list[str]) -> Callable[[Console], None]:
    """A printer of ``text``, a line each (what :func:`emit` shows a person)."""

    def show(out: Console) -> None:
        for line in text:
            out.print(line)

    return show


@cli.command()
@pass_state
def migrate(state: CliState) -> None:
    """Create the ledger schema in PostgreSQL (idempotent)."""
    from ..ledger.flusher import migrate as create_schema

    schema = state.settings().ledger_schema
    create_schema(state.database_url(), schema)
    emit(state, {"schema": schema, "ready": True}, lambda out: out.print(f"ledger schema {schema!r} ready"))


@cli.command(default_log_level=logging.INFO)
@click.option("--once", is_flag=True, help="drain what is there (a dead flusher's entries included), then exit")
@click.option("--batch", type=POSITIVE, default=20_000, show_default=True, help="entries per PostgreSQL transaction")
@click.option("--processes", type=POSITIVE, default=1, show_default=True,
              help="flusher processes sharing the work (each holds about one core)")
@click.option("--claim-idle-ms", type=click.IntRange(min=0), default=30_000, show_default=True,
              help="take over entries another flusher left pending this long (a dead one's); 0: all of them")
@click.option("--log-interval", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="seconds between throughput lines in the log (0: none)")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="answer Prometheus metrics (ledger backlog, rows/s, batch time) on this port "
              "(needs the [service] extra)")
@pass_state
def flush(state: CliState, once: bool, batch: int, processes: int, claim_idle_ms: int, log_interval: float,
          metrics_port: int | None) -> None:
    """Copy ledger entries from Redis into PostgreSQL (until interrupted, or --once).

    It starts while PostgreSQL is away (it creates the schema once PostgreSQL answers, saying what it
    waits for). With --once, exit 9 when entries are left pending on other consumers."""
    from ..ledger import ops

    if metrics_port is not None:  # before anything is touched
        try:
            from ..metrics import serve_ledger_metrics
        except ImportError as exc:
            raise missing_extra("--metrics-port", "service", exc) from None
    url = state.database_url()
    store = state.store()
    store.client.ping()  # an unreachable Redis fails here, with its own exit code
    on_batch = serve_ledger_metrics(metrics_port, store).on_batch if metrics_port is not None else None
    start = store.ledger_lag().backlog

    def drained() -> tuple[int, int]:  # (entries gone from the streams, entries in all): the progress
        left = store.ledger_lag().backlog
        return max(0, start - left), max(start, start - left)

    stop = threading.Event()
    if not once:
        for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand, then stop
            signal.signal(sig, lambda *_: stop.set())
    with polled_progress("flush", "entries", drained) if once else contextlib.nullcontext():
        report = ops.flush(store, url, once=once, batch=batch, claim_idle_ms=claim_idle_ms, processes=processes,
                           stop=stop, log_interval=log_interval,
                           log_level=logging.getLogger("ducto_redis").getEffectiveLevel(), on_batch=on_batch)
    emit(state, asdict(report), lines(report.lines()))
    if not report.complete:
        raise click.exceptions.Exit(int(ExitCode.PENDING))


@cli.command()
@pass_state
def status(state: CliState) -> None:
    """Print the ledger's backlog per shard, pending entries, the oldest entry's age and (with a
    database URL) how many entries PostgreSQL refused and the quarantine keeps."""
    from ..ledger import ops

    store = state.store()
    result = ops.status(store, state.settings().database_url)
    lag = result.lag
    shards = store.settings.shards

    def human(out: Console) -> None:
        rows = [(shard, n) for shard, n in sorted(lag.per_shard.items())]
        if rows:
            out.print(table(f"ledger backlog per shard ({len(rows)} of {shards} shards hold entries)",
                            ("shard", "entries"), [*rows, ("all", lag.backlog)], numeric=("shard", "entries")))
        for line in result.lines():
            out.print(line)

    quarantine = asdict(result.quarantine) if result.quarantine is not None else None
    emit(state, {**lag.model_dump(), "shards": shards, "quarantine": quarantine}, human)


@cli.command()
@click.option("--dry-run", is_flag=True, help="write nothing; report what would be written and what stands in the way")
@click.option("--force", is_flag=True,
              help="restore although entries are not in PostgreSQL yet (their decisions are lost) or keys live")
@click.option("--target-namespace", default=None,
              help="restore into this namespace instead (a drill: the live namespace is only read)")
@pass_state
def restore(state: CliState, dry_run: bool, force: bool, target_namespace: str | None) -> None:
    """Rebuild the namespace's Redis keys from the ledger.

    Refused (exit 1, nothing written) while the namespace has ledger entries not yet in PostgreSQL
    or live keys, unless --force; --dry-run reports what would be written."""
    from ..ledger.recovery import RestoreRefused

    store, url = state.store(), state.database_url()
    try:
        with progress_bar("restore", "accounts") as progress:
            report = store.restore_ledger(url, dry_run=dry_run, force=force, target_namespace=target_namespace,
                                          progress=progress)
    except RestoreRefused as exc:
        report = exc.report
    emit(state, {**asdict(report), "restored": report.total_accounts if report.written else 0},
         lines(report.lines()))
    if report.refusals:
        raise click.exceptions.Exit(int(ExitCode.NO))


@cli.command()
@click.option("--ledger-namespace", default=None,
              help="compare with the ledger of this namespace (after a drill restore into this one)")
@pass_state
def reconcile(state: CliState, ledger_namespace: str | None) -> None:
    """Compare Redis with the ledger, every account on both sides; exit 1 on drift, 9 when accounts
    wait to be flushed (their difference cannot be judged yet)."""
    store, url = state.store(), state.database_url()
    with progress_bar("reconcile", "accounts") as progress:
        report = store.reconcile_ledger(url, ledger_namespace=ledger_namespace, progress=progress)

    def human(out: Console) -> None:
        rows = []
        for account, lines in sorted(report.drift.items()):
            for line in lines:
                what, _, difference = line.partition(": ")
                rows.append((account, what, difference))
        if rows:
            out.print(table("drift between Redis and the ledger", ("account", "what", "difference"), rows))
        waiting = sorted(report.not_yet_flushed.items())
        if waiting:
            out.print(table("not yet flushed (entries still in Redis)", ("account", "entries"), waiting,
                            numeric=("entries",)))
        for line in report.summary_lines():
            out.print(line)

    emit(state, {"drift": report.drift, "accounts_drifting": len(report.drift),
                 "not_yet_flushed": report.not_yet_flushed, "unflushed_entries": report.unflushed_entries,
                 "ledger_accounts": report.ledger_accounts, "redis_accounts": report.redis_accounts}, human)
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)


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
