"""The service's HTTP plumbing, kept lean for the hot endpoints (``/v1/charge``, ``/v1/authorize``).

With one uvicorn worker saturated, the CPU a request costs decides the requests per second
(bench/service_cpu.py measures it). Nothing here changes what is answered, only what it costs:

- :class:`ServiceApp` is Starlette, but a request to a route with an exact path goes straight to
  that route's handler (the same handler, given the same :class:`~starlette.requests.Request`)
  instead of through the middleware stack and the router's walk over every route's pattern;
  templated paths, 404, 405, lifespan and an app with middleware added are Starlette's;
- :class:`HeaderMap` reads a request's headers from one dict built once, not a scan per lookup;
- :func:`read_body` reads the body from ``receive`` without Starlette's stream generator;
- :class:`RawResponse` / :func:`json_response` encode header names once (module constants) and
  :func:`flat_json` writes a result of strings, integers, booleans and None without ``json.dumps``'
  encoder setup, to the same text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Lifespan, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]
RawHeaders = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
_NAMES: dict[str, bytes] = {}  # header name -> its lowercase bytes, filled as names are first used


def header_name(name: str) -> bytes:
    """``name`` as a response header's raw name (lowercase latin-1), computed once per name."""
    raw = _NAMES.get(name)
    if raw is None:
        raw = _NAMES[name] = name.lower().encode("latin-1")
    return raw


class ServiceApp(Starlette):
    """Starlette whose exact-path routes skip the middleware stack and the router (see the module
    docstring); anything else, and everything once middleware is added, goes through Starlette."""

    def __init__(self, routes: Sequence[Route], lifespan: Lifespan[Any] | None = None) -> None:
        super().__init__(routes=list(routes), lifespan=lifespan)
        self.exact: dict[str, tuple[frozenset[str], Handler]] = {
            r.path: (frozenset(r.methods or ()), r.endpoint) for r in routes if "{" not in r.path}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.user_middleware:
            hit = self.exact.get(scope["path"])
            if hit is not None and scope["method"] in hit[0]:
                scope["app"] = self
                response = await hit[1](Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class HeaderMap:
    """A request's headers by name, any case (the first of a repeated header, as Starlette's
    ``Headers.get``), each value decoded when read."""

    __slots__ = ("_raw",)

    def __init__(self, scope: Scope) -> None:
        self._raw: dict[bytes, bytes] = dict(reversed(scope["headers"]))

    def get(self, name: str) -> str | None:
        """The header's value, or None when the request has none."""
        value = self._raw.get(name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")


async def read_body(request: Request) -> bytes:
    """The request's whole body (:class:`ClientDisconnect` when the client went away first)."""
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if not chunks:
                return body
            chunks.append(body)
            return b"".join(chunks)
        chunks.append(body)


class RawResponse(Response):
    """A response built from encoded headers (a ``Content-Length`` is added)."""

    def __init__(self, body: bytes, status: int, headers: RawHeaders) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        headers.append((b"content-length", str(len(body)).encode()))
        self.raw_headers = headers


def encode_headers(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    """``(name, value)`` pairs as raw headers."""
    return [(header_name(k), v.encode("latin-1")) for k, v in headers]


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> RawResponse:
    """A JSON response (compact, ``json.dumps``)."""
    raw = encode_headers(headers.items()) if headers else []
    raw.append(JSON_TYPE)
    return RawResponse(json.dumps(body, separators=(",", ":")).encode(), status, raw)


_KEYS: dict[str, str] = {}  # a field name -> its JSON key and colon


def flat_json(data: Mapping[str, Any]) -> str | None:
    """``json.dumps(data, separators=(",", ":"))`` when every value is a str, int, bool or None
    (else None: use ``json.dumps``). Same text, a third of the cost for a result of ten fields."""
    parts = []
    for key, value in data.items():
        k = _KEYS.get(key)
        if k is None:
            k = _KEYS[key] = encode_basestring_ascii(key) + ":"
        kind = type(value)
        if kind is str:
            parts.append(k + encode_basestring_ascii(value))
        elif kind is int:
            parts.append(k + int.__repr__(value))
        elif value is None:
            parts.append(k + "null")
        elif kind is bool:
            parts.append(k + ("true" if value else "false"))
        else:
            return None
    return "{" + ",".join(parts) + "}"


_PLAIN: dict[type[BaseModel], bool] = {}


def plain_fields(model: BaseModel) -> dict[str, Any] | None:
    """The model's ``__dict__`` when it is exactly what ``model_dump()`` gives (no computed,
    excluded or extra fields: every result model of the store), else None."""
    cls = type(model)
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _PLAIN[cls] = (not cls.model_computed_fields and cls.model_config.get("extra") != "allow"
                               and not any(f.exclude for f in cls.model_fields.values()))
    return model.__dict__ if plain else None


def model_json(model: BaseModel) -> tuple[Mapping[str, Any], str]:
    """``model.model_dump(mode="json")`` and its compact JSON text (:func:`flat_json` when it can)."""
    data = plain_fields(model)
    text = None if data is None else flat_json(data)
    if data is None or text is None:  # a nested or typed field: pydantic's JSON mode
        data = model.model_dump(mode="json")
        text = json.dumps(data, separators=(",", ":"))
    return data, text
