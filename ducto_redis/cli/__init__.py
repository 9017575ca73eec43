"""The ``ducto-redis`` command (click + rich): one module per command group, registered on the root
group of :mod:`ducto_redis.cli.app` (``docs/cli.md`` says how to add one)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

import click

from ..config import read_pricing_file as load_pricing_file  # the one loader, by its old name here
from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode

COMMAND_MODULES = ("accounts", "ledger", "pricing", "report", "service", "completion")
"""Modules of this package whose import registers their commands on :data:`cli`."""

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ducto-redis`` with ``argv`` (default: the command line); returns its exit code.

    Failures print one line on stderr (``--debug``: the traceback) and exit with their code.
    """
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="ducto-redis",
                      standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "ducto-redis"
        click.echo(f"ducto-redis: {exc.format_message()} (see `{command} --help`)", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:  # `ducto-redis ... | head`: the reader has gone, nothing to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except click.Abort:
        click.echo("ducto-redis: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    return rv if isinstance(rv, int) else 0


__all__ = ["COMMAND_MODULES", "CliError", "CliState", "ExitCode", "cli", "load_pricing_file", "main", "pass_state"]

if __name__ == "__main__":  # pragma: no cover - `python -m ducto_redis.cli` runs __main__.py
    sys.exit(main())
