"""``ducto-redis report``: the ledger's spend analytics as one self-contained HTML page with charts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ..ledger.database import LedgerDatabase, PostgresLedger, SqliteLedger
from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode
from .output import emit


def _ledger(state: CliState, ledger_file: Path | None) -> LedgerDatabase:
    """The ledger the report reads: the SQLite file given (or ``DUCTO_LEDGER_FILE`` when no database
    URL is set), else the PostgreSQL ledger (exit 5 when none is configured)."""
    settings = state.settings()
    path = ledger_file or (settings.ledger_file if not settings.database_url else None)
    if path is not None:
        if not Path(path).is_file():
            raise CliError(ExitCode.NO_FILE, f"cannot read ledger file {path}: no such file")
        return SqliteLedger(path)
    return PostgresLedger(state.database_url(), settings.ledger_schema)


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the page here (default: stdout)")
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True,
              help="the last N UTC days, today included")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None, help="first day (YYYY-MM-DD)")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="last day, included (YYYY-MM-DD)")
@click.option("--top", type=click.IntRange(1, 100), default=10, show_default=True, help="how many top users")
@click.option("--team", "teams", multiple=True, help="a team whose members to show (repeat; default: the 3 "
              "pools that spent most)")
@click.option("--ledger-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="read a MemoryStore's embedded SQLite ledger instead of PostgreSQL  [default: $DUCTO_LEDGER_FILE "
              "when no database URL is set]")
@pass_state
def report(state: CliState, output: Path | None, days: int, start: datetime | None, end: datetime | None, top: int,
           teams: tuple[str, ...], ledger_file: Path | None) -> None:
    """Render spend analytics (daily spend, by model, top users, team members) as one HTML page."""
    from ..ledger.queries import LedgerQueries
    from ..report import gather, render_html, window

    settings = state.settings()
    source = LedgerQueries(_ledger(state, ledger_file), settings.namespace)
    first, stop = window(days, start.date() if start else None, end.date() if end else None)
    data = gather(source, settings.namespace, first, stop, top=top, team_ids=teams, team_name=source.team_name)
    if state.json:
        emit(state, data.model_dump(mode="json"), lambda out: None)
        return
    page = render_html(data)
    if output is None:
        click.echo(page, nl=False)
        return
    output.write_text(page, encoding="utf-8")
    click.echo(f"wrote {output} ({len(page) // 1024 + 1} KiB): {data.stats.total_credits_consumed:,} credits spent "
               f"by {data.stats.active_users} users, {len(data.by_model)} models, {len(data.teams)} teams",
               err=False)
