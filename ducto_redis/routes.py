"""The route table: which requests cost what, for ``CreditMiddleware`` and the service's forward-auth.

A route is a method and a path pattern with a price:

- ``cost: N`` charges N credits when the request is admitted (``cost: 0`` applies only the
  account's rate limit);
- ``hold: N`` holds an estimate of N credits; the actual cost is settled later (by the upstream
  through ``POST /v1/settle``, or by the middleware from the response), the rest of the hold
  returning to the account. A hold that is never settled expires and costs nothing.

``quantity: tokens`` makes the decision also check the account's quantity limits (e.g. tokens per
minute, ``set_quantity_limit``) against the request's estimate: the ``quantity_header`` request
header (e.g. ``X-Token-Estimate``) when it holds a whole number, else ``quantity_estimate``; on a
hold route the settlement corrects it with the actual quantity.

Path patterns: ``/v1/models`` (exact), ``/v1/chat/{model}`` (a template: ``{name}`` is one path
segment, available to ``model: "{model}"``), ``/files/*`` (a prefix: ``/files`` and everything
below it). Exact paths are looked up first, then templates and prefixes in the order listed.
``method`` is one method, several separated by commas, or ``*`` (the default) for any.

A request no route matches is **free** (no account needed, nothing charged) unless the table says
``unlisted: deny`` (403) or ``unlisted: <cost>``. Paths are compared after percent-decoding, with
repeated slashes collapsed and dot segments resolved, so ``/v1//chat/../chat`` cannot dodge a price.

A routes file (JSON; YAML when PyYAML is installed)::

    {"unlisted": "free",
     "routes": [
       {"method": "POST", "path": "/v1/chat/{model}", "hold": 2000, "model": "{model}"},
       {"method": "GET",  "path": "/v1/search", "cost": 1},
       {"path": "/static/*", "cost": 0}]}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config_files import load_mapping
from .errors import ConfigError

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHOD = re.compile(r"^[A-Z]+$")


class RouteSpec(BaseModel):
    """One priced route (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=1024)
    method: str = "*"
    cost: int | None = Field(default=None, ge=0, le=2**53 - 1)
    hold: int | None = Field(default=None, ge=1, le=2**53 - 1)
    operation_type: str = Field(default="http", min_length=1, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    quantity: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    quantity_estimate: int = Field(default=0, ge=0, le=2**53 - 1)
    quantity_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,128}$")

    @model_validator(mode="after")
    def _check(self) -> RouteSpec:
        if (self.cost is None) == (self.hold is None):
            raise ValueError("give exactly one of cost (a fixed price) and hold (an estimate settled later)")
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        if "*" in self.path and not self.path.endswith("/*"):
            raise ValueError("path: '*' is allowed only as the last segment ('/prefix/*')")
        if self.method != "*" and not all(_METHOD.match(m.strip()) for m in self.method.upper().split(",")):
            raise ValueError("method must be '*', or methods like 'GET' or 'GET,POST'")
        if (self.quantity_estimate or self.quantity_header) and not self.quantity:
            raise ValueError("quantity_estimate / quantity_header need quantity (the limited quantity's name)")
        if self.quantity and self.cost == 0:
            raise ValueError("a quantity limit is checked by a charge or a hold: give cost >= 1 or hold")
        if self.model:
            for name in _PARAM.findall(self.model):
                if name not in _PARAM.findall(self.path):
                    raise ValueError(f"model refers to {{{name}}}, which the path does not have")
        return self

    @property
    def methods(self) -> frozenset[str] | None:
        """The methods the route applies to (None: any)."""
        if self.method == "*":
            return None
        return frozenset(m.strip() for m in self.method.upper().split(","))


class RoutesFile(BaseModel):
    """The routes file's shape."""

    model_config = ConfigDict(extra="forbid")

    unlisted: Literal["free", "deny"] | int = "free"
    routes: list[RouteSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request's route and the values of its path template's ``{name}`` segments."""

    route: RouteSpec
    params: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        """The route's model, its ``{name}`` references filled from the path."""
        m = self.route.model
        if not m or "{" not in m:
            return m or None
        return _PARAM.sub(lambda g: self.params.get(g.group(1), ""), m) or None

    def quantities(self, header: Callable[[str], str | None]) -> dict[str, int] | None:
        """The request's quantity estimate for the route's quantity limit: the ``quantity_header``
        request header when it holds a whole number, else ``quantity_estimate`` (None: no quantity)."""
        r = self.route
        if r.quantity is None:
            return None
        n = r.quantity_estimate
        if r.quantity_header:
            given = header(r.quantity_header)
            if given is not None and given.strip().isdigit() and len(given.strip()) <= 15:
                n = int(given)
        return {r.quantity: n}


def normalize_path(raw: str) -> str:
    """The path of a request target, as routes are matched: no query, percent-decoded, repeated
    slashes collapsed, ``.`` and ``..`` segments resolved (never above the root)."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path)
    if "//" not in path and "/." not in path:
        return path or "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    tail = "/" if path.endswith("/") and out else ""
    return "/" + "/".join(out) + tail


def _compile(path: str) -> re.Pattern[str]:
    if path.endswith("/*"):
        base = path[:-2]
        return re.compile(re.escape(base) + r"(?:/.*)?\Z", re.DOTALL)
    parts = _PARAM.split(path)  # literal, name, literal, name, ...
    rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(rx + r"\Z")


class RouteTable:
    """Matches a request (method, path) to its :class:`RouteSpec`; built once, read per request."""

    def __init__(self, routes: Sequence[RouteSpec | Mapping[str, Any]] = (), unlisted: str | int = "free") -> None:
        try:
            parsed = RoutesFile.model_validate({"unlisted": unlisted, "routes": list(routes)})
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None
        self.routes = parsed.routes
        self.unlisted = parsed.unlisted
        # each route with its methods (None: any), worked out once rather than per request
        self._exact: dict[str, list[tuple[frozenset[str] | None, RouteSpec]]] = {}
        self._patterns: list[tuple[re.Pattern[str], frozenset[str] | None, RouteSpec]] = []
        for r in self.routes:
            if "*" in r.path or "{" in r.path:
                self._patterns.append((_compile(r.path), r.methods, r))
            else:
                self._exact.setdefault(r.path, []).append((r.methods, r))
        self._unlisted_route: RouteSpec | None = None
        if isinstance(self.unlisted, int):
            self._unlisted_route = RouteSpec(path="/*", cost=self.unlisted, operation_type="http")

    @classmethod
    def from_costs(cls, costs: Mapping[str, int], default_cost: int | None = None) -> RouteTable:
        """A table of fixed costs by path (any method); ``default_cost`` prices unlisted paths
        (None: they are free)."""
        routes = [RouteSpec(path=p, cost=c) for p, c in costs.items()]
        return cls(routes, "free" if default_cost is None else default_cost)

    @classmethod
    def from_file(cls, path: str | Path) -> RouteTable:
        """Read a routes file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is installed."""
        data = load_mapping(path, "routes file")
        try:
            parsed = RoutesFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_first_error(exc)}") from None
        return cls(parsed.routes, parsed.unlisted)

    @property
    def denies_unlisted(self) -> bool:
        """Whether a request no route matches is refused (``unlisted: deny``)."""
        return self.unlisted == "deny"

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The route of a request (the first that matches), or the unlisted price, or None (free or denied)."""
        path = normalize_path(raw_path)
        method = method.upper()
        for ms, r in self._exact.get(path, ()):
            if ms is None or method in ms:
                return RouteMatch(r)
        for rx, ms, r in self._patterns:
            m = rx.match(path)
            if m is not None and (ms is None or method in ms):
                return RouteMatch(r, m.groupdict())
        if self._unlisted_route is not None:
            return RouteMatch(self._unlisted_route)
        return None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "routes"
    return f"{where}: {e['msg']}"
