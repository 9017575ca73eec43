"""``ducto-redis serve``: the HTTP decision service (JSON API, forward-auth, metrics); its logic is
:func:`ducto_redis.service.run.serve` (needs the ``[service]`` extra)."""

from __future__ import annotations

import click

from ..errors import ConfigError
from .app import CliState, cli, pass_state
from .errors import CliError, ExitCode, missing_extra


@cli.command()
@click.option("--host", default=None, help="address to listen on  [default: $DUCTO_SERVICE_HOST or 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="port  [default: $DUCTO_SERVICE_PORT or 8080]")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="processes sharing the port  [default: $DUCTO_SERVICE_WORKERS or 1]")
@click.option("--routes", default=None, help="routes file of forward-auth (JSON, or YAML with PyYAML)  "
              "[default: $DUCTO_ROUTES_FILE]")
@pass_state
def serve(state: CliState, host: str | None, port: int | None, workers: int | None, routes: str | None) -> None:
    """Run the HTTP decision service (JSON API, forward-auth, metrics) until interrupted.

    Without service tokens (DUCTO_SERVICE_TOKENS) it listens on loopback only, and says so.
    """
    try:
        from ..service.run import serve as run_service
    except ImportError as exc:  # Starlette, uvicorn or prometheus_client is missing
        raise missing_extra("serve", "service", exc) from None
    try:
        run_service(state.settings(), host=host, port=port, workers=workers, routes_file=routes)
    except ConfigError as exc:  # a routes file that cannot be read exits 7, an invalid one 2
        code = ExitCode.NO_FILE if isinstance(exc.__cause__, OSError) else ExitCode.USAGE
        raise CliError(code, f"serve: {exc}") from None


__all__ = ["serve"]
