"""``ducto-redis pricing validate | set | get``: the pricing config, from JSON (or YAML) files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..config import read_pricing_file
from ..errors import ConfigError
from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode
from .output import emit

FILE = click.Path(dir_okay=False, path_type=Path)  # existence is checked on reading: exit 7, one line


def _validated(path: Path) -> tuple[Any, dict[str, Any]]:
    """The validated config of a pricing file (read by the one loader,
    :func:`ducto_redis.config.read_pricing_file`, with ducto's messages) and its summary; a file that
    cannot be read exits 7, an invalid one 1."""
    from ..pricing import PricingEngine

    try:
        config = PricingEngine.from_dict(read_pricing_file(path)).pricing_schema()
    except ConfigError as exc:
        if isinstance(exc.__cause__, OSError):
            raise CliError(ExitCode.NO_FILE, str(exc)) from None
        raise CliError(ExitCode.NO, f"invalid pricing config {path}: {exc}") from None
    summary = {"models": len(config.models), "tools": len(config.tools), "fixed_jobs": len(config.fixed),
               "plans": len(config.plans or {}), "min_balance": config.min_balance}
    return config, summary


def _summary_line(s: dict[str, Any]) -> str:
    return (f"{s['models']} models, {s['tools']} tools, {s['fixed_jobs']} fixed jobs, {s['plans']} plans, "
            f"min_balance {s['min_balance']}")


@cli.group()
def pricing() -> None:
    """Validate, publish or print the pricing config (JSON; YAML with PyYAML)."""


@pricing.command()
@click.argument("file", type=FILE)
@pass_state
def validate(state: CliState, file: Path) -> None:
    """Check every formula of a pricing file; exit 1 if one is invalid."""
    _, summary = _validated(file)
    emit(state, {"valid": True, **summary}, lambda out: out.print(f"valid: {_summary_line(summary)}"))


@pricing.command("set")
@click.argument("file", type=FILE)
@click.option("--label", default=None, help="a name for this version, e.g. 2026-q4")
@pass_state
def set_(state: CliState, file: Path, label: str | None) -> None:
    """Validate a pricing file and publish it as the next active version."""
    config, summary = _validated(file)
    store = state.store()
    pid = store.set_active_pricing(config, label=label)
    active = store.get_active_pricing()
    version = active.version if active else None

    def human(out: Console) -> None:
        out.print(f"active pricing {pid} version {version if version is not None else '?'}: {_summary_line(summary)}")

    emit(state, {"id": pid, "version": version, **summary}, human)


@pricing.command()
@pass_state
def get(state: CliState) -> None:
    """Print the active pricing config as JSON; exit 1 if none is published."""
    active = state.store().get_active_pricing()
    if active is None:
        raise CliError(ExitCode.NO, "no active pricing config")
    click.echo(json.dumps(active.model_dump(mode="json", exclude_none=True), indent=2))
