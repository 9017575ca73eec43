"""The root of the ``ducto-redis`` command (click): shared options, one settings object, errors.

How to add a command (see ``docs/cli.md``): write a module in this package whose functions are
decorated with ``@cli.command()`` (or ``@cli.group()``), take ``state: CliState`` through
``@pass_state``, and list the module in ``COMMAND_MODULES`` in ``ducto_redis/cli/__init__.py``.
Every command then accepts the shared options (``--redis-url``, ``--namespace``,
``--database-url``, ``--ledger-schema``, ``--json``, ``--debug``, ``--log-level``, ``-v``) before or
after its name, gets logging configured, and has its failures turned into one-line errors with
their exit codes (:mod:`ducto_redis.cli.errors`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from .. import __version__
from ..settings import Settings
from .errors import CliError, ExitCode, to_cli_error

if TYPE_CHECKING:
    from ..store import RedisStore

F = TypeVar("F", bound=Callable[..., Any])

SETTINGS_OPTIONS = {  # option → Settings field; the values come from Settings (DUCTO_* variables) unless given
    "redis_url": "the Redis  [default: $DUCTO_REDIS_URL or redis://127.0.0.1:6379/0]",
    "namespace": "key prefix  [default: $DUCTO_NAMESPACE or ducto]",
    "database_url": "the PostgreSQL ledger  [default: $DUCTO_DATABASE_URL]",
    "ledger_schema": "PostgreSQL schema of the ledger  [default: $DUCTO_LEDGER_SCHEMA or ducto]",
}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class CliState:
    """What the shared options said, wherever they were put; one per command line.

    ``overrides`` are :class:`~ducto_redis.settings.Settings` fields given as options: they win over
    the environment, which wins over the defaults (the one Settings model decides).
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    json: bool = False
    debug: bool = False
    verbosity: int = 0
    log_level: str | None = None

    @classmethod
    def of(cls, ctx: click.Context) -> CliState:
        """The state of this command line (kept on the root context)."""
        return ctx.find_root().ensure_object(cls)

    def settings(self) -> Settings:
        """The settings: options, then ``DUCTO_*`` variables, then defaults (malformed: exit 3)."""
        return Settings(**self.overrides)

    def store(self, namespace: str | None = None) -> RedisStore:
        """A :class:`RedisStore` on the configured Redis (a malformed URL exits with code 3)."""
        from ..connect import sync_client
        from ..store import RedisStore

        settings = self.settings()
        try:
            client = sync_client(settings.redis_url)
        except ValueError as exc:
            raise CliError(ExitCode.CONFIG, f"malformed Redis URL {settings.redis_url!r}: {exc}") from None
        overrides = {"namespace": namespace} if namespace else {}
        return RedisStore(client, settings, **overrides)

    def database_url(self) -> str:
        """The ledger's PostgreSQL URL (exit 5 when none is configured)."""
        url = self.settings().database_url
        if not url:
            raise CliError(ExitCode.DATABASE, "no database URL: set DUCTO_DATABASE_URL or pass --database-url")
        return url

    def log_level_for(self, default: int) -> int:
        """``--log-level`` if given, else the command's default lowered one step per ``-v``."""
        if self.log_level:
            return int(getattr(logging, self.log_level.upper()))
        return max(logging.DEBUG, default - 10 * self.verbosity)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    state = CliState.of(ctx)
    name = param.name or ""
    if name in SETTINGS_OPTIONS:
        if value is not None:
            state.overrides[name] = value
    elif name == "verbose":
        state.verbosity += int(value or 0)
    elif value:  # json, debug (flags only switch on), log_level
        setattr(state, name, value)
    return value


def shared_params() -> list[click.Parameter]:
    """Fresh copies of the options every command accepts (before or after its name)."""
    params: list[click.Parameter] = [
        click.Option([f"--{name.replace('_', '-')}"], default=None, help=text, callback=_remember,
                     expose_value=False)
        for name, text in SETTINGS_OPTIONS.items()
    ]
    params += [
        click.Option(["--json"], is_flag=True, default=False, callback=_remember, expose_value=False,
                     help="print the result as JSON (machine-readable)"),
        click.Option(["--debug"], is_flag=True, default=False, callback=_remember, expose_value=False,
                     help="show the traceback of a failure"),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS, case_sensitive=False), default=None,
                     callback=_remember, expose_value=False, help="log level on stderr"),
        click.Option(["-v", "--verbose"], count=True, callback=_remember, expose_value=False,
                     help="more log lines (-v info, -vv debug)"),
    ]
    return params


def pass_state(f: F) -> F:
    """Give the command its :class:`CliState` as first argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(CliState.of(click.get_current_context()), *args, **kwargs)

    return cast(F, wrapper)


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """While the block runs, log records of ``ducto_redis.*`` at ``level`` and above go to stderr
    (through rich on a terminal, as plain timestamped lines otherwise)."""
    import sys

    logger = logging.getLogger("ducto_redis")
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class DuctoCommand(click.Command):
    """A command whose failures become one line and an exit code; it configures logging first.

    ``default_log_level``: what the command logs without ``-v``/``--log-level`` (warnings; the
    long-running flusher says more).
    """

    def __init__(self, *args: Any, default_log_level: int = logging.WARNING, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_log_level = default_log_level

    def invoke(self, ctx: click.Context) -> Any:
        state = CliState.of(ctx)
        try:
            with logging_to_stderr(state.log_level_for(self.default_log_level)):
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if state.debug:
                raise
            redis_url = database = ""
            try:
                settings = state.settings()
                redis_url, database = settings.redis_url, f"schema {settings.ledger_schema!r}"
            except Exception:  # the settings themselves are what failed
                pass
            raise to_cli_error(exc, redis_url, database or "the database") from exc


class DuctoGroup(click.Group):
    """A group whose commands (and subgroups) all take the shared options, wherever they are put."""

    command_class = DuctoCommand

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        have = {p.name for p in cmd.params}
        cmd.params.extend(p for p in shared_params() if p.name not in have)
        super().add_command(cmd, name)


DuctoGroup.group_class = DuctoGroup


@click.group(cls=DuctoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ducto-redis",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """ducto-redis: credits, spend caps and team pools decided atomically in Redis.

    Settings come from the options, else the DUCTO_* environment variables, else the defaults.
    Exit codes: 0 ok, 1 the answer is no (drift, restore refused, invalid pricing), 2 usage, 3 malformed
    setting, 4 Redis unreachable, 5 database URL missing/refused, 6 PostgreSQL unreachable, 7 file
    missing, 8 unexpected, 9 not done yet (entries left pending, accounts not flushed) (see docs/cli.md).
    """


cli.params.extend(shared_params())
