"""The HTTP decision service (``ducto-redis serve``): needs the ``[service]`` extra
(Starlette, uvicorn, prometheus_client). See ``ducto_redis.service.app`` and docs/service.md."""

from .app import create_app

__all__ = ["create_app"]
