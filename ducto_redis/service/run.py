"""Running the service: ``ducto-redis serve`` (uvicorn; several workers share the port)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from ..errors import ConfigError
from ..routes import RouteTable
from ..settings import Settings
from .app import LOOPBACK

log = logging.getLogger("ducto_redis.service")


def listen_address(settings: Settings, host: str) -> tuple[str, str | None]:
    """Where to listen, and what to tell the operator: without service tokens, loopback only."""
    if settings.bearer_tokens() or host in LOOPBACK:
        return host, None
    return "127.0.0.1", (f"no service tokens (DUCTO_SERVICE_TOKENS): listening on 127.0.0.1 only, not {host}; "
                         "set tokens to serve other hosts")


def serve(
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    routes_file: str | None = None,
) -> None:
    """Run the decision service until interrupted. Arguments override the settings; the workers
    (separate processes) read the same settings from the environment."""
    settings = settings or Settings()
    if routes_file:
        os.environ["DUCTO_ROUTES_FILE"] = routes_file
        settings = settings.model_copy(update={"routes_file": routes_file})
    if settings.routes_file:
        RouteTable.from_file(settings.routes_file)  # a bad file stops here, in one line
    bind, warning = listen_address(settings, host or settings.service_host)
    if warning:
        log.warning(warning)
    for name, value in settings.model_dump().items():  # the workers build their app from the environment
        if value is not None:
            os.environ[f"DUCTO_{name.upper()}"] = str(value)
    n = workers or settings.service_workers
    made = None
    if n > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # every scrape sums all workers
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ducto-metrics-")
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the [service] extra is missing
        raise ConfigError(f"ducto-redis serve needs the [service] extra: {exc}") from None
    try:
        from .nodelay import NoDelayHTTP

        uvicorn.run("ducto_redis.service.app:create_app", factory=True, host=bind,
                    port=settings.service_port if port is None else port, workers=n, log_level="warning",
                    access_log=False, http=NoDelayHTTP)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
