"""The route table shared by the middleware and forward-auth: patterns, order, normalization, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ducto_redis.errors import ConfigError
from ducto_redis.routes import RouteTable, normalize_path

TABLE = RouteTable([
    {"method": "GET", "path": "/v1/models", "cost": 0},
    {"method": "POST,PUT", "path": "/v1/chat/{model}", "hold": 100, "model": "{model}"},
    {"path": "/v1/chat/special", "cost": 9},
    {"path": "/files/*", "cost": 2},
])


@pytest.mark.parametrize(("method", "path", "price"), [
    ("GET", "/v1/models", ("cost", 0)),
    ("POST", "/v1/models", None),                          # method not listed: unlisted
    ("POST", "/v1/chat/gpt-4o", ("hold", 100)),
    ("put", "/v1/chat/gpt-4o?stream=1", ("hold", 100)),   # query ignored, method case-insensitive
    ("POST", "/v1/chat/special", ("cost", 9)),            # exact paths before templates
    ("POST", "/v1/chat/a/b", None),                        # a template segment is one segment
    ("GET", "/files", ("cost", 2)),
    ("GET", "/files/a/b", ("cost", 2)),
    ("GET", "/filesystem", None),
    ("GET", "/v1//models", ("cost", 0)),                   # normalized before matching
    ("GET", "/x/../v1/models", ("cost", 0)),
    ("GET", "/v1/%6Dodels", ("cost", 0)),
])
def test_match(method: str, path: str, price: tuple[str, int] | None) -> None:
    m = TABLE.match(method, path)
    if price is None:
        assert m is None
    else:
        kind, amount = price
        assert getattr(m.route if m else None, kind) == amount


def test_template_params_fill_the_model() -> None:
    m = TABLE.match("POST", "/v1/chat/gpt-4o")
    assert m is not None and m.model == "gpt-4o"


@pytest.mark.parametrize(("raw", "path"), [
    ("/", "/"), ("", "/"), ("/a//b/", "/a/b/"), ("/a/./b", "/a/b"), ("/../../etc", "/etc"), ("/a%2F..%2Fb", "/b"),
])
def test_normalize_path(raw: str, path: str) -> None:
    assert normalize_path(raw) == path


def test_unlisted_can_be_priced_or_denied() -> None:
    priced = RouteTable([], unlisted=3).match("GET", "/anything")
    assert priced is not None and priced.route.cost == 3
    denied = RouteTable([], unlisted="deny")
    assert denied.match("GET", "/anything") is None and denied.denies_unlisted


@pytest.mark.parametrize(("route", "word"), [
    ({"path": "/a"}, "exactly one of cost"),
    ({"path": "/a", "cost": 1, "hold": 2}, "exactly one of cost"),
    ({"path": "a", "cost": 1}, "start with '/'"),
    ({"path": "/a/*/b", "cost": 1}, "last segment"),
    ({"path": "/a", "cost": -1}, "routes.0.cost"),
    ({"path": "/a", "cost": 1, "method": "G T"}, "method"),
    ({"path": "/a", "cost": 1, "model": "{m}"}, "{m}"),
    ({"path": "/a", "cost": 1, "price": 1}, "routes.0.price"),
])
def test_bad_routes_are_refused_naming_the_problem(route: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word.replace("{", r"\{").replace("*", r"\*")):
        RouteTable([route])


def test_routes_file_json_and_yaml(tmp_path: Path) -> None:
    data = {"unlisted": "free", "routes": [{"path": "/chat", "cost": 5}]}
    (tmp_path / "r.json").write_text(json.dumps(data))
    (tmp_path / "r.yaml").write_text("routes:\n  - path: /chat\n    cost: 5\n")
    for name in ("r.json", "r.yaml"):
        m = RouteTable.from_file(tmp_path / name).match("GET", "/chat")
        assert m is not None and m.route.cost == 5
    (tmp_path / "bad.json").write_text('{"routes": [{"path": "/chat"}]}')
    with pytest.raises(ConfigError, match=r"bad\.json"):
        RouteTable.from_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        RouteTable.from_file(tmp_path / "missing.json")
