"""``ducto-redis demo`` and ``ducto-redis balance``."""

from __future__ import annotations

import click
from rich.console import Console

from .app import CliState, cli, pass_state
from .output import emit, table


@cli.command()
@click.option("--redis", "on_redis", is_flag=True, help="run it on the configured Redis instead of the embedded store")
@pass_state
def demo(state: CliState, on_redis: bool) -> None:
    """Run the seed scenarios (spend caps, team pools, a priced call) on the embedded store, its ledger
    in a temporary SQLite file, then restart it from that file."""
    import tempfile
    from pathlib import Path

    from ..demo import run_demo
    from ..memory import MemoryStore

    settings = state.settings()
    if on_redis:
        run_demo(state.store(namespace=settings.namespace + "-demo"), echo=click.echo)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ledger = str(Path(tmp) / "ledger.sqlite")
        click.echo(f"ledger file: {ledger} (SQLite; MemoryStore(ledger_file=...) or DUCTO_LEDGER_FILE)")
        run_demo(MemoryStore(settings.namespace, ledger_file=ledger), echo=click.echo,
                 reopen=lambda: MemoryStore(settings.namespace, ledger_file=ledger))


@cli.command()
@click.argument("user_id")
@pass_state
def balance(state: CliState, user_id: str) -> None:
    """Print a user's balance, held and available credits."""
    b = state.store().get_balance(user_id)
    data = {**b.model_dump(), "available": b.available}

    def human(out: Console) -> None:
        out.print(table(f"balance of {b.user_id}", ("balance", "held", "available", "lifetime purchased"),
                        [(b.balance, b.held, b.available, b.lifetime_purchased)],
                        numeric=("balance", "held", "available", "lifetime purchased")))

    emit(state, data, human)
