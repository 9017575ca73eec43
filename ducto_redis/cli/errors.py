"""What the ``ducto-redis`` command exits with, and how a failure becomes one line.

Every failure the command knows is turned into a :class:`CliError` with its own exit code and a
one-line message; ``--debug`` shows the traceback instead. The codes are documented in
``docs/cli.md``; keep the two in step.
"""

from __future__ import annotations

from enum import IntEnum

import click


class ExitCode(IntEnum):
    """The exit codes of ``ducto-redis`` (``docs/cli.md`` lists them)."""

    OK = 0
    NO = 1  # the answer is no: reconcile found drift, a pricing file is invalid, no active pricing
    USAGE = 2  # unknown command or option, a bad option value (flush --batch 0), a bad argument
    CONFIG = 3  # a malformed setting: the Redis URL, the namespace, ...; a missing extra (serve)
    REDIS_DOWN = 4  # Redis did not answer (connection refused, timeout, authentication)
    DATABASE = 5  # the database URL is missing or malformed, PostgreSQL refused it, or no ledger table
    POSTGRES_DOWN = 6  # PostgreSQL did not answer
    NO_FILE = 7  # an input file is missing or unreadable
    INTERNAL = 8  # anything else: a bug or an unforeseen failure (--debug shows the traceback)
    PENDING = 9  # not done yet: flush --once left entries pending elsewhere, reconcile found accounts not flushed
    INTERRUPTED = 130  # Ctrl-C


class CliError(click.ClickException):
    """A failure shown as one line on stderr, exiting with its :class:`ExitCode`."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        setattr(self, "exit_code", int(code))  # noqa: B010  (click declares it a class variable)

    def show(self, file: object = None) -> None:
        click.echo(f"ducto-redis: {self.format_message()}", err=True)


def missing_extra(what: str, extra: str, exc: ImportError) -> CliError:
    """The error of a command (or option) whose optional dependencies are not installed: exit 3."""
    return CliError(ExitCode.CONFIG, f"{what} needs the [{extra}] extra (pip install 'ducto-redis[{extra}]'): {exc}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _postgres_error(exc: BaseException, what: str) -> CliError | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - without psycopg no ledger command gets this far
        return None
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return CliError(ExitCode.DATABASE, f"{what} has no ledger table: run `ducto-redis migrate` first "
                        f"({exc.diag.message_primary or _one_line(exc)})")
    if isinstance(exc, psycopg.OperationalError):
        text = _one_line(exc)
        if "FATAL" in text:  # the server answered and refused: wrong database, role or password
            return CliError(ExitCode.DATABASE, f"PostgreSQL refused the database URL: {text}")
        return CliError(ExitCode.POSTGRES_DOWN, f"cannot reach PostgreSQL: {text}")
    if isinstance(exc, psycopg.ProgrammingError) and getattr(exc, "sqlstate", None) is None:
        return CliError(ExitCode.DATABASE, f"the database URL is malformed: {_one_line(exc)}")
    return None


def to_cli_error(exc: BaseException, redis_url: str = "", database: str = "the database") -> CliError:
    """The one-line error, with its exit code, for a failure of a command."""
    import pydantic
    import redis

    from ..errors import InvalidInputError

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return CliError(ExitCode.REDIS_DOWN, f"cannot reach Redis at {redis_url or 'the Redis URL'}: {_one_line(exc)}")
    if isinstance(exc, InvalidInputError):
        return CliError(ExitCode.USAGE, _one_line(exc))
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        return CliError(ExitCode.CONFIG, f"invalid setting: {problems}")
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return CliError(ExitCode.NO_FILE, f"cannot read {exc.filename}: {exc.strerror or _one_line(exc)}")
    found = _postgres_error(exc, database)
    if found is not None:
        return found
    return CliError(ExitCode.INTERNAL, f"{type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)")
