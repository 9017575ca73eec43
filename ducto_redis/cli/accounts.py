"""``ducto-redis demo`` and ``ducto-redis balance``."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from .app import CliState, cli, pass_state
from .output import emit, table


@cli.command()
@click.option("--redis", "on_redis", is_flag=True, help="run it on the configured Redis instead of the embedded store")
@pass_state
def demo(state: CliState, on_redis: bool) -> None:
    """Run the seed scenarios (spend caps, team pools, a priced call) on the embedded store."""
    from ..demo import run_demo
    from ..memory import MemoryStore

    settings = state.settings()
    store: Any = (state.store(namespace=settings.namespace + "-demo") if on_redis
                  else MemoryStore(settings.namespace))
    run_demo(store, echo=click.echo)


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
