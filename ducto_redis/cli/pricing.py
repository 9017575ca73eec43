"""``ducto-redis pricing validate | set | get``: the pricing config, from JSON (or YAML) files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..errors import ConfigError
from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode
from .output import emit

FILE = click.Path(dir_okay=False, path_type=Path)  # existence is checked on reading: exit 7, one line


def load_pricing_file(path: str | Path) -> dict[str, Any]:
    """A pricing config dict from a JSON file, or a YAML file (``.yaml``/``.yml``) when PyYAML is
    installed. Raises ``OSError`` when the file cannot be read and :class:`ConfigError` when it
    does not hold a config mapping."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(f"{path} is YAML, and reading YAML needs PyYAML (pip install pyyaml); "
                              "or give the same config as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (models, tools, ...), not {type(data).__name__}")
    return data


def _validated(path: Path) -> tuple[Any, dict[str, Any]]:
    """The validated config of a file and its summary; an invalid file exits 1."""
    from ..pricing import PricingEngine

    try:
        config = PricingEngine.from_dict(load_pricing_file(path)).pricing_schema()
    except ConfigError as exc:
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
